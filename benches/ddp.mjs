#!/usr/bin/env node
// Data-parallel training throughput: the reference audio CNN (4.1 M parameters) and the default
// encoder model's head (on whisper-base's 7 × 512 pooled states) trained by 1 process and by N
// processes on this machine over c10d's Gloo (127.0.0.1), each rank with its share of the cores.
// Prints JSON: clips/s of the timed second epoch, the gradient all-reduce's seconds and bytes per
// optimiser step, and the scaling efficiency against one process. Inputs are synthetic (speed does
// not depend on the values); batch 16 per rank, accumulation 2, fp32 (as benches/train.mjs).
//
//   node benches/ddp.mjs [--models audio,encoder] [--worlds 1,2] [--steps audio:8,encoder:200] [--device cpu] [--out FILE]
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { availableParallelism, cpus } from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const { values } = parseArgs({
  options: {
    models: { type: 'string', default: 'audio,encoder' },
    worlds: { type: 'string', default: '1,2' },
    // Micro-batches per rank and epoch (the head is small: more steps for a steady time).
    steps: { type: 'string', default: 'audio:8,encoder:200' },
    batch: { type: 'string', default: '16' },
    accumulation: { type: 'string', default: '2' },
    device: { type: 'string', default: 'cpu' },
    out: { type: 'string' },
    // Internal: run as one rank (the parent sets torchrun's variables).
    worker: { type: 'string' },
  },
})
const batchSize = Number(values.batch)
const accumulation = Number(values.accumulation)
const stepsOf = (model) => {
  const given = Object.fromEntries(values.steps.split(',').map((p) => (p.includes(':') ? p.split(':') : [model, p])))
  return Number(given[model] ?? 8)
}

/** Synthetic inputs for `model`: `steps` micro-batches per rank per epoch over the whole world. */
function inputs(model, worldSize) {
  const n = batchSize * stepsOf(model) * worldSize
  const shape = model === 'audio' ? [n, 128, 280] : [n, 7, 512]
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1))
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.001) * (model === 'audio' ? 20 : 1) - (model === 'audio' ? 40 : 0)
  const set = { labels: Int32Array.from({ length: n }, (_, i) => i % 8) }
  set[model === 'audio' ? 'mel' : 'embedding'] = { data, shape }
  return set
}

async function worker(model) {
  const { train, worldFromEnv } = await import('../dist/index.js')
  const world = worldFromEnv()
  const set = inputs(model, world?.worldSize ?? 1)
  const seconds = []
  const result = await train({
    model,
    preset: 'reference',
    train: set,
    epochs: 2,
    batchSize,
    accumulation,
    amp: 'off',
    device: values.device,
    // The encoder head defaults to 1 thread (faster alone); here every rank takes its share.
    threads: Number(process.env.OMP_NUM_THREADS),
    distributed: world ? 'env' : undefined,
    onProgress: (e) => {
      if (e.type === 'epochEnd') seconds.push(e.record.seconds)
    },
  })
  const dp = result.dataParallel
  console.log(
    JSON.stringify({
      rank: world?.rank ?? 0,
      clips: set.labels.length,
      // Epoch 1 warms up (oneDNN primitives); epoch 2 is timed.
      seconds: seconds[1],
      threads: result.threads,
      steps: result.optimizerSteps,
      allReduceMsPerStep: dp ? (1000 * dp.allReduceSeconds) / dp.reductions : 0,
      bytesPerStep: dp?.bytesPerStep ?? 0,
    }),
  )
}

async function freePort() {
  return new Promise((done) => {
    const server = createServer()
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => done(port))
    })
  })
}

/** `worldSize` ranks of `model`, each with cores / worldSize threads (what `--nproc-per-node` gives). */
async function measure(model, worldSize) {
  const port = await freePort()
  const threads = Math.max(1, Math.floor(availableParallelism() / worldSize))
  const ranks = await Promise.all(
    Array.from({ length: worldSize }, (_, rank) => {
      const env = { ...process.env, OMP_NUM_THREADS: String(threads) }
      if (worldSize > 1)
        Object.assign(env, {
          RANK: `${rank}`,
          WORLD_SIZE: `${worldSize}`,
          LOCAL_RANK: `${rank}`,
          LOCAL_WORLD_SIZE: `${worldSize}`,
          MASTER_ADDR: '127.0.0.1',
          MASTER_PORT: `${port}`,
        })
      const args = [fileURLToPath(import.meta.url), '--worker', model, '--steps', `${stepsOf(model)}`, '--batch', `${batchSize}`]
      const child = spawn(process.execPath, [...args, '--accumulation', `${accumulation}`, '--device', values.device], {
        env,
        stdio: ['ignore', 'pipe', 'inherit'],
      })
      let out = ''
      child.stdout.on('data', (d) => {
        out += d
      })
      return new Promise((done, fail) =>
        child.on('exit', (code) =>
          code === 0 ? done(JSON.parse(out.trim().split('\n').pop())) : fail(new Error(`rank ${rank} exited ${code}`)),
        ),
      )
    }),
  )
  const seconds = Math.max(...ranks.map((r) => r.seconds))
  return {
    model,
    worldSize,
    threadsPerRank: threads,
    clipsPerSecond: ranks[0].clips / seconds,
    optimiserStepsPerSecond: ranks[0].clips / (batchSize * worldSize * accumulation) / seconds,
    allReduceMsPerStep: Math.max(...ranks.map((r) => r.allReduceMsPerStep)),
    bytesPerStep: ranks[0].bytesPerStep,
  }
}

if (values.worker) {
  await worker(values.worker)
} else {
  const rows = []
  for (const model of values.models.split(',')) {
    for (const worldSize of values.worlds.split(',').map(Number)) {
      const row = await measure(model, worldSize)
      const alone = rows.find((r) => r.model === model && r.worldSize === 1)
      if (alone) row.efficiency = row.clipsPerSecond / ((alone.clipsPerSecond * (worldSize * row.threadsPerRank)) / alone.threadsPerRank)
      rows.push(row)
      console.error(JSON.stringify(row))
    }
  }
  const result = {
    machine: { cpu: cpus()[0]?.model, cores: availableParallelism(), device: values.device },
    backend: 'gloo',
    batchPerRank: batchSize,
    accumulation,
    rows,
  }
  const text = JSON.stringify(result, null, 1)
  console.log(text)
  if (values.out) writeFileSync(values.out, `${text}\n`)
}
