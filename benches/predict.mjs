#!/usr/bin/env node
// Inference speed: latency of one 3 s clip at batch 1 (warm), clips/s at batch 64 against the encoder
// alone on the same clips (`extractEmbeddings`, the model's precision), and `timeline`'s real-time
// factor and peak RSS on a 1 h recording (real clips tiled, a WAV on disk, streamed) against a 30 s one,
// each in a fresh process; for the default (encoder) model and the CNN. Then the same model exported to
// ONNX in onnxruntime-node (CPU, its default threads): file size, a 3 s clip at batch 1, and 64 clips cut
// to 3 s in one batch against native predict on the same 64 samples. Prints JSON.
//
//   node benches/predict.mjs [--data DIR] [--device cpu] [--hour 3600] [--out FILE] [--no-timeline]
import { execFileSync } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { decodeAudio, extractEmbeddings, loadRun } from '../dist/index.js'
import { cnnRun, defaultData, encoderRun } from './models.mjs'
import { concatenate } from './recording.mjs'

const { values } = parseArgs({
  options: {
    data: { type: 'string', default: defaultData },
    device: { type: 'string', default: 'cpu' },
    hour: { type: 'string', default: '3600' },
    out: { type: 'string' },
    'no-timeline': { type: 'boolean' },
    // Internal: one timeline in this process, printing its figures.
    'timeline-child': { type: 'string' },
    run: { type: 'string' },
  },
})

/**
 * A /proc/self/status figure in MB: VmRSS now, VmHWM this process's peak. Not `resourceUsage().maxRSS`:
 * Linux carries ru_maxrss over fork and exec, so a child would report the parent's peak.
 */
function statusMB(field) {
  return Number(readFileSync('/proc/self/status', 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'))[1]) / 1024
}

if (values['timeline-child']) {
  const model = await loadRun(values.run, { device: values.device })
  // The resident set sampled every 5 ms while the native side works (it runs off the event loop): its
  // peak in each quarter of the recording tells a leak (rising quarters) from one batch's transient.
  const quarters = [0, 0, 0, 0]
  let at = 0
  const sampler = setInterval(() => {
    const q = Math.min(3, Math.floor(at * 4))
    quarters[q] = Math.max(quarters[q], statusMB('VmRSS'))
  }, 5)
  const started = performance.now()
  const file = values['timeline-child']
  const total = statSync(file).size / (2 * 16000) // seconds: writeRecording's 16-bit mono at 16 kHz
  const t = await model.timeline(file, { device: values.device, onProgress: (s) => (at = s / total) })
  const seconds = (performance.now() - started) / 1000
  clearInterval(sampler)
  console.log(
    JSON.stringify({
      audioSeconds: t.seconds,
      seconds,
      realTimeFactor: t.seconds / seconds,
      windows: t.segments.length,
      maxRssMB: statusMB('VmHWM'),
      peakRssByQuarterMB: quarters.map(Math.round),
      endRssMB: statusMB('VmRSS'),
    }),
  )
  process.exit(0)
}

const ORT_VERSION = JSON.parse(
  readFileSync(join(import.meta.dirname, '..', 'node_modules', 'onnxruntime-node', 'package.json'), 'utf8'),
).version
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

/** A mono 16-bit WAV of `seconds`, real clips with 1 s of room tone between them, tiled; written in pieces. */
function writeRecording(path, clips, rate, seconds) {
  const { samples } = concatenate(clips, { rate, gapSeconds: 1, snrDb: 30, noise: 'room' })
  const total = Math.round(seconds * rate)
  const fd = openSync(path, 'w')
  const header = Buffer.alloc(44)
  header.write('RIFF', 0)
  header.writeUInt32LE(36 + total * 2, 4)
  header.write('WAVEfmt ', 8)
  header.writeUInt32LE(16, 16)
  header.writeUInt16LE(1, 20)
  header.writeUInt16LE(1, 22)
  header.writeUInt32LE(rate, 24)
  header.writeUInt32LE(rate * 2, 28)
  header.writeUInt16LE(2, 32)
  header.writeUInt16LE(16, 34)
  header.write('data', 36)
  header.writeUInt32LE(total * 2, 40)
  writeSync(fd, header)
  const piece = Buffer.alloc(samples.length * 2)
  samples.forEach((x, i) => {
    piece.writeInt16LE(Math.max(-32768, Math.min(32767, Math.round(x * 32767))), 2 * i)
  })
  for (let written = 0; written < total; written += samples.length) writeSync(fd, piece, 0, Math.min(samples.length, total - written) * 2)
  closeSync(fd)
}

async function measure(name, runDir, clips, paths, rate, files) {
  const model = await loadRun(runDir, { device: values.device })
  const three = { samples: clips[0].subarray(0, 3 * rate), sampleRate: rate }
  for (let i = 0; i < 3; i++) await model.predict([three], { device: values.device })
  const latency = []
  for (let i = 0; i < 20; i++) {
    const t = performance.now()
    await model.predict([three], { device: values.device, strict: true })
    latency.push(performance.now() - t)
  }
  // Batch 64 and the encoder alone on the same clips, alternated three times; the median of each.
  const batch = paths.slice(0, 64)
  const encoder = model.meta.spec.inputs.embedding?.encoder
  const embed = encoder && {
    encoder: model.encoderDir,
    input: encoder.input,
    pooling: encoder.pooling,
    precision: encoder.precision,
    device: values.device,
    strict: true,
  }
  await model.predict(batch.slice(0, 4), { device: values.device })
  if (embed) await extractEmbeddings(batch.slice(0, 4), embed)
  const rates = { predict: [], encoder: [] }
  for (let k = 0; k < 3; k++) {
    let t = performance.now()
    await model.predict(batch, { device: values.device, strict: true })
    rates.predict.push(batch.length / ((performance.now() - t) / 1000))
    if (embed) {
      t = performance.now()
      await extractEmbeddings(batch, embed)
      rates.encoder.push(batch.length / ((performance.now() - t) / 1000))
    }
  }
  const row = {
    model: name,
    kind: model.meta.spec.kind,
    latency3sMs: median(latency),
    latency3sMinMs: Math.min(...latency),
    batch64ClipsPerSecond: median(rates.predict),
  }
  if (embed) {
    row.encoderClipsPerSecond = median(rates.encoder)
    row.batchVsEncoder = row.batch64ClipsPerSecond / row.encoderClipsPerSecond
    row.precision = encoder.precision
  }
  Object.assign(row, await onnxRow(model, paths))
  for (const [label, file] of Object.entries(values['no-timeline'] ? {} : files)) {
    const out = execFileSync(
      process.execPath,
      [import.meta.filename, '--timeline-child', file, '--run', runDir, '--device', values.device],
      { encoding: 'utf8', maxBuffer: 2 ** 24 },
    )
    row[`timeline${label}`] = JSON.parse(out.trim().split('\n').pop())
  }
  if (row.timeline1h) row.rssGrowthMB = row.timeline1h.maxRssMB - row.timeline30s.maxRssMB
  console.error(JSON.stringify(row))
  return row
}

/** The model exported to ONNX in onnxruntime-node against native predict, on the same 3 s samples. */
async function onnxRow(model, paths) {
  const exported = await model.export({ out: join(scratch, `${model.meta.spec.kind}.onnx`) })
  const rate = exported.sampleRate
  const n = 3 * rate
  const crops = []
  for (const p of paths.slice(0, 64)) {
    const crop = new Float32Array(n)
    crop.set((await decodeAudio(p, { sampleRate: rate })).samples.subarray(0, n))
    crops.push(crop)
  }
  const ort = await import('onnxruntime-node')
  const session = await ort.InferenceSession.create(exported.path)
  const run = (k) => {
    const batch = new Float32Array(k * n)
    for (let i = 0; i < k; i++) batch.set(crops[i], i * n)
    return session.run({ samples: new ort.Tensor('float32', batch, [k, n]) })
  }
  for (let i = 0; i < 3; i++) await run(1)
  const latency = []
  for (let i = 0; i < 20; i++) {
    const t = performance.now()
    await run(1)
    latency.push(performance.now() - t)
  }
  const inputs = crops.map((samples) => ({ samples, sampleRate: rate }))
  const rates = { onnx: [], native: [] }
  for (let k = 0; k < 3; k++) {
    let t = performance.now()
    await run(crops.length)
    rates.onnx.push(crops.length / ((performance.now() - t) / 1000))
    t = performance.now()
    await model.predict(inputs, { device: values.device, strict: true })
    rates.native.push(crops.length / ((performance.now() - t) / 1000))
  }
  return {
    onnx: {
      megabytes: exported.bytes / 1e6,
      latency3sMs: median(latency),
      batch64ClipsPerSecond: median(rates.onnx),
      nativeBatch64ClipsPerSecond: median(rates.native),
      runtime: `onnxruntime-node ${ORT_VERSION}`,
    },
  }
}

const encoderDir = await encoderRun(values.data)
const cnnDir = await cnnRun(values.data)
const split = JSON.parse(readFileSync(join(encoderDir, 'split.json'), 'utf8'))
const paths = split.test.slice(0, 64).map((i) => i.path)
const rate = 16000
const clips = []
for (const p of paths.slice(0, 40)) clips.push((await decodeAudio(p, { sampleRate: rate })).samples)
// The recordings and exported files live in one scratch folder, removed at the end (the hour is 115 MB).
const scratch = mkdtempSync(join(tmpdir(), 'ep-bench-predict-'))
const files = { '30s': join(scratch, '30s.wav'), '1h': join(scratch, '1h.wav') }
let rows
try {
  writeRecording(files['30s'], clips, rate, 30)
  writeRecording(files['1h'], clips, rate, Number(values.hour))
  rows = [
    await measure('default (encoder)', encoderDir, clips, paths, rate, files),
    await measure('CNN (audio)', cnnDir, clips, paths, rate, files),
  ]
} finally {
  rmSync(scratch, { recursive: true, force: true })
}
const result = { machine: { cpu: cpus()[0]?.model, cores: cpus().length, device: values.device }, hourSeconds: Number(values.hour), rows }
console.log(JSON.stringify(result, null, 1))
if (values.out) writeFileSync(values.out, `${JSON.stringify(result, null, 1)}\n`)
