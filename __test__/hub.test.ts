// Encoders from the Hugging Face Hub, against a local server that answers as the Hub does
// (hub-server.ts): the Hugging Face cache layout, both weight layouts, HF_HUB_OFFLINE, resume after a
// cut transfer, refusal of a corrupted blob, and a model that records its Hub encoder by commit.
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { type EmotionPipelineError, extractEmbeddings, installedEncoderDir, loadModel, trainPipeline } from '../src/index.js'
import { isEncoderInstalled } from '../src/encoder-install.js'
import { hubCacheDir } from '../src/hub.js'
import { haveRavdess, listAudio, NO_DATA, ravdessDir, referencePython, runAsync, skip, tempDir } from './helpers.js'
import { startHubServer, type HubServer } from './hub-server.js'

const python = referencePython()
const NO_PYTHON = 'no Python with torch 2.11 to write the Hugging Face layout fixtures: skipped'
const COMMIT = 'a'.repeat(40)
const OTHER_COMMIT = 'b'.repeat(40)

/** The files of a Hugging Face layout folder written by the fixture script. */
function hfFolder(args: string[]): Record<string, Buffer> {
  const out = join(tempDir('ep-hf-'), 'repo')
  execFileSync(python!, [resolve(import.meta.dirname, 'fixtures', 'whisper_hf.py'), out, ...args])
  return Object.fromEntries(readdirSync(out).map((f) => [f, readFileSync(join(out, f))]))
}

let server: HubServer | undefined
let clipFiles: string[] = []
const repos: Record<string, { commit: string; files: Record<string, Buffer> }> = {}

test.before(async () => {
  if (!python || !haveRavdess) return
  clipFiles = listAudio(join(ravdessDir, 'Actor_05')).slice(0, 2)
  Object.assign(repos, {
    'test-org/whisper-random': { commit: COMMIT, files: hfFolder(['--random', '80']) },
    'test-org/whisper-random-sharded': { commit: OTHER_COMMIT, files: hfFolder(['--random', '80', '--shards', '3']) },
    'test-org/pickles-only': { commit: COMMIT, files: hfFolder(['--random', '80', '--pickle-only']) },
  })
  if (isEncoderInstalled('whisper-base'))
    repos['test-org/whisper-base-hf'] = {
      commit: COMMIT,
      files: hfFolder(['--from', join(installedEncoderDir('whisper-base'), 'model.bin')]),
    }
  if (isEncoderInstalled('whisper-tiny.en'))
    repos['test-org/faster-whisper-tiny.en'] = {
      commit: COMMIT,
      files: { 'model.bin': readFileSync(join(installedEncoderDir('whisper-tiny.en'), 'model.bin')), 'config.json': Buffer.from('{}') },
    }
  server = await startHubServer(repos)
})

test.after.always(async () => server?.close())

/** A fresh Hugging Face cache pointed at the local server for this test. */
function useHub(env: Record<string, string | undefined> = {}): string {
  const cache = tempDir('ep-hf-cache-')
  Object.assign(process.env, { HF_ENDPOINT: server!.url, HF_HUB_CACHE: cache, HF_HUB_OFFLINE: '', ...env })
  return cache
}

const fp32 = { precision: 'fp32', device: 'cpu', strict: true } as const

test.serial('a Hub repository in the Hugging Face layout lands in the HF cache layout and gives the CTranslate2 states', async (t) => {
  if (!server) return skip(t, python ? NO_DATA : NO_PYTHON)
  if (!isEncoderInstalled('whisper-base')) return skip(t, 'whisper-base is not installed: skipped')
  const cache = useHub()
  const hub = await extractEmbeddings(clipFiles, { ...fp32, encoder: 'test-org/whisper-base-hf' })
  const ct2 = await extractEmbeddings(clipFiles, { ...fp32, encoder: 'whisper-base' })
  let worst = 0
  for (let i = 0; i < ct2.data.length; i++) worst = Math.max(worst, Math.abs(ct2.data[i] - hub.data[i]))
  t.true(worst <= 1e-5, `largest difference ${worst}`)
  const repo = join(cache, 'models--test-org--whisper-base-hf')
  t.is(readFileSync(join(repo, 'refs', 'main'), 'utf8'), COMMIT)
  t.is(readlinkSync(join(repo, 'snapshots', COMMIT, 'model.safetensors')), join('..', '..', 'blobs', hub.modelSha256))
  t.true(existsSync(join(repo, 'snapshots', COMMIT, 'config.json')))
  // The second call downloads nothing (HEAD requests only).
  const before = server.requests.length
  await extractEmbeddings(clipFiles, { ...fp32, encoder: 'test-org/whisper-base-hf' })
  t.true(server.requests.slice(before).every((r) => r.method === 'HEAD'))
})

test.serial('a CTranslate2-layout repository (model.bin), and a sharded one, load from the Hub', async (t) => {
  if (!server) return skip(t, python ? NO_DATA : NO_PYTHON)
  useHub()
  if (isEncoderInstalled('whisper-tiny.en')) {
    const hub = await extractEmbeddings(clipFiles, { ...fp32, encoder: 'test-org/faster-whisper-tiny.en' })
    const installed = await extractEmbeddings(clipFiles, { ...fp32, encoder: 'whisper-tiny.en' })
    t.deepEqual(hub.data, installed.data)
    t.is(hub.modelSha256, installed.modelSha256)
  }
  const sharded = await extractEmbeddings(clipFiles, { ...fp32, encoder: `test-org/whisper-random-sharded@${OTHER_COMMIT}` })
  t.deepEqual(sharded.shape, [2, 3, 64])
  t.false(existsSync(join(hubCacheDir(), 'models--test-org--whisper-random-sharded', 'refs')), 'a commit revision writes no ref')
})

test.serial('download progress: extractEmbeddings reports the Hub files it fetches; install-models fetches a Hub repository', async (t) => {
  if (!python || !haveRavdess) return skip(t, !python ? NO_PYTHON : NO_DATA)
  useHub()
  const events: { stage: string; file?: string; done: number; total: number }[] = []
  await extractEmbeddings(clipFiles, { ...fp32, encoder: 'test-org/whisper-random', onProgress: (e) => events.push(e) })
  const downloads = events.filter((e) => e.stage === 'download')
  const last = downloads.filter((e) => e.file === 'model.safetensors').at(-1)
  t.truthy(last, JSON.stringify(downloads.slice(0, 3)))
  t.is(last!.done, repos['test-org/whisper-random'].files['model.safetensors'].length)
  t.is(last!.total, last!.done)
  t.true(
    events.some((e) => e.stage === 'embed'),
    'then the extraction stages',
  )
  // The installed CLI's install-models with a Hub name: into a fresh Hugging Face cache, JSON result.
  const cache = tempDir('ep-hf-cli-')
  const cli = resolve(import.meta.dirname, '..', 'dist', 'cli.js')
  // Asynchronously: the Hub-like server answers from this process.
  const r = await runAsync(process.execPath, [cli, 'install-models', '--encoder', 'test-org/whisper-random', '--json'], {
    env: { ...process.env, HF_HUB_CACHE: cache },
  })
  t.is(r.status, 0, r.stderr)
  const result = JSON.parse(r.stdout.trim().split('\n').pop()!)
  const dir = result.encoders['test-org/whisper-random']
  t.true(dir.startsWith(join(cache, 'models--test-org--whisper-random', 'snapshots', COMMIT)), dir)
  t.true(existsSync(join(dir, 'model.safetensors')))
})

test.serial('HF_HUB_OFFLINE: an empty cache is MODEL_NOT_FOUND naming the repository; a filled one works without requests', async (t) => {
  if (!server) return skip(t, python ? NO_DATA : NO_PYTHON)
  const cache = useHub({ HF_HUB_OFFLINE: '1' })
  const err = await t.throwsAsync(extractEmbeddings(clipFiles, { ...fp32, encoder: 'test-org/whisper-random' }))
  t.is((err as EmotionPipelineError).code, 'MODEL_NOT_FOUND')
  t.regex(err!.message, /test-org\/whisper-random@main.*HF_HUB_OFFLINE/)
  process.env.HF_HUB_OFFLINE = ''
  const online = await extractEmbeddings(clipFiles, { ...fp32, encoder: 'test-org/whisper-random' })
  process.env.HF_HUB_OFFLINE = '1'
  const before = server.requests.length
  const offline = await extractEmbeddings(clipFiles, { ...fp32, encoder: 'test-org/whisper-random' })
  t.is(server.requests.length, before, 'no request offline')
  t.deepEqual(offline.data, online.data)
  t.true(existsSync(join(cache, 'models--test-org--whisper-random', 'refs', 'main')))
})

test.serial('a transfer cut halfway resumes with a Range request; a corrupted blob is refused and not kept', async (t) => {
  if (!server) return skip(t, python ? NO_DATA : NO_PYTHON)
  const cache = useHub()
  const weights = repos['test-org/whisper-random'].files['model.safetensors']
  const sha = (await import('node:crypto')).createHash('sha256').update(weights).digest('hex')
  server.cutOnce.set(sha, weights.length >> 1)
  const cut = await t.throwsAsync(extractEmbeddings(clipFiles, { ...fp32, encoder: 'test-org/whisper-random' }))
  t.is((cut as EmotionPipelineError).code, 'DOWNLOAD')
  const blobs = join(cache, 'models--test-org--whisper-random', 'blobs')
  t.true(existsSync(join(blobs, `${sha}.incomplete`)))
  const resumed = await extractEmbeddings(clipFiles, { ...fp32, encoder: 'test-org/whisper-random' })
  t.deepEqual(resumed.shape, [2, 3, 64])
  // Resumed from what the cut transfer left on disk (up to the half the server sent), not from 0.
  const resumedAt = server.requests.filter((r) => r.path === `/cdn/${sha}` && r.range).map((r) => Number(/\d+/.exec(r.range!)![0]))
  t.true(resumedAt.length === 1 && resumedAt[0] > 0 && resumedAt[0] <= weights.length >> 1, JSON.stringify(resumedAt))

  useHub()
  server.corrupt.add(sha)
  const corrupt = await t.throwsAsync(extractEmbeddings(clipFiles, { ...fp32, encoder: 'test-org/whisper-random' }))
  server.corrupt.delete(sha)
  t.is((corrupt as EmotionPipelineError).code, 'DOWNLOAD')
  t.regex(corrupt!.message, /checksum mismatch/)
  t.false(existsSync(join(hubCacheDir(), 'models--test-org--whisper-random', 'blobs', sha)))
})

test.serial('a repository with only pickles, and an unknown repository, are MODEL_NOT_FOUND naming them', async (t) => {
  if (!server) return skip(t, python ? NO_DATA : NO_PYTHON)
  useHub()
  const pickles = await t.throwsAsync(extractEmbeddings(clipFiles, { ...fp32, encoder: 'test-org/pickles-only' }))
  t.is((pickles as EmotionPipelineError).code, 'MODEL_NOT_FOUND')
  t.regex(pickles!.message, /test-org\/pickles-only.*never unpickles/)
  const missing = await t.throwsAsync(extractEmbeddings(clipFiles, { ...fp32, encoder: 'test-org/nothing-here' }))
  t.is((missing as EmotionPipelineError).code, 'MODEL_NOT_FOUND')
  t.regex(missing!.message, /test-org\/nothing-here@main is not on the Hub.*RepositoryNotFound/)
})

test.serial('a model trained on a Hub encoder records it by commit and finds it again in another, empty cache', async (t) => {
  if (!server) return skip(t, python ? NO_DATA : NO_PYTHON)
  useHub()
  const out = tempDir('ep-run-hub-')
  await trainPipeline({
    data: ravdessDir,
    out,
    maxItems: 32,
    epochs: 1,
    device: 'cpu',
    models: ['probe'],
    encoder: 'test-org/whisper-random',
  })
  const dir = join(out, 'models', 'probe')
  const first = await loadModel(dir, { device: 'cpu' })
  t.like(first.meta.spec.inputs.embedding?.encoder, { source: 'hub', name: `test-org/whisper-random@${COMMIT}` })
  const predicted = await first.predictFiles(clipFiles)
  useHub() // another machine: an empty Hugging Face cache
  const again = await loadModel(dir, { device: 'cpu' })
  t.true(existsSync(join(hubCacheDir(), 'models--test-org--whisper-random', 'snapshots', COMMIT, 'model.safetensors')))
  t.deepEqual(
    (await again.predictFiles(clipFiles)).map((p) => p.probabilities),
    predicted.map((p) => p.probabilities),
  )
})

test.serial('a model trained on an encoder folder finds the same weights in the Hugging Face cache by SHA-256', async (t) => {
  if (!server) return skip(t, python ? NO_DATA : NO_PYTHON)
  const cache = useHub()
  await extractEmbeddings(clipFiles, { ...fp32, encoder: 'test-org/whisper-random' }) // fills the HF cache
  const folder = join(tempDir('ep-own-encoder-'), 'my-encoder')
  cpSync(join(cache, 'models--test-org--whisper-random', 'snapshots', COMMIT), folder, { recursive: true, dereference: true })
  const out = tempDir('ep-run-folder-')
  await trainPipeline({ data: ravdessDir, out, maxItems: 32, epochs: 1, device: 'cpu', models: ['probe'], encoder: folder })
  rmSync(folder, { recursive: true })
  const model = await loadModel(join(out, 'models', 'probe'), { device: 'cpu' })
  t.like(model.meta.spec.inputs.embedding?.encoder, { source: 'folder', name: 'my-encoder' })
  t.is(model.encoderDir, join(cache, 'models--test-org--whisper-random', 'snapshots', COMMIT))
  t.is((await model.predictFiles(clipFiles)).length, 2)
})
