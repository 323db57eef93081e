#!/usr/bin/env node
// CUDA-only tests (node:test, so they run on a GPU host that has Node but no npm packages).
// On a machine without CUDA they are skipped with a visible message. See scripts/gpu-bundle.mjs.
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, writeFileSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import test from 'node:test'
import assert from 'node:assert/strict'
// The installed package on a GPU host (run.sh sets EMOTION_PIPELINE_MODULE), else this clone's build.
const main = process.env.EMOTION_PIPELINE_MODULE
  ? pathToFileURL(process.env.EMOTION_PIPELINE_MODULE).href
  : new URL('../dist/index.js', import.meta.url).href
const lib = await import(main)
// Development helpers sit beside the entry point (`emotion-pipeline/dev`).
const { cudaGraphSelfTest, tensorRoundTrip } = await import(new URL('dev.js', main).href)
const { deviceInfo, extractMel } = lib
import { referencePython } from '../benches/python.mjs'

const root = resolve(import.meta.dirname, '..')
const info = deviceInfo()
if (!info.cudaAvailable) {
  console.log(`GPU tests skipped: no CUDA on this machine (${info.cudaProblem}).`)
  console.log('Run them on a GPU host: npm run gpu:bundle, then the command it prints.')
  process.exit(0)
}
console.log(
  `CUDA: ${info.devices.map((d) => `cuda:${d.index} ${d.name} ${(d.totalMemoryBytes / 2 ** 30).toFixed(1)} GiB`).join(', ')}; cuDNN ${info.cudnnVersion}; libtorch ${info.torchVersion}`,
)

function dataClips(limit) {
  const dirs = [process.env.EMOTION_GPU_DATA, join(root, '.device', 'data'), join(root, '..', 'shared', 'data', 'ravdess-wav')]
  for (const dir of dirs) {
    if (!dir || !existsSync(dir)) continue
    const files = []
    const walk = (d) =>
      readdirSync(d, { withFileTypes: true }).forEach((e) => {
        const p = join(d, e.name)
        if (e.isDirectory()) walk(p)
        else if (/\.(wav|flac|ogg|mp3)$/i.test(e.name)) files.push(p)
      })
    walk(dir)
    if (files.length) return files.sort().slice(0, limit)
  }
  return []
}

test('deviceInfo names the GPU, its memory and cuDNN', () => {
  assert.ok(info.cudaDeviceCount >= 1)
  assert.ok(info.devices[0].name.length > 0 && info.devices[0].name !== 'unknown', info.devices[0].name)
  assert.ok(info.devices[0].totalMemoryBytes > 2 ** 30)
  assert.ok(info.cudnnVersion > 0)
})

test('a tensor round trip through CUDA', () => {
  const r = tensorRoundTrip(Float32Array.from([1, 2, 3, 4, 5, 6]), [2, 3], 'cuda')
  assert.equal(r.device, 'cuda:0')
  assert.equal(r.sum, 21)
  assert.deepEqual(Array.from(r.data), [1, 2, 3, 4, 5, 6])
})

test('log-mel on CUDA matches the CPU within 1e-3 dB (bins within 80 dB of the peak)', async () => {
  const clips = dataClips(64)
  assert.ok(clips.length > 0, 'no audio found for the GPU tests')
  const gpu = await extractMel(clips, { device: 'cuda' })
  const cpu = await extractMel(clips, { device: 'cpu' })
  assert.equal(gpu.device, 'cuda:0')
  assert.deepEqual(gpu.shape, cpu.shape)
  const per = gpu.shape[1] * gpu.shape[2]
  let worst = 0
  for (let c = 0; c < gpu.shape[0]; c++) {
    let max = -Infinity
    for (let i = c * per; i < (c + 1) * per; i++) max = Math.max(max, cpu.data[i])
    for (let i = c * per; i < (c + 1) * per; i++) if (cpu.data[i] > max - 80) worst = Math.max(worst, Math.abs(gpu.data[i] - cpu.data[i]))
  }
  console.log(`  ${clips.length} clips: CUDA vs CPU log-mel max error ${worst.toExponential(2)} dB`)
  assert.ok(worst < 1e-3, `max dB error ${worst}`)
})

test('the Whisper encoder on CUDA (fp16 and fp32) matches the CPU in fp32', async (t) => {
  // The encoder weights (145 MB for whisper-base) are not in the GPU bundle: the test runs where an
  // encoder is installed (EMOTION_PIPELINE_CACHE) or EMOTION_GPU_ENCODER names a folder with model.bin.
  const encoder = process.env.EMOTION_GPU_ENCODER ?? 'whisper-base'
  let cpu
  const clips = dataClips(8)
  try {
    cpu = await lib.extractEmbeddings(clips, { encoder, device: 'cpu', precision: 'fp32', strict: true })
  } catch (err) {
    if (err.code !== 'MODEL_NOT_FOUND') throw err
    t.skip(`no encoder here (${err.message}); set EMOTION_GPU_ENCODER to a folder with a CTranslate2 Whisper model.bin`)
    return
  }
  for (const precision of ['fp32', 'fp16']) {
    const gpu = await lib.extractEmbeddings(clips, { encoder, device: 'cuda', precision, strict: true })
    assert.equal(gpu.device, 'cuda:0')
    assert.deepEqual(gpu.shape, cpu.shape)
    let worst = 0
    for (let i = 0; i < cpu.data.length; i++) worst = Math.max(worst, Math.abs(gpu.data[i] - cpu.data[i]) / (1 + Math.abs(cpu.data[i])))
    console.log(`  ${clips.length} clips, ${precision}: CUDA vs CPU pooled states, largest relative difference ${worst.toExponential(2)}`)
    assert.ok(worst < (precision === 'fp32' ? 1e-3 : 5e-2), `${precision}: ${worst}`)
  }
})

test('log-mel on CUDA matches torchaudio on CUDA', async (t) => {
  const python = referencePython()
  if (!python) return t.skip('no Python with torchaudio on this host')
  const clips = dataClips(16)
  const mel = await extractMel(clips, { device: 'cuda', mel: { frames: null, toDb: false } })
  const db = await extractMel(clips, { device: 'cuda', mel: { frames: null } })
  // Feed torchaudio the exact waveforms we used: decode + fit through our API.
  const { decodeAudio } = lib
  const waves = await Promise.all(
    clips.map(async (f) => {
      const a = await decodeAudio(f, { sampleRate: 48000 })
      const w = new Float32Array(144000)
      w.set(a.samples.subarray(0, 144000))
      return w
    }),
  )
  const tmp = mkdtempSync(join(tmpdir(), 'ep-gpu-'))
  const flat = new Float32Array(waves.length * 144000)
  for (const [i, w] of waves.entries()) flat.set(w, i * 144000)
  writeFileSync(join(tmp, 'w.f32'), flat)
  const config = (await import(new URL('generated/options.js', main).href)).DEFAULTS.MelConfig
  writeFileSync(
    join(tmp, 'req.json'),
    JSON.stringify({ waves: join(tmp, 'w.f32'), count: waves.length, length: 144000, config, out: join(tmp, 'ref'), device: 'cuda' }),
  )
  execFileSync(python, [join(root, 'benches', 'reference', 'torchaudio_mel.py'), join(tmp, 'req.json')])
  const read = (p) => {
    const b = readFileSync(p)
    return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4)
  }
  const refPower = read(join(tmp, 'ref.power.f32'))
  const refDb = read(join(tmp, 'ref.db.f32'))
  let rel = 0
  let dbErr = 0
  const per = 128 * 282
  for (let c = 0; c < waves.length; c++) {
    let peak = 0
    let dbMax = -Infinity
    for (let i = c * per; i < (c + 1) * per; i++) {
      peak = Math.max(peak, refPower[i])
      dbMax = Math.max(dbMax, refDb[i])
    }
    for (let i = c * per; i < (c + 1) * per; i++) {
      if (refPower[i] > peak * 1e-8) rel = Math.max(rel, Math.abs(mel.data[i] - refPower[i]) / refPower[i])
      if (refDb[i] > dbMax - 80) dbErr = Math.max(dbErr, Math.abs(db.data[i] - refDb[i]))
    }
  }
  console.log(`  torchaudio CUDA parity: power max rel err ${rel.toExponential(2)}, log-mel max err ${dbErr.toExponential(2)} dB`)
  assert.ok(rel <= 1e-4, `power rel err ${rel}`)
  assert.ok(dbErr <= 1e-3, `dB err ${dbErr}`)
})

/** 64 log-mel-shaped inputs with 8 labels for the CNN training tests (speed and finiteness, not accuracy). */
function cnnSet() {
  const n = 64
  const data = new Float32Array(n * 128 * 280)
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.37) * 10 - 40 + ((i / (128 * 280)) % 8)
  return { n, data, labels: Int32Array.from({ length: n }, (_, i) => i % 8) }
}

test('the audio CNN trains on CUDA with fp16 autocast (AMP active), bf16 autocast, and in fp32 when off', async () => {
  const { train } = lib
  const { n, data, labels } = cnnSet()
  for (const [amp, expected] of [
    ['auto', 'fp16'],
    ['bf16', 'bf16'],
    ['off', 'fp32'],
  ]) {
    const events = []
    const r = await train({
      train: { mel: { data, shape: [n, 128, 280] }, labels },
      val: { mel: { data, shape: [n, 128, 280] }, labels },
      epochs: 3,
      device: 'cuda',
      amp,
      onProgress: (e) => events.push(e),
    })
    assert.equal(r.device, 'cuda:0')
    assert.equal(r.precision, expected)
    assert.equal(events.find((e) => e.type === 'start').precision, expected)
    assert.ok(
      r.history.every((h) => Number.isFinite(h.trainLoss)),
      JSON.stringify(r.history),
    )
    console.log(`  ${amp}: ${expected}, ${r.microStepsPerSecond.toFixed(1)} micro-steps/s, skipped ${r.skippedSteps}`)
  }
})

test('the sync-free window end (the CUDA default) trains like the synced one in fp16 and bf16', async () => {
  const { train } = lib
  const { n, data, labels } = cnnSet()
  for (const amp of ['fp16', 'bf16']) {
    const run = (syncFree) =>
      train({ train: { mel: { data, shape: [n, 128, 280] }, labels }, epochs: 3, device: 'cuda', amp, syncFree, seed: 3 })
    const [synced, free] = [await run(false), await run(true)]
    assert.equal(free.optimizerSteps, synced.optimizerSteps)
    for (const [a, b] of synced.history.map((h, i) => [h.trainLoss, free.history[i].trainLoss])) {
      // cuDNN's benchmark mode may pick other algorithms run to run: close, not bit-identical.
      assert.ok(Number.isFinite(b) && Math.abs(a - b) <= 2e-2 * Math.abs(a), `${amp}: ${a} vs ${b}`)
    }
    console.log(`  ${amp}: synced ${synced.microStepsPerSecond.toFixed(1)}, sync-free ${free.microStepsPerSecond.toFixed(1)} micro-steps/s`)
  }
})

test('CUDA out of memory becomes OUT_OF_MEMORY naming the batch size, and the process carries on', async () => {
  const { train } = lib
  const [n, m, t] = [16, 1024, 8192] // conv1 alone needs 17 GB per activation of this batch
  const data = new Float32Array(n * m * t)
  const labels = Int32Array.from({ length: n }, (_, i) => i % 8)
  await assert.rejects(
    train({ train: { mel: { data, shape: [n, m, t] }, labels }, epochs: 1, batchSize: 16, accumulation: 1, device: 'cuda' }),
    (err) => err.code === 'OUT_OF_MEMORY' && /batch size 16/.test(err.message),
  )
  assert.equal(tensorRoundTrip(Float32Array.from([1, 2]), [2], 'cuda').sum, 3)
})

test('a model too large for the GPU is refused before allocating: OUT_OF_MEMORY naming cuda:0 and the width options', async () => {
  const { train } = lib
  const gpu = deviceInfo().devices[0]
  assert.ok(gpu.freeMemoryBytes > 0 && gpu.freeMemoryBytes <= gpu.totalMemoryBytes, JSON.stringify(gpu))
  const n = 4
  const data = new Float32Array(n * 16 * 16)
  const labels = Int32Array.from({ length: n }, (_, i) => i % 2)
  // About 1.6·10⁹ values × 16 bytes (weights, gradients, two Adam moments) = 26 GB, against a limit
  // of 10 GB (the largest valid model, 2^32 values, needs 69 GB: less than an H200 has free).
  process.env.EMOTION_PIPELINE_MEMORY_LIMIT = String(10e9)
  const started = Date.now()
  try {
    await assert.rejects(
      train({
        train: { mel: { data, shape: [n, 16, 16] }, labels },
        labels: ['a', 'b'],
        epochs: 1,
        audio: { hidden: [40000, 40000] },
        device: 'cuda',
      }),
      (err) => err.code === 'OUT_OF_MEMORY' && /cuda:0/.test(err.message) && /`audio`/.test(err.message),
    )
  } finally {
    delete process.env.EMOTION_PIPELINE_MEMORY_LIMIT
  }
  console.log(
    `  refused in ${Date.now() - started} ms; driver: ${(gpu.freeMemoryBytes / 2 ** 30).toFixed(1)} of ${(gpu.totalMemoryBytes / 2 ** 30).toFixed(1)} GiB free`,
  )
})

// CUDA graphs last: a capture that hangs on a new driver must not hold up the other checks
// (run.sh bounds the whole file with `timeout`).
test('the CUDA-graph shim captures, replays with new inputs, and survives a failed capture', () => {
  assert.equal(info.cudaGraphs, true, 'the shim is loaded (doctor says why not)')
  const r = cudaGraphSelfTest('cuda')
  assert.deepEqual(r.replayed, [3, 5, 7])
  assert.ok(r.failedCapture, 'a capture that reads a value on the host must fail')
  console.log(`  failed capture said: ${r.failedCapture.split('\n')[0]}`)
  assert.equal(r.eagerAfterFailure, 8)
})

/** Trains the CNN set 3 epochs (6 windows: 2 eager warm-up, then the capture) and collects warnings. */
async function graphRun(cudaGraph, options) {
  const { n, data, labels } = cnnSet()
  const warnings = []
  const r = await lib.train({
    train: { mel: { data, shape: [n, 128, 280] }, labels },
    epochs: 3,
    device: 'cuda',
    seed: 3,
    cudaGraph,
    ...options,
    onProgress: (e) => e.type === 'warning' && warnings.push(e.message),
  })
  return { r, warnings }
}

test('cudaGraph replays the captured step and trains like eager in fp32, fp16 and bf16', async () => {
  for (const amp of ['off', 'fp16', 'bf16']) {
    const eager = await graphRun(false, { amp })
    const graphed = await graphRun(true, { amp })
    assert.deepEqual(graphed.warnings, [], `${amp}: no fallback`)
    assert.equal(graphed.r.graphedWindows, 4, `${amp}: windows 3 to 6 replayed`)
    assert.equal(graphed.r.optimizerSteps, eager.r.optimizerSteps)
    for (const [a, b] of eager.r.history.map((h, i) => [h.trainLoss, graphed.r.history[i].trainLoss])) {
      assert.ok(Number.isFinite(b) && Math.abs(a - b) <= 2e-2 * Math.abs(a), `${amp}: eager ${a} vs graphed ${b}`)
    }
    console.log(
      `  ${amp}: eager ${eager.r.microStepsPerSecond.toFixed(1)}, graphed ${graphed.r.microStepsPerSecond.toFixed(1)} micro-steps/s (whole job, capture included)`,
    )
  }
  // SpecAugment draws its masks on the device: captured, drawn anew at every replay.
  const masked = await graphRun(true, {
    amp: 'bf16',
    augment: { specAugment: { freqMasks: 2, freqWidth: 16, timeMasks: 2, timeWidth: 30 } },
  })
  assert.deepEqual(masked.warnings, [])
  assert.equal(masked.r.graphedWindows, 4)
  assert.ok(masked.r.history.every((h) => Number.isFinite(h.trainLoss)))
})

test('cudaGraph falls back to eager with one warning where the step cannot be captured (mixup)', async () => {
  const { r, warnings } = await graphRun(true, { amp: 'bf16', augment: { mixup: 0.2 } })
  assert.equal(r.graphedWindows, 0)
  assert.equal(warnings.length, 1, warnings.join('; '))
  assert.match(warnings[0], /cudaGraph: mixup .* training runs eagerly/)
  assert.ok(r.history.every((h) => Number.isFinite(h.trainLoss)))
})

test('cudaGraph also replays the encoder head (the recommended model) and trains like eager', async () => {
  const [n, layers, width] = [256, 7, 512]
  const data = new Float32Array(n * layers * width)
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.013) + (Math.floor(i / (layers * width)) % 8) * 0.05
  const labels = Int32Array.from({ length: n }, (_, i) => i % 8)
  const run = async (cudaGraph) => {
    const warnings = []
    const r = await lib.train({
      model: 'encoder',
      train: { embedding: { data, shape: [n, layers, width] }, labels },
      epochs: 3,
      device: 'cuda',
      seed: 3,
      cudaGraph,
      onProgress: (e) => e.type === 'warning' && warnings.push(e.message),
    })
    return { r, warnings }
  }
  const eager = await run(false)
  const graphed = await run(true)
  assert.deepEqual(graphed.warnings, [])
  assert.equal(graphed.r.graphedWindows, 3 * 8 - 2, '8 windows an epoch, 2 eager before the capture')
  for (const [a, b] of eager.r.history.map((h, i) => [h.trainLoss, graphed.r.history[i].trainLoss])) {
    assert.ok(Number.isFinite(b) && Math.abs(a - b) <= 2e-2 * Math.abs(a), `eager ${a} vs graphed ${b}`)
  }
  console.log(
    `  encoder head (${eager.r.precision}): eager ${eager.r.microStepsPerSecond.toFixed(0)}, graphed ${graphed.r.microStepsPerSecond.toFixed(0)} micro-steps/s`,
  )
})

test('an NCCL process group runs each collective data-parallel training uses (self-test, a world of one)', async () => {
  const { processGroupSelfTest } = await import(new URL('dev.js', main).href)
  const r = await processGroupSelfTest('nccl', 'cuda')
  assert.equal(r.backend, 'nccl')
  assert.equal(r.device, 'cuda:0')
  assert.deepEqual(
    [r.sum, r.max, r.broadcast, r.gradient],
    [
      [1, 2, 3],
      [1, 2, 3],
      [1, 2, 3],
      [2, 4, 6],
    ],
  )
})

/** Trains `options` on synthetic rows in `ranks` processes (Gloo, all on cuda:0) or alone; the result rows. */
async function trainRanks(options, ranks) {
  const dir = mkdtempSync(join(tmpdir(), 'ep-gpu-ddp-'))
  const worker = join(dir, 'worker.mjs')
  writeFileSync(
    worker,
    `import { train, worldFromEnv } from ${JSON.stringify(main)}
const o = JSON.parse(process.env.JOB)
const [n, a, b] = o.shape
const data = new Float32Array(n * a * b)
for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.013) + (Math.floor(i / (a * b)) % 8) * 0.05
const labels = Int32Array.from({ length: n }, (_, i) => i % 8)
const set = { [o.input]: { data, shape: o.shape }, labels }
const r = await train({ ...o.options, train: set, val: set, distributed: process.env.WORLD_SIZE ? 'env' : undefined })
console.log(JSON.stringify({ dp: r.dataParallel, history: r.history }))`,
  )
  const { spawn } = await import('node:child_process')
  const { createServer } = await import('node:net')
  const port = await new Promise((done) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => done(port))
    })
  })
  const runs = Array.from({ length: ranks }, (_, rank) => {
    const world =
      ranks > 1
        ? { RANK: rank, WORLD_SIZE: ranks, LOCAL_RANK: rank, LOCAL_WORLD_SIZE: ranks, MASTER_ADDR: '127.0.0.1', MASTER_PORT: port }
        : {}
    const child = spawn(process.execPath, [worker], {
      env: {
        ...process.env,
        ...world,
        JOB: JSON.stringify({ ...options, options: { ...options.options, checkpointDir: join(dir, 'ckpt') } }),
      },
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    return new Promise((done) => child.on('close', (code) => done({ code, out, err })))
  })
  const results = await Promise.all(runs)
  for (const r of results) assert.equal(r.code, 0, r.err.slice(-2000))
  return { dir: join(dir, 'ckpt'), rows: results.map((r) => JSON.parse(r.out.trim().split('\n').pop())) }
}

function safetensors(file) {
  const bytes = readFileSync(file)
  const length = Number(bytes.readBigUInt64LE(0))
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString())
  const out = {}
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__' || t.dtype !== 'F32') continue
    const part = bytes.subarray(8 + length + t.data_offsets[0], 8 + length + t.data_offsets[1])
    out[name] = new Float32Array(part.buffer.slice(part.byteOffset, part.byteOffset + part.byteLength))
  }
  return out
}

test('data-parallel on CUDA over Gloo: 2 ranks × 8 on cuda:0 train the encoder head as 1 process × 16', async () => {
  const options = { epochs: 3, accumulation: 2, amp: 'off', seed: 3, model: 'encoder', preset: 'reference', encoderHead: { dropout: 0 } }
  const job = (batchSize, extra) => ({
    input: 'embedding',
    shape: [49, 7, 512],
    options: { ...options, batchSize, device: 'cuda:0', ...extra },
  })
  const alone = await trainRanks(job(16), 1)
  const pair = await trainRanks(job(8, { distributedBackend: 'gloo', checkReplicas: true }), 2)
  assert.equal(pair.rows[0].dp.backend, 'gloo')
  const [a, b] = [safetensors(join(alone.dir, 'last.safetensors')), safetensors(join(pair.dir, 'last.safetensors'))]
  let worst = 0
  for (const [name, x] of Object.entries(a)) {
    const diff = x.reduce((m, v, i) => Math.max(m, Math.abs(v - b[name][i])), 0)
    const size = x.reduce((m, v) => Math.max(m, Math.abs(v)), 1e-12)
    worst = Math.max(worst, diff / size)
  }
  assert.ok(worst <= 1e-5, `worst relative difference ${worst}`)
  console.log(`  encoder head on 2 ranks (Gloo, cuda:0): within ${worst.toExponential(1)} of one process`)
})

test('data-parallel on CUDA over Gloo: the CNN with synchronised batch norm trains, replicas identical every step', async () => {
  const options = {
    model: 'audio',
    preset: 'reference',
    amp: 'off',
    epochs: 2,
    batchSize: 8,
    device: 'cuda:0',
    audio: { channels: [8, 16, 16, 16], hidden: [32, 16], dropout: 0 },
  }
  const { rows } = await trainRanks(
    { input: 'mel', shape: [40, 64, 128], options: { ...options, distributedBackend: 'gloo', checkReplicas: true } },
    2,
  )
  assert.equal(rows[0].dp.syncBatchNorm, true)
  assert.ok(rows[0].history.every((h) => Number.isFinite(h.trainLoss)))
  assert.equal(rows[0].history.at(-1).trainLoss, rows[1].history.at(-1).trainLoss)
})
