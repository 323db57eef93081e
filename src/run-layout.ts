// The one owner of a run directory's layout: every file name, and the typed, format-tagged metrics.json
// and config.json with their readers. Checkpoint files inside models/<model>/ belong to the core's
// checkpoint module; this module only names the folder.
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { EmotionPipelineError } from './errors.js'
import type { Metrics } from './generated/results.js'
import type { Split } from './dataset.js'
import { packageVersion } from './version.js'

/** File names in a run directory (and in a cross-validation folder: `cv`, `fold`). */
export const RUN_FILES = {
  split: 'split.json',
  metrics: 'metrics.json',
  config: 'config.json',
  history: 'history.csv',
  report: 'report.md',
  vocabulary: 'vocabulary.json',
  transcripts: 'transcripts.json',
  models: 'models',
  cv: 'cv.json',
} as const

export const METRICS_FORMAT = 'emotion-pipeline/metrics@1'
export const CONFIG_FORMAT = 'emotion-pipeline/config@1'

/** Paths of one run directory. */
export function runPaths(runDir: string) {
  const at = (name: string) => join(runDir, name)
  return {
    split: at(RUN_FILES.split),
    metrics: at(RUN_FILES.metrics),
    config: at(RUN_FILES.config),
    history: at(RUN_FILES.history),
    report: at(RUN_FILES.report),
    vocabulary: at(RUN_FILES.vocabulary),
    transcripts: at(RUN_FILES.transcripts),
    /** The folder of one trained model (its checkpoints: the core's layout). */
    model: (model: string) => join(runDir, RUN_FILES.models, model),
  }
}

/** The folder of fold `k` of a cross-validation in `out`. */
export function foldDir(out: string, k: number): string {
  return join(out, `fold-${k}`)
}

/** The figures of one trained model in metrics.json. */
export interface ModelMetrics {
  test: Metrics | null
  val: Metrics | null
  bestEpoch: number | null
  epochs: number
  trainSeconds: number
  seconds: number
  precision: string
  device: string
}

export interface RunMetrics {
  format: typeof METRICS_FORMAT
  /** The emotion-pipeline version that wrote it. */
  version: string
  reference: Record<string, number>
  split: { strategy: string; train: number; val: number; test: number; seed: number }
  skipped: { path: string; code: string; message: string }[]
  models: Record<string, ModelMetrics>
  stageSeconds: Record<string, number>
}

export interface RunConfig {
  format: typeof CONFIG_FORMAT
  version: string
  /** The options as given (callbacks left out). */
  options: Record<string, unknown>
  /** What the run used, defaults filled in, so that it can be repeated from this file alone. */
  effective: Record<string, unknown>
  labels: string[]
  device: string
  torch: string
  cpus: number
  node: string
  dataset: { root: string; items: number; duplicates: number; problems: number }
}

export function metricsFile(body: Omit<RunMetrics, 'format' | 'version'>): RunMetrics {
  return { format: METRICS_FORMAT, version: packageVersion(), ...body }
}

export function configFile(body: Omit<RunConfig, 'format' | 'version'>): RunConfig {
  return { format: CONFIG_FORMAT, version: packageVersion(), ...body }
}

type Check = (value: unknown) => boolean
const isNumber: Check = (v) => typeof v === 'number'
const isString: Check = (v) => typeof v === 'string'
const isObject: Check = (v) => typeof v === 'object' && v !== null && !Array.isArray(v)
const orNull =
  (c: Check): Check =>
  (v) =>
    v === null || c(v)

const MODEL_FIELDS: Record<keyof ModelMetrics, Check> = {
  test: orNull(isObject),
  val: orNull(isObject),
  bestEpoch: orNull(isNumber),
  epochs: isNumber,
  trainSeconds: isNumber,
  seconds: isNumber,
  precision: isString,
  device: isString,
}

/** Reads a run's metrics.json, checking its format tag and every field a reader relies on. */
export function readRunMetrics(runDir: string): RunMetrics {
  const { file, value } = readJson(runPaths(runDir).metrics, METRICS_FORMAT)
  const bad = (field: string) => malformed(file, field)
  for (const [field, check] of Object.entries({ reference: isObject, split: isObject, models: isObject, stageSeconds: isObject }))
    if (!check(value[field])) throw bad(field)
  if (!Array.isArray(value.skipped)) throw bad('skipped')
  for (const [model, m] of Object.entries(value.models as Record<string, unknown>)) {
    if (!isObject(m)) throw bad(`models.${model}`)
    for (const [field, check] of Object.entries(MODEL_FIELDS)) {
      if (!check((m as Record<string, unknown>)[field])) throw bad(`models.${model}.${field}`)
    }
  }
  return value as unknown as RunMetrics
}

/** Reads a run's config.json, checking its format tag and the fields a reader relies on. */
export function readRunConfig(runDir: string): RunConfig {
  const { file, value } = readJson(runPaths(runDir).config, CONFIG_FORMAT)
  if (!Array.isArray(value.labels) || !value.labels.every(isString)) throw malformed(file, 'labels')
  for (const [field, check] of Object.entries({ options: isObject, effective: isObject, dataset: isObject, device: isString }))
    if (!check(value[field])) throw malformed(file, field)
  return value as unknown as RunConfig
}

/** Reads a run's split.json (test speakers, for the cross-validation summary). */
export function readRunSplit(runDir: string): Pick<Split, 'train' | 'val' | 'test'> {
  const file = runPaths(runDir).split
  const value = readJsonObject(file)
  for (const part of ['train', 'val', 'test'])
    if (!Array.isArray(value[part]) || !(value[part] as unknown[]).every(isObject)) throw malformed(file, part)
  return value as unknown as Split
}

function readJsonObject(file: string): Record<string, unknown> {
  if (!existsSync(file)) throw new EmotionPipelineError('IO', `${file} does not exist: not a finished run directory`)
  let value: unknown
  try {
    value = JSON.parse(readFileSync(file, 'utf8'))
  } catch (err) {
    throw new EmotionPipelineError('IO', `${file} is not JSON (${(err as Error).message})`, { cause: err })
  }
  if (!isObject(value)) throw new EmotionPipelineError('IO', `${file} does not hold a JSON object`)
  return value as Record<string, unknown>
}

/** A tagged file: its `format` must be `format`; an untagged file (written before 0.2) is read if its fields check out. */
function readJson(file: string, format: string): { file: string; value: Record<string, unknown> } {
  const value = readJsonObject(file)
  if (value.format !== undefined && value.format !== format)
    throw new EmotionPipelineError(
      'IO',
      `${file} has format ${JSON.stringify(value.format)}, expected ${format} (written by another version?)`,
    )
  return { file, value }
}

function malformed(file: string, field: string): EmotionPipelineError {
  return new EmotionPipelineError(
    'IO',
    `${file}: field \`${field}\` is missing or of the wrong type (edited by hand, or written by another version)`,
  )
}

/** What an `out` folder holds: nothing, a run (`train`), a cross-validation, or files of something else. */
export type OutContents = 'empty' | 'train' | 'cv' | 'other'

/** Names this library may leave in a folder it was asked to use without putting a run there. */
const HOUSEKEEPING = new Set(['.lock'])

/** The names in `out` other than this library's housekeeping (its lock, a write probe left by a crash). */
function runEntries(out: string): string[] {
  return readdirSync(out).filter((n) => !HOUSEKEEPING.has(n) && !n.startsWith('.write-test-'))
}

/** What `out` holds (an interrupted run, checkpoints without metrics, counts as a run). */
export function outContents(out: string): OutContents {
  let names: string[]
  try {
    names = runEntries(out)
  } catch {
    return 'empty'
  }
  if (names.length === 0) return 'empty'
  if (names.includes(RUN_FILES.cv) || names.some((n) => /^fold-\d+$/.test(n))) return 'cv'
  const run: string[] = [RUN_FILES.split, RUN_FILES.metrics, RUN_FILES.config, RUN_FILES.models]
  return names.some((n) => run.includes(n)) ? 'train' : 'other'
}

/**
 * One rule for every command that writes a run: a non-empty `out` is refused by name unless it holds
 * this command's own work and `resume` is set (a cross-validation goes on with its folds), or
 * `overwrite` is set: then the earlier run's files are removed (files that are not a run's are kept).
 */
export function claimOut(out: string, command: 'train' | 'cv', options: { resume?: boolean; overwrite?: boolean }): void {
  const holds = outContents(out)
  if (holds === 'empty') return
  // A run that stopped before any model saved a checkpoint (a typo in --encoder, a failed download)
  // holds nothing to lose: its split is made again, and a corrected command starts afresh.
  if (holds === 'train' && command === 'train' && isUnstartedRun(out)) {
    removeRun(out)
    return
  }
  const mine = holds === command
  if (options.overwrite) {
    if (holds === 'train' || holds === 'cv') removeRun(out)
    return
  }
  if (mine && (options.resume || command === 'cv')) return
  const what = holds === 'train' ? 'a training run' : holds === 'cv' ? 'a cross-validation' : 'files that are not a run of this library'
  const fix = mine
    ? '--resume (resume: true) to go on with it, or --overwrite (overwrite: true) to replace it'
    : '--overwrite (overwrite: true) to write there anyway, or another out folder'
  throw new EmotionPipelineError('INVALID_OPTION', `invalid option \`out\`: ${out} holds ${what}; pass ${fix}`)
}

/** What a run writes before its first checkpoint (everything else comes later, or is not ours). */
const BEFORE_TRAINING = new Set<string>([RUN_FILES.split, RUN_FILES.vocabulary, RUN_FILES.transcripts, RUN_FILES.models])

/**
 * Whether `out` holds only the start of a run of this library: a `split.json` that reads as ours, the
 * other files a run writes before training, and under `models/` folders alone (no checkpoint, no link).
 */
function isUnstartedRun(out: string): boolean {
  const names = runEntries(out)
  if (!names.includes(RUN_FILES.split) || !names.every((n) => BEFORE_TRAINING.has(n))) return false
  try {
    readRunSplit(out)
    const models = join(out, RUN_FILES.models)
    return !existsSync(models) || readdirSync(models, { recursive: true, withFileTypes: true }).every((e) => e.isDirectory())
  } catch {
    return false
  }
}

/** Removes a run's or a cross-validation's files from `out`, nothing else. */
function removeRun(out: string): void {
  for (const name of readdirSync(out)) {
    const ours =
      (Object.values(RUN_FILES) as string[]).includes(name) || /^fold-\d+$/.test(name) || /^(confusion|loss)[-\w]*\.(png|svg)$/.test(name)
    if (ours) rmSync(join(out, name), { recursive: true, force: true })
  }
}
