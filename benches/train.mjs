#!/usr/bin/env node
// Training-speed benchmark: the reference audio CNN and loop (batch 16, accumulation 2) in
// emotion-pipeline and in Python PyTorch on the same device, in one run. Prints JSON with the ratio.
//
//   node benches/train.mjs [--device cpu|cuda] [--steps 40] [--amp auto|fp16|bf16|off]
import { execFileSync } from 'node:child_process'
import { cpus } from 'node:os'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { deviceInfo, train } from '../dist/index.js'
import { referencePython } from './python.mjs'

const { values } = parseArgs({
  options: {
    device: { type: 'string', default: 'cpu' },
    steps: { type: 'string', default: '40' },
    amp: { type: 'string', default: 'auto' },
    batch: { type: 'string', default: '16' },
    accumulation: { type: 'string', default: '2' },
  },
})
const device = values.device
const batchSize = Number(values.batch)
const accumulation = Number(values.accumulation)
const steps = Number(values.steps)

// Random log-mel-shaped inputs: speed does not depend on the values.
const n = batchSize * steps
const data = new Float32Array(n * 128 * 280)
for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.001) * 20 - 40
const labels = Int32Array.from({ length: n }, (_, i) => i % 8)
// Epoch 1 includes warm-up (cuDNN autotuning); epoch 2 is the timed one.
const epochSeconds = []
let precision = 'fp32'
await train({
  train: { mel: { data, shape: [n, 128, 280] }, labels },
  epochs: 2,
  batchSize,
  accumulation,
  device,
  amp: values.amp,
  onProgress: (e) => {
    if (e.type === 'start') precision = e.precision
    if (e.type === 'epochEnd') epochSeconds.push(e.record.seconds)
  },
})
const ours = steps / epochSeconds[1]

const python = referencePython()
let reference = null
if (python) {
  const script = resolve(import.meta.dirname, 'reference', 'train_bench.py')
  const amp = values.amp === 'off' ? 'off' : values.amp === 'bf16' ? 'bf16' : 'fp16'
  reference = JSON.parse(
    execFileSync(python, [script, device, String(steps), String(batchSize), String(accumulation), amp], { encoding: 'utf8' }),
  )
}
const info = deviceInfo()
console.log(
  JSON.stringify(
    {
      benchmark: 'train-audio-cnn',
      machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, device, gpu: info.devices[0]?.name ?? null },
      batchSize,
      accumulation,
      microSteps: steps,
      emotionPipeline: { microStepsPerSecond: +ours.toFixed(3), precision },
      pytorch: reference && {
        microStepsPerSecond: +reference.microStepsPerSecond.toFixed(3),
        amp: reference.amp,
        torch: reference.torch,
        threads: reference.threads,
      },
      ratio: reference && +(ours / reference.microStepsPerSecond).toFixed(3),
    },
    null,
    2,
  ),
)
