// A process killed at each step of a checkpoint save (EMOTION_PIPELINE_CRASH_AT aborts it there, with no
// clean-up) must leave a checkpoint that resumes exactly: the resumed run's history equals an
// uninterrupted run's. A damaged part is refused by name, never silently mixed in.
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { EmotionPipelineError, train } from '../src/index.js'
import type { TrainOptions, TrainSet } from '../src/index.js'
import { tempDir } from './helpers.js'

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
  t.is(err!.code, 'DATASET')
  t.true(err!.message.includes(state.parts.weights), err!.message)
  t.regex(err!.message, /does not match last\.state\.json/)
})
