#!/usr/bin/env node
// Writes the cached Whisper-base states (bf16, clip length, mean pooling) of every clip of a speaker
// cross-validation at speeds 1, 0.9 and 1.1 as raw float32 files, with the clips' labels and speakers,
// for experiments outside the library (speaker-adversary.py). Needs the states in the feature cache
// (a cross-validation with the defaults computes them).
//
//   node scripts/experiments/dump-embeddings.mjs CV_DIR OUT_DIR
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { extractEmbeddings } from '../../dist/index.js'

const [cvDir, out] = process.argv.slice(2)
if (!out) {
  console.error('usage: node scripts/experiments/dump-embeddings.mjs CV_DIR OUT_DIR')
  process.exit(2)
}
const split = JSON.parse(readFileSync(join(cvDir, 'fold-0', 'split.json'), 'utf8'))
const items = [...split.train, ...split.val, ...split.test]
const cacheDir = join(process.env.EMOTION_PIPELINE_CACHE ?? join(process.env.HOME, '.cache', 'emotion-pipeline'), 'features')
mkdirSync(out, { recursive: true })
const meta = { items: items.map(({ path, label, speaker }) => ({ path, label, speaker })), speeds: [] }
for (const speed of [1, 0.9, 1.1]) {
  const options = { encoder: 'whisper-base', input: 'clip', pooling: 'mean', precision: 'bf16', cacheDir, device: 'cpu' }
  const e = await extractEmbeddings(
    items.map((i) => resolve(i.path)),
    speed === 1 ? options : { ...options, speed },
  )
  if (e.indices.length !== items.length) throw new Error(`only ${e.indices.length} of ${items.length} clips at speed ${speed}`)
  writeFileSync(join(out, `emb-${speed}.f32`), Buffer.from(e.data.buffer))
  meta.speeds.push({ speed, shape: e.shape })
}
writeFileSync(join(out, 'meta.json'), JSON.stringify(meta))
console.log(`${items.length} clips × 3 speeds in ${out}`)
