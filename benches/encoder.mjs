#!/usr/bin/env node
// Encoder-branch benchmark: pooled Whisper-encoder states per clip (log-mel + encoder + pooling) in
// emotion-pipeline against Hugging Face transformers' WhisperFeatureExtractor + WhisperEncoder (PyTorch,
// same weights) on the same machine, in one run. Both on 30 s padded input (the only input the
// transformers encoder takes); ours also on each clip's own length (its default). Prints JSON.
//
//   node benches/encoder.mjs [--data DIR] [--clips 16] [--encoder whisper-base] [--device cpu]
import { execFileSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { decodeAudio, deviceInfo, extractEmbeddings, resolveEncoder } from '../dist/index.js'
import { audioFiles, NO_REFERENCE, referencePython } from './python.mjs'

const { values } = parseArgs({
  options: {
    data: { type: 'string', default: process.env.RAVDESS_DIR ?? resolve(import.meta.dirname, '../../shared/data/ravdess') },
    clips: { type: 'string', default: '16' },
    encoder: { type: 'string', default: 'whisper-base' },
    device: { type: 'string', default: 'cpu' },
  },
})

const all = audioFiles(values.data).sort()
if (all.length === 0) {
  console.error(`no audio under ${values.data}: set --data or RAVDESS_DIR`)
  process.exit(1)
}
// Clips spread over the whole dataset (every k-th), decoded and resampled once for both sides.
const n = Math.min(Number(values.clips), all.length)
const files = Array.from({ length: n }, (_, i) => all[Math.floor((i * all.length) / n)])
const waves = []
for (const f of files) waves.push((await decodeAudio(f, { sampleRate: 16000 })).samples)
const audioSeconds = waves.reduce((s, w) => s + w.length / 16000, 0)
const inputs = waves.map((samples) => ({ samples, sampleRate: 16000 }))

async function ours(input, precision = 'fp32') {
  const options = { encoder: values.encoder, input, device: values.device, precision, strict: true }
  await extractEmbeddings(inputs.slice(0, 2), options) // warm-up (model load, allocator)
  const t0 = performance.now()
  const out = await extractEmbeddings(inputs, options)
  return { seconds: (performance.now() - t0) / 1000, shape: out.shape, precision: out.precision }
}

const padded = await ours('padded')
const clip = await ours('clip')
// What `precision: 'auto'` runs: fp16 on CUDA, bf16 on a CPU with native bf16 (else fp32 again).
const clipAuto = await ours('clip', 'auto')
const result = {
  machine: { cpu: cpus()[0]?.model, cores: cpus().length, device: values.device, libtorch: deviceInfo().torchVersion },
  encoder: values.encoder,
  clips: n,
  meanClipSeconds: audioSeconds / n,
  ours: {
    paddedClipsPerSecond: n / padded.seconds,
    clipLengthClipsPerSecond: n / clip.seconds,
    clipLengthAutoPrecisionClipsPerSecond: n / clipAuto.seconds,
    autoPrecision: clipAuto.precision,
    // The model load is part of each call; the warm-up call paid for the page cache.
    shape: padded.shape,
  },
}
const python = referencePython()
if (python && values.device === 'cpu') {
  const dir = tmpdir()
  const flat = new Float32Array(waves.reduce((a, w) => a + w.length, 0))
  let offset = 0
  for (const w of waves) {
    flat.set(w, offset)
    offset += w.length
  }
  writeFileSync(join(dir, 'ep-encoder-bench.f32'), flat)
  const request = join(dir, 'ep-encoder-bench.json')
  const model = join(resolveEncoder(values.encoder), 'model.bin')
  writeFileSync(
    request,
    JSON.stringify({
      model,
      waves: join(dir, 'ep-encoder-bench.f32'),
      lengths: waves.map((w) => w.length),
      out: join(dir, 'ep-encoder-bench'),
      bench: true,
    }),
  )
  const script = resolve(import.meta.dirname, 'reference', 'whisper_encoder.py')
  const reference = JSON.parse(execFileSync(python, [script, request], { encoding: 'utf8' }).trim().split('\n').pop())
  result.pytorch = { paddedClipsPerSecond: reference.clipsPerSecond, encoderOnlyClipsPerSecond: reference.encoderOnlyClipsPerSecond }
  result.ratioPaddedVsPytorch = result.ours.paddedClipsPerSecond / reference.clipsPerSecond
  result.ratioClipLengthVsPytorchPadded = result.ours.clipLengthClipsPerSecond / reference.clipsPerSecond
} else {
  result.pytorch = python ? 'skipped: the PyTorch reference runs on the CPU only here' : NO_REFERENCE
}
console.log(JSON.stringify(result, null, 1))
