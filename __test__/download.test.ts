// `emotion-pipeline download ravdess` against a local server on 127.0.0.1 that answers like Zenodo's
// records API and serves a small archive in the RAVDESS layout (real WAVs of actors 1 and 2, one clip
// filed as actor 21): unpacked and split into actors 1–20 / held out, licence and citation printed; a
// wrong MD5 is refused with nothing left behind; a download cut half-way resumes with a Range request.
import test from 'ava'
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join, resolve } from 'node:path'
import { haveWavs, NO_WAVS, runAsync, skip, tempDir } from './helpers.js'
import { FILE, makeArchive, zenodo } from './zenodo.js'

const cli = resolve(import.meta.dirname, '..', 'dist', 'cli.js')

/** The CLI, run without blocking the event loop (the server answers in this process). */
const runCli = (args: string[], env: NodeJS.ProcessEnv) => runAsync(process.execPath, [cli, ...args], { env: { ...process.env, ...env } })

test('download ravdess: checked, unpacked into actors 1–20 and held-out, licence and citation printed', async (t) => {
  if (!haveWavs) return skip(t, NO_WAVS)
  const archive = makeArchive()
  const server = await zenodo(archive.bytes)
  const cache = tempDir('ep-dl-cache-')
  const dir = tempDir('ep-dl-')
  try {
    const r = await runCli(['download', 'ravdess', '--dir', dir, '--json'], {
      EMOTION_PIPELINE_ZENODO_API: server.api,
      EMOTION_PIPELINE_CACHE: cache,
    })
    t.is(r.status, 0, r.stderr)
    const result = JSON.parse(r.stdout.trim().split('\n').pop()!)
    t.is(result.dir, join(dir, 'ravdess'))
    t.is(result.clips, archive.clips)
    t.is(result.heldOutClips, 1)
    t.deepEqual(
      readdirSync(join(dir, 'ravdess'))
        .filter((f) => f.startsWith('Actor_'))
        .sort(),
      ['Actor_01', 'Actor_02'],
    )
    t.deepEqual(
      readdirSync(join(dir, 'ravdess-heldout')).filter((f) => f.startsWith('Actor_')),
      ['Actor_21'],
    )
    t.regex(r.stderr, /CC BY-NC-SA 4\.0/)
    t.regex(r.stderr, /Livingstone SR, Russo FA \(2018\).*PLoS ONE 13\(5\): e0196391/)
    t.regex(r.stderr, /"type":"download"/, 'progress events as JSON lines on stderr')
    t.false(existsSync(join(cache, 'downloads', FILE)), 'the archive is removed once unpacked')
    // A second call finds the folders complete and fetches nothing.
    const again = await runCli(['download', 'ravdess', '--dir', dir, '--json'], {
      EMOTION_PIPELINE_ZENODO_API: server.api,
      EMOTION_PIPELINE_CACHE: cache,
    })
    t.is(again.status, 0, again.stderr)
    t.true(JSON.parse(again.stdout.trim().split('\n').pop()!).cached)
    t.is(server.ranges.length, 1)
  } finally {
    server.close()
  }
})

test('download ravdess: an archive whose MD5 is not the published one is refused and removed', async (t) => {
  if (!haveWavs) return skip(t, NO_WAVS)
  const archive = makeArchive()
  const server = await zenodo(archive.bytes, { md5: '0'.repeat(32) })
  const cache = tempDir('ep-dl-cache-')
  const dir = tempDir('ep-dl-')
  try {
    const r = await runCli(['download', 'ravdess', '--dir', dir], {
      EMOTION_PIPELINE_ZENODO_API: server.api,
      EMOTION_PIPELINE_CACHE: cache,
    })
    t.is(r.status, 1)
    t.regex(
      r.stderr,
      /error \[DOWNLOAD\]: download of http:\/\/127\.0\.0\.1:\d+\/api\/records\/1188976\/files\/.*checksum mismatch: md5 [0-9a-f]{32}, the index says 0{32}/,
    )
    t.false(existsSync(join(dir, 'ravdess')))
    t.deepEqual(readdirSync(join(cache, 'downloads')), [], 'neither the file nor its partial download is kept')
  } finally {
    server.close()
  }
})

test('download ravdess: a download cut half-way resumes where it stopped (HTTP Range)', async (t) => {
  if (!haveWavs) return skip(t, NO_WAVS)
  const archive = makeArchive()
  const half = Math.floor(archive.bytes.length / 2)
  const server = await zenodo(archive.bytes, { cutAt: half })
  const cache = tempDir('ep-dl-cache-')
  const dir = tempDir('ep-dl-')
  const env = { EMOTION_PIPELINE_ZENODO_API: server.api, EMOTION_PIPELINE_CACHE: cache }
  try {
    const first = await runCli(['download', 'ravdess', '--dir', dir], env)
    t.is(first.status, 1)
    t.regex(first.stderr, /error \[DOWNLOAD\].*bytes kept in .*\.part: the same command resumes/)
    const kept = readFileSync(join(cache, 'downloads', `${FILE}.part`)).length
    t.true(kept > 0 && kept <= half, `${kept} bytes kept of the ${half} sent`)
    const second = await runCli(['download', 'ravdess', '--dir', dir, '--json'], env)
    t.is(second.status, 0, second.stderr)
    t.deepEqual(server.ranges, [undefined, `bytes=${kept}-`])
    t.regex(second.stderr, new RegExp(`resumed the download at ${(kept / 1e6).toFixed(1)} MB`))
    t.is(JSON.parse(second.stdout.trim().split('\n').pop()!).clips, archive.clips)
  } finally {
    server.close()
  }
})

test('download ravdess: a server that ignores the range is read from the start, and no resume is claimed', async (t) => {
  if (!haveWavs) return skip(t, NO_WAVS)
  const archive = makeArchive()
  const server = await zenodo(archive.bytes, { cutAt: Math.floor(archive.bytes.length / 2), ignoreRange: true })
  const cache = tempDir('ep-dl-cache-')
  const dir = tempDir('ep-dl-')
  const env = { EMOTION_PIPELINE_ZENODO_API: server.api, EMOTION_PIPELINE_CACHE: cache }
  try {
    t.is((await runCli(['download', 'ravdess', '--dir', dir], env)).status, 1)
    const second = await runCli(['download', 'ravdess', '--dir', dir, '--json'], env)
    t.is(second.status, 0, second.stderr)
    t.true(server.ranges[1]?.startsWith('bytes='), 'the second request asked for a range')
    t.notRegex(second.stderr, /resumed the download/)
    t.is(JSON.parse(second.stdout.trim().split('\n').pop()!).resumedFrom, 0)
  } finally {
    server.close()
  }
})

test('download ravdess never replaces a folder it did not make', async (t) => {
  const dir = tempDir('ep-dl-mine-')
  mkdirSync(join(dir, 'ravdess'))
  writeFileSync(join(dir, 'ravdess', 'my-notes.txt'), 'keep me')
  const r = await runCli(['download', 'ravdess', '--dir', dir], { EMOTION_PIPELINE_ZENODO_API: 'http://127.0.0.1:9/api' })
  t.is(r.status, 1)
  t.regex(r.stderr, /INVALID_OPTION.*`dir`.*ravdess exists and was not made by `download ravdess`: left untouched/)
  t.is(readFileSync(join(dir, 'ravdess', 'my-notes.txt'), 'utf8'), 'keep me')
})

test('a download folder in use by another live process is refused by name, not appended to', async (t) => {
  const cache = tempDir('ep-dl-cache-')
  mkdirSync(join(cache, 'downloads'))
  // This test process stands for another installer holding the folder.
  writeFileSync(join(cache, 'downloads', '.lock'), JSON.stringify({ host: hostname(), pid: process.pid, startedAt: 'now' }))
  const archive = haveWavs ? makeArchive() : { bytes: Buffer.from('x') }
  const server = await zenodo(archive.bytes)
  try {
    const r = await runCli(['download', 'ravdess', '--dir', tempDir('ep-dl-')], {
      EMOTION_PIPELINE_ZENODO_API: server.api,
      EMOTION_PIPELINE_CACHE: cache,
    })
    t.is(r.status, 1)
    t.regex(r.stderr, /error \[IO\]: .*downloads is in use by another download \(pid \d+/)
    t.deepEqual(server.ranges, [], 'nothing was fetched')
  } finally {
    server.close()
  }
})
