// Data-parallel training over c10d's Gloo process group, with real worker processes on 127.0.0.1: two
// ranks × batch 8 make the updates one process × batch 16 makes (the encoder head within 1e-5 per
// tensor; the batch-norm CNN as close as the same single process at another thread count is), a stop
// on one rank stops both at the same window and the resume is exact, a resume at another world size
// is refused, a killed rank is named, and the CLI's launcher and torchrun each write one run.
import test from 'ava'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { extractEmbeddings, extractMel, indexDataset } from '../src/index.js'
import { haveRavdess, NO_DATA, ravdessDir, referencePython, runAsync, skip, tempDir, freePort } from './helpers.js'

const root = resolve(import.meta.dirname, '..')
const cli = join(root, 'dist', 'cli.js')
const EMOTIONS = ['neutral', 'calm', 'happy', 'sad', 'angry', 'fearful', 'disgust', 'surprised']
const SMALL_CNN = { channels: [8, 16, 16, 16], hidden: [32, 16], dropout: 0 }
// 49 clips: with 16 per step the last batch has one clip, so the second rank runs a stand-in row.
const CLIPS = 49
// Built by setup where apt could fetch Gloo's headers (scripts/gloo.mjs); without it these tests skip.
const GLOO = join(root, 'bindings', 'emotion-pipeline-gloo.linux-x64-gnu.so')
const NO_GLOO = existsSync(GLOO) ? undefined : `${GLOO} was not built (no apt?): data-parallel tests skipped`

/** Why this test cannot run here (no data, no Gloo shim), or undefined. */
const cannotRun = () => (!haveRavdess ? NO_DATA : NO_GLOO)

type Features = { file: string; input: 'mel' | 'embedding'; shape: number[]; labels: number[] }
const features = new Map<string, Promise<Features>>()

/** The first 49 clips of actor 1 as log-mel or whisper-tiny.en states, written once for the workers. */
function realFeatures(input: 'mel' | 'embedding'): Promise<Features> {
  let made = features.get(input)
  if (!made) {
    made = (async () => {
      const items = (await indexDataset(join(ravdessDir, 'Actor_01'))).items.slice(0, CLIPS)
      const paths = items.map((i) => i.path)
      const rows =
        input === 'mel'
          ? await extractMel(paths, { device: 'cpu' })
          : await extractEmbeddings(paths, { encoder: 'whisper-tiny.en', device: 'cpu' })
      const file = join(tempDir('ep-ddp-features-'), 'rows.f32')
      writeFileSync(file, Buffer.from(rows.data.buffer, rows.data.byteOffset, rows.data.byteLength))
      return { file, input, shape: [...rows.shape], labels: items.map((i) => EMOTIONS.indexOf(i.label)) }
    })()
    features.set(input, made)
  }
  return made
}

let workerFile: string | undefined
/** A worker: trains on the features with the job's options, as a rank when WORLD_SIZE is set. */
function worker(): string {
  if (workerFile) return workerFile
  workerFile = join(tempDir('ep-ddp-worker-'), 'worker.mjs')
  writeFileSync(
    workerFile,
    `import { readFileSync } from 'node:fs'
import { train, worldFromEnv } from ${JSON.stringify(join(root, 'dist', 'index.js'))}
const job = JSON.parse(process.env.JOB)
const bytes = readFileSync(job.features.file)
const data = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4)
const set = { [job.features.input]: { data, shape: job.features.shape }, labels: job.features.labels }
const rank = Number(process.env.RANK ?? 0)
const controller = new AbortController()
let steps = 0
const onProgress = (e) => {
  if (e.type !== 'step') return
  steps += 1
  if (job.abortAt && steps === job.abortAt.step && rank === job.abortAt.rank) controller.abort()
  if (job.killAt && steps === job.killAt.step && rank === job.killAt.rank) process.kill(process.pid, 'SIGKILL')
  if (job.hangAt && steps === job.hangAt.step && rank === job.hangAt.rank) process.kill(process.pid, 'SIGSTOP')
}
const started = Date.now()
try {
  const result = await train({
    ...job.options, train: set, val: set, onProgress, signal: controller.signal, progressIntervalMs: 0,
    distributed: process.env.WORLD_SIZE ? { ...worldFromEnv(), heartbeatSeconds: 2, timeoutSeconds: job.timeoutSeconds ?? 60 } : undefined,
  })
  console.log(JSON.stringify({ rank, steps: result.optimizerSteps, dp: result.dataParallel, history: result.history }))
} catch (e) {
  console.log(JSON.stringify({ rank, code: e.code, message: e.message, seconds: (Date.now() - started) / 1000 }))
  process.exit(3)
}`,
  )
  return workerFile
}

interface Job {
  features: Features
  options: Record<string, unknown>
  abortAt?: { rank: number; step: number }
  killAt?: { rank: number; step: number }
  /** The rank stops (SIGSTOP) at that step: a hang, not a death. */
  hangAt?: { rank: number; step: number }
  timeoutSeconds?: number
}
type Outcome = {
  status: number | null
  out: { rank: number; code?: string; message?: string; seconds?: number; steps?: number }
  stderr: string
}

/** Trains `job` in `ranks` processes (one thread each), or alone when `ranks` is 1 (`threads` threads). */
async function run(job: Job, ranks: number, threads = 1): Promise<Outcome[]> {
  const port = await freePort()
  const world = (rank: number) =>
    ranks > 1
      ? {
          RANK: `${rank}`,
          WORLD_SIZE: `${ranks}`,
          LOCAL_RANK: `${rank}`,
          LOCAL_WORLD_SIZE: `${ranks}`,
          MASTER_ADDR: '127.0.0.1',
          MASTER_PORT: `${port}`,
        }
      : {}
  const results = await Promise.all(
    Array.from({ length: ranks }, (_, rank) =>
      runAsync(process.execPath, [worker()], {
        env: { ...process.env, ...world(rank), OMP_NUM_THREADS: `${threads}`, JOB: JSON.stringify(job) },
      }),
    ),
  )
  return results.map((r) => ({ status: r.status, out: JSON.parse(r.stdout.trim().split('\n').pop() || '{}'), stderr: r.stderr }))
}

/** The float32 tensors of a safetensors file (8-byte header length, JSON header, raw data). */
function weights(file: string): Record<string, Float32Array> {
  const bytes = readFileSync(file)
  const length = Number(bytes.readBigUInt64LE(0))
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString()) as Record<string, { dtype: string; data_offsets: [number, number] }>
  const out: Record<string, Float32Array> = {}
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__' || t.dtype !== 'F32') continue
    const part = bytes.subarray(8 + length + t.data_offsets[0], 8 + length + t.data_offsets[1])
    out[name] = new Float32Array(part.buffer.slice(part.byteOffset, part.byteOffset + part.byteLength))
  }
  return out
}

/** Per tensor: max |a − b| / max |a|; the worst tensor. */
function worstRelative(a: Record<string, Float32Array>, b: Record<string, Float32Array>): { name: string; relative: number } {
  let worst = { name: '', relative: 0 }
  for (const [name, x] of Object.entries(a)) {
    let diff = 0
    let size = 0
    for (let i = 0; i < x.length; i++) {
      diff = Math.max(diff, Math.abs(x[i] - b[name][i]))
      size = Math.max(size, Math.abs(x[i]))
    }
    const relative = diff / Math.max(size, 1e-12)
    if (relative > worst.relative) worst = { name, relative }
  }
  return worst
}

/** ‖a − b‖ / ‖a‖ over the trained tensors, or over batch norm's running statistics. */
function globalRelative(a: Record<string, Float32Array>, b: Record<string, Float32Array>, running = false): number {
  let num = 0
  let den = 0
  for (const [name, x] of Object.entries(a)) {
    if (name.includes('running_') !== running) continue
    for (let i = 0; i < x.length; i++) {
      num += (x[i] - b[name][i]) ** 2
      den += x[i] ** 2
    }
  }
  return Math.sqrt(num / den)
}

function cnnJob(features: Features, dir: string, extra: Record<string, unknown> = {}): Job {
  return {
    features,
    options: {
      model: 'audio',
      preset: 'reference',
      labels: EMOTIONS,
      audio: SMALL_CNN,
      amp: 'off',
      seed: 3,
      device: 'cpu',
      checkpointDir: dir,
      checkReplicas: true,
      ...extra,
    },
  }
}

function ok(t: { is: (a: unknown, b: unknown, m?: string) => void }, outcomes: Outcome[]): void {
  for (const o of outcomes) t.is(o.status, 0, `${JSON.stringify(o.out)} ${o.stderr.slice(-1500)}`)
}

test.serial('2 ranks × batch 8 train the encoder head as 1 process × batch 16 does (within 1e-5 per tensor after 10 steps)', async (t) => {
  const why = cannotRun()
  if (why) return skip(t, why)
  const features = await realFeatures('embedding')
  for (const accumulation of [1, 2]) {
    const epochs = accumulation === 1 ? 3 : 5
    const job = (dir: string, batchSize: number) => ({
      features,
      options: {
        model: 'encoder',
        preset: 'reference',
        labels: EMOTIONS,
        encoderHead: { dropout: 0 },
        amp: 'off',
        seed: 3,
        device: 'cpu',
        checkpointDir: dir,
        checkReplicas: true,
        epochs,
        batchSize,
        accumulation,
      },
    })
    const alone = tempDir('ep-ddp-alone-')
    const pair = tempDir('ep-ddp-pair-')
    ok(t, await run(job(alone, 16), 1))
    const ranks = await run(job(pair, 8), 2)
    ok(t, ranks)
    t.is(ranks[0].out.steps, Math.ceil(CLIPS / 16 / accumulation) * epochs)
    const worst = worstRelative(weights(join(alone, 'last.safetensors')), weights(join(pair, 'last.safetensors')))
    t.true(worst.relative <= 1e-5, `accumulation ${accumulation}: ${worst.name} differs by ${worst.relative}`)
    t.log(
      `encoder head, accumulation ${accumulation}, ${ranks[0].out.steps} steps: worst tensor ${worst.name} within ${worst.relative.toExponential(1)} (relative)`,
    )
  }
})

test.serial('synchronised batch norm: the CNN on 2 ranks is as close to 1 process × 16 as that process at 2 threads is', async (t) => {
  const why = cannotRun()
  if (why) return skip(t, why)
  const features = await realFeatures('mel')
  // Adam's eps at 1 makes its step lr·g (plain SGD): with eps 1e-8 Adam turns the rounding noise of the
  // conv biases' gradients (batch norm cancels them: their exact gradient is 0) into full steps, and
  // one process differs from itself at another thread count by 2.7e-3 after 10 steps.
  const options = { epochs: 5, accumulation: 2, optim: { lr: 0.05, eps: 1 } }
  const dirs = { alone: tempDir('ep-bn-1-'), threads: tempDir('ep-bn-2t-'), sync: tempDir('ep-bn-sync-'), own: tempDir('ep-bn-own-') }
  ok(t, await run(cnnJob(features, dirs.alone, { ...options, batchSize: 16 }), 1))
  ok(t, await run(cnnJob(features, dirs.threads, { ...options, batchSize: 16, threads: 2 }), 1, 2))
  ok(t, await run(cnnJob(features, dirs.sync, { ...options, batchSize: 8 }), 2))
  ok(t, await run(cnnJob(features, dirs.own, { ...options, batchSize: 8, syncBatchNorm: false }), 2))
  const reference = weights(join(dirs.alone, 'last.safetensors'))
  const [threads, sync, own] = [dirs.threads, dirs.sync, dirs.own].map((d) =>
    globalRelative(reference, weights(join(d, 'last.safetensors'))),
  )
  t.true(sync <= 2 * threads, `synchronised ${sync} vs the thread-count control ${threads}`)
  t.true(own > 5 * sync, `per-rank batch norm ${own} should differ far more than synchronised ${sync}`)
  // The running mean and variance (what inference normalises by) follow the global batch too.
  const running = (d: string) => globalRelative(reference, weights(join(d, 'last.safetensors')), true)
  const [threadsRunning, syncRunning] = [running(dirs.threads), running(dirs.sync)]
  t.true(syncRunning <= 2 * threadsRunning, `running statistics ${syncRunning} vs the control ${threadsRunning}`)
  t.log(
    `running statistics: 2 threads ${threadsRunning.toExponential(2)}, synchronised ${syncRunning.toExponential(2)}, per-rank ${running(dirs.own).toExponential(2)}`,
  )
  t.log(
    `after 10 steps, ‖Δw‖/‖w‖ from 1 process × 16: 2 threads ${threads.toExponential(2)}, 2 ranks synchronised ${sync.toExponential(2)}, per-rank batch norm ${own.toExponential(2)}`,
  )
})

test.serial('a stop on one rank stops both at the same window; the resume on 2 ranks is exact, on 1 refused', async (t) => {
  const why = cannotRun()
  if (why) return skip(t, why)
  const features = await realFeatures('mel')
  const options = { epochs: 4, batchSize: 8 }
  const straight = tempDir('ep-ddp-straight-')
  const stopped = tempDir('ep-ddp-stopped-')
  ok(t, await run(cnnJob(features, straight, options), 2))
  const stop = await run({ ...cnnJob(features, stopped, options), abortAt: { rank: 1, step: 6 } }, 2)
  t.deepEqual(
    stop.map((o) => o.out.code),
    ['CANCELLED', 'CANCELLED'],
    stop.map((o) => o.stderr.slice(-500)).join('\n'),
  )
  const state = JSON.parse(readFileSync(join(stopped, 'last.state.json'), 'utf8')) as {
    worldSize: number
    epoch: number
    nextBatch: number
  }
  t.is(state.worldSize, 2)
  const alone = await run(cnnJob(features, stopped, { ...options, resume: true }), 1)
  t.is(alone[0].out.code, 'INVALID_OPTION')
  t.regex(alone[0].out.message ?? '', /trained by 2 process\(es\) \(WORLD_SIZE 2\), this job has 1/)
  ok(t, await run(cnnJob(features, stopped, { ...options, resume: true }), 2))
  const worst = worstRelative(weights(join(straight, 'last.safetensors')), weights(join(stopped, 'last.safetensors')))
  t.is(worst.relative, 0, `${worst.name} differs by ${worst.relative}`)
  t.log(`stopped at epoch ${state.epoch + 1} batch ${state.nextBatch}; the resumed run ends with the uninterrupted run's weights exactly`)
})

test.serial('a rank killed mid-epoch makes the other stop with DISTRIBUTED naming it', async (t) => {
  const why = cannotRun()
  if (why) return skip(t, why)
  const features = await realFeatures('mel')
  const [zero, one] = await run(
    { ...cnnJob(features, tempDir('ep-ddp-kill-'), { epochs: 4, batchSize: 8 }), killAt: { rank: 1, step: 5 } },
    2,
  )
  t.is(one.status, null, 'rank 1 was killed')
  t.is(zero.out.code, 'DISTRIBUTED', zero.stderr.slice(-1500))
  t.regex(zero.out.message ?? '', /rank 1 stopped \(no heartbeat for [\d.]+ s\).*this is rank 0/)
  t.true((zero.out.seconds ?? 99) < 30, `${zero.out.seconds} s`)
  t.log(`rank 0 stopped ${zero.out.seconds?.toFixed(1)} s into training: ${zero.out.message}`)
})

test.serial('a rank that hangs mid-epoch makes the other stop with DISTRIBUTED naming it, at the timeout', async (t) => {
  const why = cannotRun()
  if (why) return skip(t, why)
  const features = await realFeatures('mel')
  const job = { ...cnnJob(features, tempDir('ep-ddp-hang-'), { epochs: 4, batchSize: 8 }), hangAt: { rank: 1, step: 5 }, timeoutSeconds: 5 }
  const port = await freePort()
  const ranks = [0, 1].map((rank) => {
    const env = { ...process.env, RANK: `${rank}`, WORLD_SIZE: '2', LOCAL_RANK: `${rank}`, LOCAL_WORLD_SIZE: '2' }
    return spawn(process.execPath, [worker()], {
      env: { ...env, MASTER_ADDR: '127.0.0.1', MASTER_PORT: `${port}`, OMP_NUM_THREADS: '1', JOB: JSON.stringify(job) },
    })
  })
  let out = ''
  ranks[0].stdout?.on('data', (d) => {
    out += d
  })
  const status = await new Promise((done) => ranks[0].on('close', done))
  // The hung rank is still stopped: end it.
  ranks[1].kill('SIGKILL')
  const zero = JSON.parse(out.trim().split('\n').pop() || '{}') as { code?: string; message?: string; seconds?: number }
  t.is(status, 3)
  t.is(zero.code, 'DISTRIBUTED', out)
  t.regex(zero.message ?? '', /rank 1 stopped \(no heartbeat for [\d.]+ s\).*this is rank 0/)
  t.true((zero.seconds ?? 99) < 30, `${zero.seconds} s`)
  t.log(`rank 0 stopped ${zero.seconds?.toFixed(1)} s into training (Gloo timeout 5 s): ${zero.message}`)
})

// The CNN, the BiLSTM (its text from the RAVDESS file names) and their fusion (batch norm on its head).
const CLI_TRAIN = [
  '--models',
  'audio,text,fusion',
  '--transcripts',
  'ravdess-names',
  '--epochs',
  '1',
  '--max-items',
  '40',
  '--preset',
  'reference',
  '--train',
  JSON.stringify({ audio: { audio: SMALL_CNN }, fusion: { audio: SMALL_CNN } }),
]

function runFiles(t: { true: (v: boolean, m?: string) => void }, out: string): void {
  const models = ['audio', 'text', 'fusion'].map((m) => `models/${m}/best.safetensors`)
  for (const f of ['report.md', 'metrics.json', 'split.json', ...models]) t.true(existsSync(join(out, f)), `${out}/${f} missing`)
  t.true(readFileSync(join(out, 'report.md'), 'utf8').includes('Data-parallel over 2 processes'))
}

test.serial('train --nproc-per-node 2 writes one run directory (CNN, BiLSTM and fusion, data-parallel)', async (t) => {
  const why = cannotRun()
  if (why) return skip(t, why)
  const out = join(tempDir('ep-ddp-cli-'), 'run')
  const r = spawnSync(
    process.execPath,
    [cli, 'train', '--data', join(ravdessDir, 'Actor_01'), '--out', out, ...CLI_TRAIN, '--nproc-per-node', '2'],
    {
      encoding: 'utf8',
      timeout: 300_000,
    },
  )
  t.is(r.status, 0, r.stderr.slice(-2000))
  runFiles(t, out)
  t.regex(r.stdout, /audio\s+[\d.]+ %/)
})

test.serial('Ctrl-C under train --nproc-per-node 2 stops every rank with a checkpoint (exit 130); --resume finishes', async (t) => {
  const why = cannotRun()
  if (why) return skip(t, why)
  const out = join(tempDir('ep-ddp-sigint-'), 'run')
  const args = [cli, 'train', '--data', join(ravdessDir, 'Actor_01'), '--out', out, '--models', 'audio', '--max-items', '40']
  const rest = ['--preset', 'reference', '--train', JSON.stringify({ audio: { audio: SMALL_CNN } }), '--nproc-per-node', '2']
  const launcher = spawn(process.execPath, [...args, '--epochs', '60', ...rest])
  let stderr = ''
  launcher.stderr.on('data', (d) => {
    stderr += d
    // Stop once the second epoch has begun.
    if (/epoch 2\/60/.test(stderr) && launcher.exitCode === null && !launcher.killed) launcher.kill('SIGINT')
  })
  const status = await new Promise((done) => launcher.on('close', done))
  t.is(status, 130, stderr.slice(-2000))
  t.regex(stderr, /\[launcher\] rank \d stopped first \(exit 130\); exits: rank 0 130, rank 1 130/)
  const state = JSON.parse(readFileSync(join(out, 'models', 'audio', 'last.state.json'), 'utf8')) as { epoch: number; worldSize: number }
  t.is(state.worldSize, 2)
  t.true(state.epoch < 60, `stopped at epoch ${state.epoch}`)
  const resumed = spawnSync(process.execPath, [...args, '--epochs', '60', ...rest, '--resume'], { encoding: 'utf8', timeout: 300_000 })
  t.is(resumed.status, 0, resumed.stderr.slice(-2000))
  t.true(existsSync(join(out, 'report.md')))
  t.log(`stopped after epoch ${state.epoch} of 60; the resumed run finished`)
})

test.serial('train under the real torchrun (--no-python) joins its world and writes one run directory', async (t) => {
  const why = cannotRun()
  if (why) return skip(t, why)
  const python = referencePython()
  const torchrun = python && join(dirname(python), 'torchrun')
  if (!torchrun || !existsSync(torchrun)) return skip(t, 'no torchrun in the contributor venv: skipped')
  const out = join(tempDir('ep-ddp-torchrun-'), 'run')
  const r = spawnSync(
    torchrun,
    [
      '--standalone',
      '--nproc-per-node',
      '2',
      '--no-python',
      process.execPath,
      cli,
      'train',
      '--data',
      join(ravdessDir, 'Actor_01'),
      '--out',
      out,
      ...CLI_TRAIN,
    ],
    { encoding: 'utf8', timeout: 300_000 },
  )
  t.is(r.status, 0, r.stderr.slice(-2000))
  runFiles(t, out)
})
