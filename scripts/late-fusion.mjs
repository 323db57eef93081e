#!/usr/bin/env node
// Late fusion of two models over the same speaker folds: per fold, the two models' probabilities on
// the validation speakers pick a weight w in 0, 0.1, …, 1 (best validation accuracy), then
// w·p_a + (1 − w)·p_b is scored on the test speakers. Prints per-fold and mean ± std accuracies.
//
//   node scripts/late-fusion.mjs CV_DIR_A MODEL_A CV_DIR_B MODEL_B     (MODEL: audio | encoder)
//   node scripts/late-fusion.mjs --mean MODEL CV_DIR...   equal-weight mean of N runs of one model
//     (e.g. training seeds: --train '{"encoder":{"seed":7}}' keeps the split), scored on test and val
// Both cross-validations must have been run with the same data, folds and seed (same split.json).
// A run directory instead of a cross-validation folder (it has split.json, not cv.json) is one fold;
// when its split has no validation part the weight is fixed at 0.5 beforehand.
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { extractEmbeddings, extractMel, loadModel } from '../dist/index.js'
import { cacheRoot } from '../dist/cache.js'
import { foldDir as cvFoldDir, readRunSplit, RUN_FILES, runPaths } from '../dist/run-layout.js'

const args = process.argv.slice(2)
const meanOf = args[0] === '--mean' ? { model: args[1], dirs: args.slice(2) } : null
const [dirA, modelA, dirB, modelB] = meanOf ? [meanOf.dirs[0], meanOf.model, meanOf.dirs[1], meanOf.model] : args
if (!modelB || (meanOf && meanOf.dirs.length < 2)) {
  console.error('usage: node scripts/late-fusion.mjs CV_DIR_A MODEL_A CV_DIR_B MODEL_B | --mean MODEL CV_DIR CV_DIR...')
  process.exit(2)
}
const cache = join(cacheRoot(), 'features')
const single = existsSync(runPaths(dirA).split)
const folds = single ? [0] : JSON.parse(readFileSync(join(dirA, RUN_FILES.cv), 'utf8')).finished
const foldDir = (dir, fold) => (single ? dir : cvFoldDir(dir, fold))

async function probabilities(model, items) {
  const paths = items.map((i) => i.path)
  const source = model.meta.spec.inputs.embedding?.encoder
  if (source) {
    const e = await extractEmbeddings(paths, {
      encoder: source.name,
      input: source.input,
      pooling: source.pooling,
      precision: source.precision,
      cacheDir: cache,
      device: 'cpu',
    })
    return (await model.predictFeatures({ embedding: { data: e.data, shape: e.shape } })).map((p) => p.probabilities)
  }
  const mel = await extractMel(paths, { mel: model.meta.spec.inputs.mel?.config ?? {}, cacheDir: cache, device: 'cpu' })
  return (await model.predictFeatures({ mel: { data: mel.data, shape: mel.shape } })).map((p) => p.probabilities)
}

const accuracy = (P, y) => P.filter((p, i) => p.indexOf(Math.max(...p)) === y[i]).length / y.length
const mix = (a, b, w) => a.map((p, i) => p.map((x, k) => w * x + (1 - w) * b[i][k]))
const average = (Ps) => Ps[0].map((p, i) => p.map((_, k) => Ps.reduce((sum, P) => sum + P[i][k], 0) / Ps.length))
const meanStd = (v) => {
  const m = v.reduce((x, y) => x + y, 0) / v.length
  const sd = v.length > 1 ? Math.sqrt(v.reduce((x, y) => x + (y - m) ** 2, 0) / (v.length - 1)) : 0
  return `${(m * 100).toFixed(2)} ± ${(sd * 100).toFixed(2)} %`
}

/** --mean: per fold, the runs' probabilities averaged with equal weights (nothing chosen on any split). */
async function equalMean({ model, dirs }) {
  const parts = { test: { runs: dirs.map(() => []), mean: [] }, val: { runs: dirs.map(() => []), mean: [] } }
  for (const fold of folds) {
    const split = readRunSplit(foldDir(dirs[0], fold))
    const models = await Promise.all(dirs.map((d) => loadModel(runPaths(foldDir(d, fold)).model(model), { device: 'cpu' })))
    for (const name of ['test', 'val']) {
      const items = split[name]
      if (!items.length) continue
      const y = items.map((i) => models[0].labels.indexOf(i.label))
      const Ps = []
      for (const m of models) Ps.push(await probabilities(m, items))
      for (const [k, P] of Ps.entries()) parts[name].runs[k].push(accuracy(P, y))
      parts[name].mean.push(accuracy(average(Ps), y))
    }
    console.log(JSON.stringify({ fold, test: parts.test.mean.at(-1), val: parts.val.mean.at(-1) }))
  }
  const summary = (p) => ({ runs: p.runs.map(meanStd), mean: meanStd(p.mean) })
  console.log(JSON.stringify({ test: summary(parts.test), val: parts.val.mean.length ? summary(parts.val) : null }))
}
if (meanOf) {
  await equalMean(meanOf)
  process.exit(0)
}

const scores = { a: [], b: [], fused: [] }
for (const fold of folds) {
  const split = readRunSplit(foldDir(dirA, fold))
  const other = readRunSplit(foldDir(dirB, fold))
  if (JSON.stringify(split.test.map((i) => i.path)) !== JSON.stringify(other.test.map((i) => i.path)))
    throw new Error(`fold ${fold}: the two cross-validations have different test sets`)
  const a = await loadModel(runPaths(foldDir(dirA, fold)).model(modelA), { device: 'cpu' })
  const b = await loadModel(runPaths(foldDir(dirB, fold)).model(modelB), { device: 'cpu' })
  const part = async (items) => ({
    a: await probabilities(a, items),
    b: await probabilities(b, items),
    y: items.map((i) => a.labels.indexOf(i.label)),
  })
  const test = await part(split.test)
  let w = 0.5
  if (split.val.length > 0) {
    const val = await part(split.val)
    let best = -1
    for (let k = 0; k <= 10; k++) {
      const v = accuracy(mix(val.a, val.b, k / 10), val.y)
      if (v > best) [best, w] = [v, k / 10]
    }
  }
  scores.a.push(accuracy(test.a, test.y))
  scores.b.push(accuracy(test.b, test.y))
  scores.fused.push(accuracy(mix(test.a, test.b, w), test.y))
  console.log(JSON.stringify({ fold, weightOfA: w, a: scores.a.at(-1), b: scores.b.at(-1), fused: scores.fused.at(-1) }))
}
console.log(JSON.stringify({ a: meanStd(scores.a), b: meanStd(scores.b), fused: meanStd(scores.fused) }))
