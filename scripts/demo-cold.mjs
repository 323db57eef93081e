#!/usr/bin/env node
// Times the quick demo's pipeline (recommended defaults, stratified 80/20 seed 42 of all clips) with
// an empty feature cache, so encoder states and speed copies are extracted inside the timing.
// Run it under `/usr/bin/time -v` for the peak RSS.
//   node scripts/demo-cold.mjs [--out DIR]
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { findRavdess } from '../dist/dev.js'
import { trainPipeline } from '../dist/index.js'

const { values } = parseArgs({ options: { out: { type: 'string', default: join('runs', 'demo-cold') } } })
const data = findRavdess()
if (!data) {
  console.error('RAVDESS not found: set RAVDESS_DIR')
  process.exit(1)
}
const cacheDir = mkdtempSync(join(tmpdir(), 'ep-cold-cache-'))
const t0 = performance.now()
const r = await trainPipeline({ data, out: values.out, cacheDir })
const seconds = (performance.now() - t0) / 1000
rmSync(cacheDir, { recursive: true, force: true })
const test = r.models.encoder?.test
console.log(
  JSON.stringify({ seconds, stageSeconds: r.stageSeconds, accuracy: test?.accuracy, weightedF1: test?.weightedF1, split: r.split }),
)
