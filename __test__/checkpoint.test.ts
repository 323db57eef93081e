// Checkpoint integrity. A process killed at each step of a checkpoint save (EMOTION_PIPELINE_CRASH_AT aborts it there, with no
// clean-up) must leave a checkpoint that resumes exactly: the resumed run's history equals an
// uninterrupted run's. A damaged part is refused by name, never silently mixed in.
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { EmotionPipelineError, extractMel, loadModel, train } from '../src/index.js'
import type { TrainOptions, TrainSet } from '../src/index.js'
import { skip, tempDir } from './helpers.js'

const dist = resolve(import.meta.dirname, '..', 'dist', 'index.js')

/** Deterministic synthetic features: 24 clips, 2 classes, [16 mels × 16 frames], class 1 brighter. */
function syntheticSet(): TrainSet {
  const n = 24
  const data = new Float32Array(n * 16 * 16)
  let seed = 12345
  for (let i = 0; i < data.length; i++) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31
    data[i] = seed / 2 ** 31 + (Math.floor(i / 256) % 2) * 0.5
  }
  return { mel: { data, shape: [n, 16, 16] }, labels: Array.from({ length: n }, (_, i) => i % 2) }
}

const options = (checkpointDir: string): Omit<TrainOptions, 'train'> => ({
  labels: ['a', 'b'],
  epochs: 3,
  batchSize: 4,
  accumulation: 1,
  audio: { channels: [4, 8], hidden: [8], dropout: 0 },
  device: 'cpu',
  checkpointDir,
})

const losses = (history: { trainLoss: number }[]) => history.map((r) => r.trainLoss)

let reference: Promise<number[]> | undefined
function uninterrupted(): Promise<number[]> {
  reference ??= train({ ...options(tempDir('ep-ref-')), train: syntheticSet() }).then((r) => losses(r.history))
  return reference
}

/** Trains in a child process that aborts the second time a save reaches `point` (end of epoch 2). */
function crashAt(point: string, checkpointDir: string) {
  const script = `
    const m = await import(${JSON.stringify(dist)})
    const set = (${syntheticSet.toString()})()
    await m.train({ ...${JSON.stringify(options(checkpointDir))}, train: set })
    console.log('finished without crashing')`
  return spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    encoding: 'utf8',
    env: { ...process.env, EMOTION_PIPELINE_CRASH_AT: `${point}@2` },
    timeout: 120_000,
  })
}

for (const point of ['last-weights', 'last-optim', 'last-state', 'last-model']) {
  test(`killed at ${point} during a checkpoint save, the run resumes exactly`, async (t) => {
    const dir = tempDir('ep-crash-')
    const crashed = crashAt(point, dir)
    t.is(crashed.signal, 'SIGABRT', `the child must die at ${point}: ${crashed.stdout}${crashed.stderr}`)
    const resumed = await train({ ...options(dir), train: syntheticSet(), resume: true })
    t.deepEqual(losses(resumed.history), await uninterrupted())
    const generations = readdirSync(dir).filter((f) => /^last-.*\.safetensors$/.test(f))
    t.is(generations.length, 2, `one generation of weights + optimiser state left: ${generations.join(', ')}`)
  })
}

test('a damaged checkpoint part is refused by name, not resumed with', async (t) => {
  const dir = tempDir('ep-damaged-')
  await train({ ...options(dir), epochs: 1, train: syntheticSet() })
  const state = JSON.parse(readFileSync(join(dir, 'last.state.json'), 'utf8'))
  const weights = join(dir, state.parts.weights)
  const bytes = readFileSync(weights)
  bytes[bytes.length - 5] ^= 0xff
  writeFileSync(weights, bytes)
  const err = await t.throwsAsync(train({ ...options(dir), train: syntheticSet(), resume: true }), { instanceOf: EmotionPipelineError })
  t.is(err!.code, 'MODEL_NOT_FOUND')
  t.true(err!.message.includes(state.parts.weights), err!.message)
  t.regex(err!.message, /does not match last\.state\.json/)
})

test('a model whose weights hold NaN is refused by loadModel (NON_FINITE naming the file), not used to predict NaN', async (t) => {
  const dir = tempDir('ep-nan-model-')
  await train({ ...options(dir), epochs: 1, train: syntheticSet() })
  // safetensors: 8-byte little-endian header length, JSON header, then the raw tensors.
  const file = join(dir, 'best.safetensors')
  const bytes = readFileSync(file)
  const headerLength = Number(bytes.readBigUInt64LE(0))
  bytes.writeFloatLE(Number.NaN, 8 + headerLength)
  writeFileSync(file, bytes)
  const err = await t.throwsAsync(loadModel(dir, { device: 'cpu' }), { instanceOf: EmotionPipelineError })
  t.is(err!.code, 'NON_FINITE')
  t.true(err!.message.includes(file), err!.message)
})

test('features of another shape than the model was trained on are INVALID_OPTION, not predicted', async (t) => {
  const dir = tempDir('ep-shape-')
  await train({ ...options(dir), epochs: 1, train: syntheticSet(), mel: { nMels: 16, frames: 16 } })
  const model = await loadModel(dir, { device: 'cpu' })
  t.is((await model.predictFeatures({ mel: { data: new Float32Array(2 * 16 * 16), shape: [2, 16, 16] } })).length, 2)
  const err = await t.throwsAsync(model.predictFeatures({ mel: { data: new Float32Array(2 * 16 * 12), shape: [2, 16, 12] } }), {
    instanceOf: EmotionPipelineError,
  })
  t.is(err!.code, 'INVALID_OPTION')
  t.regex(err!.message, /\[n, 16, 12\] but the model was trained on \[n, 16, 16\]/)
})

test('a checkpointDir or cacheDir that cannot be written is IO naming the option', async (t) => {
  const file = join(tempDir('ep-unwritable-'), 'a-file')
  writeFileSync(file, 'x')
  const err = await t.throwsAsync(train({ ...options(join(file, 'ckpt')), train: syntheticSet() }), { instanceOf: EmotionPipelineError })
  t.is(err!.code, 'IO')
  t.regex(err!.message, /`checkpointDir`: .*a-file is a file, not a folder/)
  const mel = await t.throwsAsync(extractMel([{ samples: new Float32Array(4800), sampleRate: 48000 }], { cacheDir: join(file, 'cache') }), {
    instanceOf: EmotionPipelineError,
  })
  t.is(mel!.code, 'IO')
  t.regex(mel!.message, /`cacheDir`/)
})

test('a full disk during a checkpoint save is IO naming the file; no partial file is left, the process lives', async (t) => {
  // A 1 MB tmpfs filled to its last 64 KB, then a model whose weights alone need about 400 KB.
  const mount = tempDir('ep-full-disk-')
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mount], { encoding: 'utf8' })
  if (mounted.status !== 0) return skip(t, `cannot mount a small tmpfs here (needs root): skipped (${mounted.stderr.trim()})`)
  t.teardown(() => spawnSync('umount', [mount]))
  writeFileSync(join(mount, 'filler'), Buffer.alloc(1024 * 1024 - 64 * 1024))
  const checkpointDir = join(mount, 'ckpt')
  const err = await t.throwsAsync(
    train({ ...options(checkpointDir), epochs: 1, audio: { channels: [4, 8], hidden: [1024], dropout: 0 }, train: syntheticSet() }),
    { instanceOf: EmotionPipelineError },
  )
  t.is(err!.code, 'IO', err!.message)
  t.log(err!.message)
  t.regex(err!.message, /ckpt\/[\w.-]+\.safetensors.*No space left on device/)
  t.deepEqual(
    readdirSync(checkpointDir).filter((f) => f.includes('.tmp.')),
    [],
    'the partial temporary file is removed',
  )
})

test('loading a model while another trains does not change the training run (one global generator, taken in turns)', async (t) => {
  const modelDir = tempDir('ep-loaded-')
  await train({ ...options(modelDir), epochs: 1, train: syntheticSet() })
  // Dropout on, so every step draws from libtorch's generator too, not only the initial weights.
  const withDropout = (dir: string) => ({ ...options(dir), audio: { ...options(dir).audio, dropout: 0.3 }, train: syntheticSet() })
  const quiet = losses((await train(withDropout(tempDir('ep-quiet-')))).history)
  const busy = train(withDropout(tempDir('ep-busy-')))
  // Each load builds a model, which draws initial weights on this thread while the job runs on another.
  let loads = 0
  const until = Date.now() + 1500
  while (Date.now() < until) {
    await loadModel(modelDir, { device: 'cpu' })
    loads++
  }
  t.deepEqual(losses((await busy).history), quiet)
  t.log(`${loads} models loaded during the run`)
})

test('a damaged checkpoint rejects loadModel with a coded error and the process lives on (load runs in the panic guard)', async (t) => {
  const dir = tempDir('ep-truncated-')
  await train({ ...options(dir), epochs: 1, train: syntheticSet() })
  const file = join(dir, 'best.safetensors')
  const bytes = readFileSync(file)
  writeFileSync(file, bytes.subarray(0, Math.floor(bytes.length / 2)))
  const truncated = await t.throwsAsync(loadModel(dir, { device: 'cpu' }), { instanceOf: EmotionPipelineError })
  t.true(['MODEL_NOT_FOUND', 'TORCH'].includes(truncated!.code), `${truncated!.code}: ${truncated!.message}`)
  writeFileSync(join(dir, 'best.json'), '{"config": 7}')
  const meta = await t.throwsAsync(loadModel(dir, { device: 'cpu' }), { instanceOf: EmotionPipelineError })
  t.is(meta!.code, 'MODEL_NOT_FOUND')
  t.regex(meta!.message, /best\.json/)
  const missing = await t.throwsAsync(loadModel(tempDir('ep-no-model-'), { device: 'cpu' }), { instanceOf: EmotionPipelineError })
  t.is(missing!.code, 'MODEL_NOT_FOUND')
  t.regex(missing!.message, /no checkpoint here/)
})
