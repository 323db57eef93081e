// crossValidate(): speaker-grouped k-fold cross-validation. Each fold is an ordinary trainPipeline run
// directory (`fold-<k>/`, resumable like any run); the summary (mean ± std per model, per-class recall,
// pooled confusion matrix) goes to cv.json, report.md and confusion plots in `out`.
import { existsSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { indexDataset } from './dataset.js'
import { foldsOfRank, joinWorld } from './distributed.js'
import type { DistributedOption, World } from './distributed.js'
import { EmotionPipelineError, invalidOption } from './errors.js'
import { mdCell } from './report.js'
import type { Metrics } from './generated/results.js'
import type { ModelName, PipelineEvent, PipelineOptions } from './pipeline.js'
import { MODEL_NAMES, trainPipeline } from './pipeline.js'
import { confusionSvg, svgToPng } from './plots.js'
import { ensureWritableDir, lockRunDir, writeFileAtomic } from './run-dir.js'
import { claimOut, foldDir, readRunConfig, readRunMetrics, readRunSplit, RUN_FILES, runPaths } from './run-layout.js'

export interface CrossValidateOptions extends Omit<PipelineOptions, 'split' | 'onProgress'> {
  /** Folds; each fold's test set is a disjoint group of speakers (RAVDESS actors 1–20: 4 per fold). @default 5 */
  folds?: number
  /**
   * Share of each fold's training speakers held out for validation (the best epoch is chosen on them,
   * never on the test speakers). @default 0.125 (2 of 16 speakers on RAVDESS actors 1–20)
   */
  valFraction?: number
  /** Run only these folds (0-based), e.g. one per session; the summary covers the folds finished so far. */
  only?: number[]
  /**
   * Run the folds over several processes: `'env'` joins the world torchrun (or `emotion-pipeline cv
   * --nproc-per-node N`) set up in the environment; each rank runs every world-size-th fold, rank 0
   * writes the summary when all are done (the same figures as one process). The folder must be on a
   * filesystem every rank sees.
   */
  distributed?: DistributedOption
  onProgress?: (event: CrossValidateEvent) => void
}

export type CrossValidateEvent = { type: 'fold'; fold: number; folds: number; message: string } | (PipelineEvent & { fold: number })

/** Mean and sample standard deviation over the finished folds. */
export interface MeanStd {
  mean: number
  std: number
}

export interface ModelSummary {
  folds: number
  accuracy: MeanStd
  /** Unweighted average recall (mean of per-class recall), the usual speaker-independent SER figure. */
  uar: MeanStd
  weightedF1: MeanStd
  /** Recall per class, pooled over every fold's test clips. */
  recall: Record<string, number>
  /** Test clips of all folds together: rows true label, columns predicted. */
  confusion: number[][]
  /** Accuracy of each finished fold, in fold order. */
  perFold: (number | null)[]
}

export interface CrossValidateResult {
  out: string
  folds: number
  /** Folds with finished runs (all of them unless `only` left some for later). */
  finished: number[]
  labels: string[]
  /** The test speakers of each fold. */
  testSpeakers: string[][]
  models: Partial<Record<ModelName, ModelSummary>>
  files: string[]
}

const CV_FORMAT = 'emotion-pipeline/cv@1'

/** Speaker cross-validation: `folds` runs with disjoint test speakers, and their summary. */
export async function crossValidate(options: CrossValidateOptions): Promise<CrossValidateResult> {
  if (!options || typeof options !== 'object') throw invalidOption('options', 'must be an object')
  const { folds = 5, valFraction = 0.125, only, onProgress, distributed, ...pipeline } = options
  if (!Number.isInteger(folds) || folds < 2) throw invalidOption('folds', `must be an integer ≥ 2, got ${folds}`)
  if (only !== undefined && !(Array.isArray(only) && only.every((k) => Number.isInteger(k) && k >= 0 && k < folds)))
    throw invalidOption('only', `must list fold numbers from 0 to ${folds - 1}, got ${JSON.stringify(only)}`)
  if (typeof pipeline.out !== 'string' || !pipeline.out) throw invalidOption('out', 'must be the cross-validation folder')
  const out = resolve(pipeline.out)
  ensureWritableDir(out, 'out')
  if (typeof valFraction !== 'number' || !(valFraction >= 0 && valFraction < 1))
    throw invalidOption('valFraction', `must be in [0, 1) (--val-fraction), got ${valFraction}`)
  await checkSpeakers(options, folds, valFraction)
  const job: FoldJob = { out, folds, valFraction, pipeline, onProgress }
  const world = await joinWorld(distributed)
  if (world) return crossValidateInWorld(world, job, only)
  // Checked (and, with `overwrite`, cleared) only once everything else is known to be right, under the
  // folder's lock: a second cross-validation into `out` waits for nothing and removes nothing.
  const lock = lockRunDir(out)
  try {
    // A cross-validation goes on with its own folds; anything else in `out` needs `overwrite`.
    claimOut(out, 'cv', pipeline)
    return await runFolds(job, only)
  } finally {
    lock.release()
  }
}

type FoldPipeline = Omit<CrossValidateOptions, 'folds' | 'valFraction' | 'only' | 'onProgress' | 'distributed'>

/** What every fold of one cross-validation shares. */
interface FoldJob {
  out: string
  folds: number
  valFraction: number
  pipeline: FoldPipeline
  onProgress: CrossValidateOptions['onProgress']
}

/**
 * The folds over a world of processes: rank 0 claims the folder (lock, `overwrite`) before any rank
 * writes, each rank runs its share of the folds, and rank 0 summarises once every rank is done; the
 * others return the summary rank 0 wrote.
 */
async function crossValidateInWorld(world: World, job: FoldJob, only: number[] | undefined): Promise<CrossValidateResult> {
  const { out, folds, pipeline } = job
  let lock: { release: () => void } | undefined
  try {
    if (world.rank === 0) {
      lock = lockRunDir(out)
      claimOut(out, 'cv', pipeline)
      await world.set('cv/claimed', '1')
    } else await world.get('cv/claimed')
    await trainFolds(job, foldsOfRank(only ?? [...Array(folds).keys()], world.rank, world.worldSize))
    await world.barrier('cv/folds')
    let result: CrossValidateResult
    if (world.rank === 0) {
      result = summarise(out, folds, pipeline.models, pipeline.speakerNorm === true)
      await world.set('cv/summary', '1')
    } else {
      await world.get('cv/summary')
      const { format: _, ...written } = JSON.parse(readFileSync(join(out, RUN_FILES.cv), 'utf8')) as CrossValidateResult & {
        format: string
      }
      result = written
    }
    await world.leave()
    return result
  } catch (err) {
    // The others stop waiting for this rank at once, naming it and the reason.
    world.fail(err instanceof Error ? err.message.split('\n')[0].slice(0, 300) : String(err))
    throw err
  } finally {
    lock?.release()
  }
}

async function runFolds(job: FoldJob, only: number[] | undefined): Promise<CrossValidateResult> {
  await trainFolds(job, only ?? [...Array(job.folds).keys()])
  return summarise(job.out, job.folds, job.pipeline.models, job.pipeline.speakerNorm === true)
}

async function trainFolds({ out, folds, valFraction, pipeline, onProgress }: FoldJob, list: number[]): Promise<void> {
  const emit = onProgress ?? (() => {})
  // Every fold indexes the same data: a file indexing leaves out is reported by the first fold only.
  const leftOut = new Set<string>()
  const once = (e: PipelineEvent, fold: number) => {
    if (e.type === 'skipped' && e.code === 'DATASET') {
      if (leftOut.has(e.path)) return
      leftOut.add(e.path)
    }
    emit({ ...e, fold })
  }
  for (const fold of list) {
    emit({ type: 'fold', fold, folds, message: `fold ${fold + 1} of ${folds}` })
    const dir = foldDir(out, fold)
    await trainPipeline({
      ...pipeline,
      out: dir,
      overwrite: false,
      split: { strategy: 'speaker-kfold', folds, fold, valFraction, testFraction: 0 },
      // A fold finished or interrupted in an earlier call goes on from its checkpoints.
      resume: pipeline.resume || existsSync(runPaths(dir).split),
      onProgress: (e) => once(e, fold),
    })
  }
}

/**
 * Cross-validation needs speakers, at least two of them, no more folds than speakers, and enough training
 * speakers in every fold to hold some out for validation: checked before any fold starts.
 */
async function checkSpeakers(options: CrossValidateOptions, folds: number, valFraction: number): Promise<void> {
  const index = await indexDataset(options.data, { ...options.index, signal: options.signal })
  const speakers = new Set(index.items.map((i) => i.speaker).filter((s) => s !== ''))
  const how = 'RAVDESS file names, or a manifest (`index.manifest`, CSV or JSONL) with a speaker column, say who speaks'
  if (speakers.size === 0)
    throw new EmotionPipelineError(
      'DATASET',
      `${options.data}: no clip names its speaker, so cross-validation by speaker cannot form folds (${how}); trainPipeline with split 'stratified' needs no speakers`,
    )
  if (speakers.size < 2)
    throw new EmotionPipelineError(
      'DATASET',
      `${options.data}: cross-validation by speaker needs clips of at least 2 speakers, found 1 (${[...speakers][0]}; ${how})`,
    )
  if (folds > speakers.size)
    throw invalidOption(
      'folds',
      `${folds} folds (--folds) but only ${speakers.size} speakers in ${options.data}: use at most ${speakers.size}`,
    )
  // The core draws max(1, round(valFraction × remaining)) validation speakers from each fold's remaining ones.
  const remaining = speakers.size - Math.ceil(speakers.size / folds)
  const wanted = Math.max(1, Math.round(valFraction * remaining))
  if (valFraction > 0 && wanted >= remaining)
    throw invalidOption(
      'valFraction',
      `is ${valFraction} (--val-fraction): ${folds} folds over ${speakers.size} speakers leave ${remaining} training speaker(s) in a fold, too few to hold ${wanted} out for validation; pass 0 (--val-fraction 0: the last epoch is kept) or use fewer folds`,
    )
}

interface FoldRun {
  fold: number
  labels: string[]
  testSpeakers: string[]
  test: Partial<Record<ModelName, Metrics>>
}

function readFold(out: string, fold: number): FoldRun | undefined {
  const dir = foldDir(out, fold)
  if (!existsSync(runPaths(dir).metrics)) return undefined
  const metrics = readRunMetrics(dir)
  const config = readRunConfig(dir)
  const split = readRunSplit(dir)
  const test: Partial<Record<ModelName, Metrics>> = {}
  for (const [model, m] of Object.entries(metrics.models)) if (m.test) test[model as ModelName] = m.test
  return { fold, labels: config.labels, testSpeakers: [...new Set(split.test.map((i) => i.speaker))].sort(), test }
}

function meanStd(values: number[]): MeanStd {
  const mean = values.reduce((a, b) => a + b, 0) / values.length
  const variance = values.length > 1 ? values.reduce((a, b) => a + (b - mean) ** 2, 0) / (values.length - 1) : 0
  return { mean, std: Math.sqrt(variance) }
}

function summariseModel(runs: FoldRun[], model: ModelName, labels: string[]): ModelSummary | undefined {
  const scored = runs.filter((r) => r.test[model])
  if (scored.length === 0) return undefined
  const metrics = scored.map((r) => r.test[model]!)
  const confusion = labels.map((_, i) => labels.map((_, j) => metrics.reduce((sum, m) => sum + (m.confusion[i]?.[j] ?? 0), 0)))
  const recall = Object.fromEntries(
    labels.map((label, i) => {
      const total = confusion[i].reduce((a, b) => a + b, 0)
      return [label, total > 0 ? confusion[i][i] / total : 0]
    }),
  )
  return {
    folds: scored.length,
    accuracy: meanStd(metrics.map((m) => m.accuracy)),
    uar: meanStd(metrics.map((m) => m.uar)),
    weightedF1: meanStd(metrics.map((m) => m.weightedF1)),
    recall,
    confusion,
    perFold: runs.map((r) => r.test[model]?.accuracy ?? null),
  }
}

/** cv.json, report.md and the pooled confusion plots from the fold directories finished so far. */
function summarise(out: string, folds: number, models: ModelName[] | undefined, speakerNorm: boolean): CrossValidateResult {
  const runs = [...Array(folds).keys()].map((k) => readFold(out, k)).filter((r): r is FoldRun => r !== undefined)
  if (runs.length === 0) throw new EmotionPipelineError('DATASET', `no finished fold in ${out}`)
  const labels = runs[0].labels
  const names = models ?? MODEL_NAMES
  const summaries: Partial<Record<ModelName, ModelSummary>> = {}
  for (const model of names) {
    const s = summariseModel(runs, model, labels)
    if (s) summaries[model] = s
  }
  const files: string[] = [RUN_FILES.cv, RUN_FILES.report]
  for (const [model, s] of Object.entries(summaries)) {
    const title = `${model} model, ${s.folds} speaker folds pooled: accuracy ${(s.accuracy.mean * 100).toFixed(2)} ± ${(s.accuracy.std * 100).toFixed(2)} %`
    const svg = confusionSvg(s.confusion, labels, title)
    writeFileAtomic(join(out, `confusion-${model}.svg`), svg)
    writeFileAtomic(join(out, `confusion-${model}.png`), svgToPng(svg))
    files.push(`confusion-${model}.svg`, `confusion-${model}.png`)
  }
  const result: CrossValidateResult = {
    out,
    folds,
    finished: runs.map((r) => r.fold),
    labels,
    testSpeakers: runs.map((r) => r.testSpeakers),
    models: summaries,
    files,
  }
  writeFileAtomic(join(out, RUN_FILES.cv), JSON.stringify({ format: CV_FORMAT, ...result }, null, 1))
  writeFileAtomic(join(out, RUN_FILES.report), cvReport(result, speakerNorm))
  return result
}

const pct = (x: number) => `${(x * 100).toFixed(2)} %`
const pm = (s: MeanStd) => `${(s.mean * 100).toFixed(2)} ± ${(s.std * 100).toFixed(2)} %`

function cvReport(r: CrossValidateResult, speakerNorm: boolean): string {
  const lines = [
    '# Speaker cross-validation',
    '',
    `${r.finished.length} of ${r.folds} folds finished; each fold's test speakers never appear in its training or validation set.`,
    '',
    '| model | folds | accuracy | UAR | weighted F1 |',
    '|---|---|---|---|---|',
    ...Object.entries(r.models).map(([m, s]) => `| ${m} | ${s.folds} | ${pm(s.accuracy)} | ${pm(s.uar)} | ${pm(s.weightedF1)} |`),
    '',
    'Mean ± sample standard deviation over folds.',
    ...(speakerNorm
      ? [
          '',
          "Per-speaker normalisation was on: each test speaker's encoder states were standardised with statistics of their own unlabelled clips.",
        ]
      : []),
    '',
    '## Recall per class (all folds pooled)',
    '',
    `| model | ${r.labels.map(mdCell).join(' | ')} |`,
    `|---|${r.labels.map(() => '---').join('|')}|`,
    ...Object.entries(r.models).map(([m, s]) => `| ${m} | ${r.labels.map((l) => pct(s.recall[l])).join(' | ')} |`),
    '',
    '## Folds',
    '',
    '| fold | test speakers | ' + Object.keys(r.models).join(' | ') + ' |',
    `|---|---|${Object.keys(r.models)
      .map(() => '---')
      .join('|')}|`,
    ...r.finished.map(
      (fold, i) =>
        `| ${fold} | ${r.testSpeakers[i].join(', ')} | ${Object.values(r.models)
          .map((s) => (s.perFold[i] === null ? '—' : pct(s.perFold[i]!)))
          .join(' | ')} |`,
    ),
    '',
    ...Object.keys(r.models).map((m) => `![${m}](confusion-${m}.png)`),
    '',
    'Each fold is a run directory (`fold-<k>/`) with its own report, metrics, checkpoints and plots.',
    '',
  ]
  return lines.join('\n')
}
