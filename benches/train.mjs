#!/usr/bin/env node
// Training-speed benchmark: the reference audio CNN and loop (batch 16, accumulation 2) in
// emotion-pipeline and in Python PyTorch on the same device, in one run, in every precision × memory
// format, plus our default configuration with the caching CPU allocator off (a child process with
// EMOTION_PIPELINE_CPU_CACHE=off). Prints JSON: each configuration's micro-steps/s and GFLOP/s, the
// ratios, and the machine's peak. A `+graph` configuration (CUDA) replays the step from CUDA graphs
// (`cudaGraph`); its PyTorch row is the same precision and format in eager mode, the baseline.
// `+nobench` turns cuDNN's benchmark mode off (`cudnnBenchmark: false`) for that row.
//
//   node benches/train.mjs [--device cpu|cuda] [--steps 40] [--configs fp32,fp32+cl,bf16,bf16+cl,fp16+cl+graph]
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { cpus } from 'node:os'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { deviceInfo, train } from '../dist/index.js'
import { NO_REFERENCE, referencePython } from './python.mjs'

const { values } = parseArgs({
  options: {
    device: { type: 'string', default: 'cpu' },
    steps: { type: 'string', default: '40' },
    batch: { type: 'string', default: '16' },
    accumulation: { type: 'string', default: '2' },
    configs: { type: 'string' },
    // Internal: print only our rows (the cache-off child run).
    'ours-only': { type: 'boolean', default: false },
  },
})
const device = values.device
const cuda = device.startsWith('cuda')
const batchSize = Number(values.batch)
const accumulation = Number(values.accumulation)
const steps = Number(values.steps)
const half = cuda ? 'fp16' : 'bf16'
const configs = (values.configs ?? `fp32,fp32+cl,${half},${half}+cl`).split(',').map((name) => {
  const [amp, ...flags] = name.split('+')
  return {
    name,
    amp,
    format: flags.includes('cl') ? 'channels-last' : 'contiguous',
    graph: flags.includes('graph'),
    cudnnBenchmark: !flags.includes('nobench'),
  }
})

// FLOPs of one clip, forward + backward (backward ≈ 2× forward for convs and linears): the six 3×3
// conv blocks on a 128 × 280 log-mel dominate; batch norm, pooling and the head add < 1 %.
function gflopPerClip() {
  let [h, w, cin, flops] = [128, 280, 1, 0]
  for (const c of [32, 64, 128, 256, 512, 512]) {
    flops += 2 * 9 * cin * c * h * w
    ;[h, w, cin] = [Math.floor(h / 2), Math.floor(w / 2), c]
  }
  return (3 * flops) / 1e9
}
const perClip = gflopPerClip()

/**
 * The CPU's peaks at its nominal clock (/proc/cpuinfo): fp32 FMA = cores × GHz × FLOPs per cycle
 * (AVX-512 on Intel server cores: two 512-bit FMA pipes, 64; AVX2, and AVX-512 on AMD Zen 4, which
 * splits 512-bit FMAs in two: 32; neither: 16), and with AMX the bf16 tile peak (1024 FLOPs per cycle
 * per core: one 16×32·32×16 TDPBF16PS every 16 cycles). Turbo clocks can exceed them.
 */
function cpuPeak() {
  const text = readFileSync('/proc/cpuinfo', 'utf8')
  const mhz = Math.max(...[...text.matchAll(/^cpu MHz\s*:\s*([\d.]+)/gm)].map((m) => Number(m[1])))
  const flags = ` ${text.match(/^flags\s*:(.*)$/m)?.[1] ?? ''} `
  const intel = /^vendor_id\s*:\s*GenuineIntel/m.test(text)
  const perCycle = flags.includes(' avx512f ') && intel ? 64 : flags.includes(' avx2 ') ? 32 : 16
  const ghzCores = cpus().length * (mhz / 1000)
  return {
    fp32Gflops: Math.round(ghzCores * perCycle),
    amxBf16Gflops: flags.includes(' amx_bf16 ') ? Math.round(ghzCores * 1024) : null,
    nominalMhz: mhz,
  }
}

// Random log-mel-shaped inputs: speed does not depend on the values.
const n = batchSize * steps
const data = new Float32Array(n * 128 * 280)
for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.001) * 20 - 40
const labels = Int32Array.from({ length: n }, (_, i) => i % 8)

async function ours(config) {
  // Epoch 1 includes warm-up (oneDNN primitive creation, cuDNN autotuning); epoch 2 is timed.
  const epochSeconds = []
  const warnings = []
  let precision = 'fp32'
  const result = await train({
    train: { mel: { data, shape: [n, 128, 280] }, labels },
    epochs: 2,
    batchSize,
    accumulation,
    device,
    amp: config.amp === 'fp32' ? 'off' : config.amp,
    memoryFormat: config.format,
    cudaGraph: config.graph,
    cudnnBenchmark: config.cudnnBenchmark,
    onProgress: (e) => {
      if (e.type === 'start') precision = e.precision
      if (e.type === 'epochEnd') epochSeconds.push(e.record.seconds)
      if (e.type === 'warning') warnings.push(e.message)
    },
  })
  const row = { microStepsPerSecond: steps / epochSeconds[1], precision, channelsLast: result.channelsLast, threads: result.threads }
  return config.graph ? { ...row, graphedWindows: result.graphedWindows, warnings } : row
}

const python = referencePython()
function pytorch(config) {
  if (!python) return null
  const script = resolve(import.meta.dirname, 'reference', 'train_bench.py')
  const amp = config.amp === 'fp32' ? 'off' : config.amp
  return JSON.parse(
    execFileSync(
      python,
      [script, device, String(steps), String(batchSize), String(accumulation), amp, config.format, config.cudnnBenchmark ? '1' : '0'],
      {
        encoding: 'utf8',
      },
    ),
  )
}

const round = (x, d = 3) => (x === null || x === undefined ? null : +x.toFixed(d))
const oursRow = (a) => ({
  ...a,
  microStepsPerSecond: round(a.microStepsPerSecond),
  gflops: round(a.microStepsPerSecond * batchSize * perClip, 1),
})
if (values['ours-only']) {
  const rows = []
  for (const config of configs) rows.push({ config: config.name, emotionPipeline: oursRow(await ours(config)) })
  console.log(JSON.stringify(rows))
  process.exit(0)
}
const rows = []
for (const config of configs) {
  const a = await ours(config)
  const b = pytorch(config)
  rows.push({
    config: config.name,
    emotionPipeline: oursRow(a),
    pytorch: b && {
      microStepsPerSecond: round(b.microStepsPerSecond),
      gflops: round(b.microStepsPerSecond * batchSize * perClip, 1),
      amp: b.amp,
      threads: b.threads,
      torch: b.torch,
    },
    ratio: b && round(a.microStepsPerSecond / b.microStepsPerSecond),
  })
}
const rate = (name, who) => rows.find((r) => r.config === name)?.[who]?.microStepsPerSecond ?? null
// Our default configuration (amp 'auto', memoryFormat 'auto') against PyTorch's default (fp32 eager)
// and against PyTorch's fastest configuration here.
const defaultConfig = cuda ? `${half}+cl` : deviceInfo().cpuNativeBf16 ? 'bf16+cl' : 'fp32+cl'
const oursDefault = rate(defaultConfig, 'emotionPipeline')
const pytorchFastest = Math.max(...rows.map((r) => r.pytorch?.microStepsPerSecond ?? 0)) || null
// The same default configuration with libtorch's own CPU allocator (every block back to the kernel).
let cacheOff = null
if (!cuda) {
  const args = [fileURLToPath(import.meta.url), '--ours-only', '--configs', defaultConfig, '--steps', String(steps)]
  args.push('--batch', String(batchSize), '--accumulation', String(accumulation), '--device', device)
  const env = { ...process.env, EMOTION_PIPELINE_CPU_CACHE: 'off' }
  const [row] = JSON.parse(execFileSync(process.execPath, args, { encoding: 'utf8', env }))
  cacheOff = { config: `${defaultConfig}, CPU cache off`, ...row.emotionPipeline }
}
const info = deviceInfo()
console.log(
  JSON.stringify(
    {
      benchmark: 'train-audio-cnn',
      machine: {
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model,
        device,
        gpu: info.devices[0]?.name ?? null,
        peakGflops: cuda ? null : cpuPeak(),
      },
      batchSize,
      accumulation,
      microSteps: steps,
      gflopPerClip: round(perClip, 2),
      pytorchSkipped: python ? null : NO_REFERENCE,
      rows,
      defaultConfig,
      cacheOff,
      cacheSpeedup: cacheOff && oursDefault && round(oursDefault / cacheOff.microStepsPerSecond),
      ratioVsPytorchFp32: oursDefault && rate('fp32', 'pytorch') && round(oursDefault / rate('fp32', 'pytorch')),
      ratioVsPytorchFastest: oursDefault && pytorchFastest && round(oursDefault / pytorchFastest),
      ratioVsPytorchSameConfig: oursDefault && rate(defaultConfig, 'pytorch') && round(oursDefault / rate(defaultConfig, 'pytorch')),
    },
    null,
    2,
  ),
)
