#!/usr/bin/env node
// Front-end benchmark: decode + resample + log-mel, and log-mel alone, emotion-pipeline against
// soundfile + torchaudio on the same device with the same parameters, in one run, plus ours with the
// caching CPU allocator off (a child process with EMOTION_PIPELINE_CPU_CACHE=off). Prints JSON.
//
// Also the log-mel rate with the waveforms already on the device (decode and transfer excluded, the
// transfer timed separately) at --device-batch clips (default 256).
//
//   node benches/mel.mjs [--data DIR] [--clips N] [--device cpu|cuda] [--batch 64] [--repeats 3] [--device-batch 256]
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { cpus, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { timeMelOnDevice } from '../dist/dev.js'
import { decodeAudio, deviceInfo, extractMel } from '../dist/index.js'
import { audioFiles, NO_REFERENCE, referencePython } from './python.mjs'

const { values } = parseArgs({
  options: {
    data: { type: 'string', default: process.env.RAVDESS_DIR ?? resolve(import.meta.dirname, '../../shared/data/ravdess') },
    clips: { type: 'string', default: '1200' },
    device: { type: 'string', default: 'cpu' },
    batch: { type: 'string', default: '64' },
    repeats: { type: 'string', default: '3' },
    'device-batch': { type: 'string', default: '256' },
    // Internal: time only ours and print the seconds (the cache-off child run).
    'ours-only': { type: 'boolean', default: false },
  },
})

const files = audioFiles(values.data).sort().slice(0, Number(values.clips))
if (files.length === 0) {
  console.error(`no audio under ${values.data}: set --data or RAVDESS_DIR`)
  process.exit(1)
}
const batchSize = Number(values.batch)
const repeats = Number(values.repeats)
const device = values.device

// The same decoded 3 s clips feed both libraries' mel-only timing.
const N = 144000
let audioSeconds = 0
const waves = []
const fitted = new Float32Array(files.length * N)
for (const [i, f] of files.entries()) {
  const a = await decodeAudio(f, { sampleRate: 48000 })
  audioSeconds += a.durationSeconds
  const clip = new Float32Array(N)
  clip.set(a.samples.subarray(0, N))
  fitted.set(clip, i * N)
  waves.push({ samples: clip, sampleRate: 48000 })
}
const clipSeconds = files.length * 3

async function best(fn) {
  await fn() // warm-up
  let min = Infinity
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now()
    await fn()
    min = Math.min(min, (performance.now() - t0) / 1000)
  }
  return min
}

const oursFull = await best(() => extractMel(files, { device, batchSize }))
const oursMel = await best(() => extractMel(waves, { device, batchSize }))
// The within-0.01 dB option: power as re² + im² (not bit-identical to torchaudio).
const oursMelFast = await best(() => extractMel(waves, { device, batchSize, mel: { fastPower: true } }))
if (values['ours-only']) {
  console.log(JSON.stringify({ oursFull, oursMel }))
  process.exit(0)
}
let cacheOff = null
if (!device.startsWith('cuda')) {
  const args = [fileURLToPath(import.meta.url), '--ours-only', '--data', values.data, '--clips', values.clips]
  args.push('--device', device, '--batch', values.batch, '--repeats', values.repeats)
  const env = { ...process.env, EMOTION_PIPELINE_CPU_CACHE: 'off' }
  cacheOff = JSON.parse(execFileSync(process.execPath, args, { encoding: 'utf8', env }))
}

const onDevice = timeMelOnDevice({ device, batch: Number(values['device-batch']), repeats })
const python = referencePython()
let reference = null
if (python) {
  const scratch = mkdtempSync(join(tmpdir(), 'ep-bench-mel-'))
  try {
    const listing = join(scratch, 'files.txt')
    const wavesPath = join(scratch, 'waves.f32')
    writeFileSync(listing, files.join('\n'))
    writeFileSync(wavesPath, fitted)
    const script = resolve(import.meta.dirname, 'reference', 'mel_bench.py')
    const args = [script, listing, wavesPath, device, String(batchSize), String(repeats)]
    reference = JSON.parse(execFileSync(python, args, { encoding: 'utf8' }))
  } finally {
    rmSync(scratch, { recursive: true, force: true })
  }
}

const rate = (seconds) => ({
  seconds: +seconds.toFixed(3),
  clipsPerSecond: +(files.length / seconds).toFixed(1),
  audioHoursPerSecond: +(audioSeconds / 3600 / seconds).toFixed(4),
})
const info = deviceInfo()
const out = {
  benchmark: 'mel-front-end',
  machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, device, gpu: info.devices[0]?.name ?? null },
  clips: files.length,
  audioHours: +(audioSeconds / 3600).toFixed(4),
  clipSeconds,
  batchSize,
  repeats,
  emotionPipeline: { decodeResampleMel: rate(oursFull), melOnly: rate(oursMel), melOnlyFastPower: rate(oursMelFast) },
  emotionPipelineCpuCacheOff: cacheOff && {
    decodeResampleMel: rate(cacheOff.oursFull),
    melOnly: rate(cacheOff.oursMel),
  },
  // Waveforms already on the device: the front end alone, then the host-to-device copy of one batch.
  onDevice: {
    batch: onDevice.batch,
    secondsPerBatch: +onDevice.secondsPerBatch.toFixed(5),
    audioHoursPerSecond: +onDevice.audioHoursPerSecond.toFixed(2),
    transferSecondsPerBatch: +onDevice.transferSecondsPerBatch.toFixed(5),
  },
  torchaudioSkipped: reference ? null : NO_REFERENCE,
  torchaudio: reference && {
    decodeResampleMel: reference.decodeMelSeconds === null ? 'soundfile missing: not timed' : rate(reference.decodeMelSeconds),
    melOnly: rate(reference.melSeconds),
    torchThreads: reference.threads,
  },
  speedup: reference && {
    decodeResampleMel: reference.decodeMelSeconds === null ? null : +(reference.decodeMelSeconds / oursFull).toFixed(2),
    melOnly: +(reference.melSeconds / oursMel).toFixed(2),
    melOnlyFastPower: +(reference.melSeconds / oursMelFast).toFixed(2),
  },
}
console.log(JSON.stringify(out, null, 2))
