import test from 'ava'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { cacheRoot } from '../src/cache.js'
import { tempDir } from './helpers.js'

const cli = resolve(import.meta.dirname, '..', 'dist', 'cli.js')

/** A cache root with a few parts in it, `bytes` per file. */
function fakeCache(root: string): void {
  for (const [folder, bytes] of [
    ['features/ab', 3000],
    ['encoders/whisper-base', 5000],
    ['torch-2.11.0/lib', 7000],
    ['transcripts/12', 11],
    ['whisper/whisper-tiny.en', 17],
    ['downloads/archive.zip.part', 19],
    ['elsewhere', 13],
  ] as const) {
    mkdirSync(join(root, folder), { recursive: true })
    writeFileSync(join(root, folder, 'f'), Buffer.alloc(bytes))
  }
}

function run(args: string[], xdg: string) {
  const env = { ...process.env, XDG_CACHE_HOME: xdg }
  delete env.EMOTION_PIPELINE_CACHE
  const r = spawnSync(process.execPath, [cli, 'cache', ...args], { encoding: 'utf8', env })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

test('the cache root honours EMOTION_PIPELINE_CACHE, then an absolute XDG_CACHE_HOME, then ~/.cache', (t) => {
  const saved = { ...process.env }
  try {
    delete process.env.EMOTION_PIPELINE_CACHE
    process.env.XDG_CACHE_HOME = '/xdg/cache'
    t.is(cacheRoot(), '/xdg/cache/emotion-pipeline')
    process.env.XDG_CACHE_HOME = 'relative/cache' // not absolute: ignored, as the XDG spec says
    t.regex(cacheRoot(), /\/\.cache\/emotion-pipeline$/)
    process.env.EMOTION_PIPELINE_CACHE = '/explicit'
    t.is(cacheRoot(), '/explicit')
  } finally {
    process.env = saved
  }
})

test('cache list shows each part with its size; clean --what removes only those parts', (t) => {
  const xdg = tempDir('ep-xdg-')
  const root = join(xdg, 'emotion-pipeline')
  fakeCache(root)
  const listed = run(['list', '--json'], xdg)
  t.is(listed.status, 0, listed.stderr)
  const list = JSON.parse(listed.stdout)
  t.is(list.root, root)
  const byPart = Object.fromEntries(list.entries.map((e: { part: string; bytes: number }) => [e.part, e.bytes]))
  t.deepEqual(byPart, { features: 3000, encoders: 5000, libtorch: 7000, transcripts: 11, whisper: 17, downloads: 19, other: 13 })
  t.is(list.bytes, 3000 + 5000 + 7000 + 11 + 17 + 19 + 13)
  t.regex(run(['list'], xdg).stdout, /features\s+0\.0 MB\s+.*features/)

  const cleaned = run(['clean', '--what', 'features,transcripts', '--json'], xdg)
  t.is(cleaned.status, 0, cleaned.stderr)
  t.is(JSON.parse(cleaned.stdout).bytes, 3011)
  t.false(existsSync(join(root, 'features')))
  t.false(existsSync(join(root, 'transcripts')))
  t.true(existsSync(join(root, 'encoders', 'whisper-base', 'f')) && existsSync(join(root, 'elsewhere')))
  // The text branch's Whisper is its own part: cleaning it keeps the encoders.
  t.is(run(['clean', '--what', 'whisper'], xdg).status, 0)
  t.false(existsSync(join(root, 'whisper')))
  t.true(existsSync(join(root, 'encoders', 'whisper-base', 'f')) && existsSync(join(root, 'downloads')))

  const bad = run(['clean', '--what', 'models'], xdg)
  t.is(bad.status, 1)
  t.regex(bad.stderr, /INVALID_OPTION.*--what.*'models' is not a part/)
  t.is(run(['clean'], xdg).status, 1)
  t.is(run(['frobnicate'], xdg).status, 2)
})
