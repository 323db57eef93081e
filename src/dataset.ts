import { readFileSync, renameSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { mkdirSync } from 'node:fs'
import { awaitNative, callNative, EmotionPipelineError, invalidOption } from './errors.js'
import { native } from './native.js'
import { withCancel } from './cancel.js'
import type { ProgressEvent } from './audio.js'

export interface RavdessName {
  modality: number
  vocalChannel: number
  /** 1 neutral, 2 calm, 3 happy, 4 sad, 5 angry, 6 fearful, 7 disgust, 8 surprised */
  emotion: number
  intensity: number
  statement: number
  repetition: number
  actor: number
}

export interface DatasetItem {
  path: string
  label: string
  /** Empty when the layout does not name speakers. */
  speaker: string
  /** SHA-256 of the file's bytes. */
  hash: string
  durationSeconds: number | null
  sampleRate: number | null
  ravdess?: RavdessName
}

export interface DatasetIndex {
  root: string
  layout: 'ravdess' | 'folders' | 'manifest'
  items: DatasetItem[]
  /** Files left out because another file has the same content or the same RAVDESS identity. */
  duplicates: { path: string; duplicateOf: string; reason: 'content' | 'identity' }[]
  /** Files that could not be used, with why. Never fatal. */
  problems: { path: string; kind: 'unreadable' | 'mislabelled' | 'unlabelled'; message: string }[]
  counts: {
    items: number
    byLabel: Record<string, number>
    bySpeaker: Record<string, number>
    /** RAVDESS song/video files left out by `speechOnly`. */
    skipped: number
    durationSeconds: { total: number; min: number; mean: number; max: number }
  }
}

export interface IndexOptions {
  /** @default 'auto' (RAVDESS names when most files carry them, else `<label>/<file>` folders) */
  layout?: 'auto' | 'ravdess' | 'folders' | 'manifest'
  /** CSV (`path,label[,speaker]` header) or JSONL manifest, for `layout: 'manifest'`. */
  manifest?: string
  /** RAVDESS: keep speech (`03-01-…`) only. @default true */
  speechOnly?: boolean
  /** `header` reads container headers; `decode` decodes every clip and also catches truncation. @default 'header' */
  verify?: 'header' | 'decode'
  /** Hashing/probing threads; 0 = all cores. @default 0 */
  threads?: number
  onProgress?: (event: ProgressEvent) => void
  signal?: AbortSignal
}

/** Finds, labels, hashes and validates the clips under `dir`. */
export async function indexDataset(dir: string, options: IndexOptions = {}): Promise<DatasetIndex> {
  if (typeof dir !== 'string' || dir === '') throw invalidOption('dir', 'must be a folder path')
  const { onProgress, signal, ...rest } = options
  const json = await withCancel(signal, (token) =>
    awaitNative(native.indexDataset(dir, JSON.stringify(rest), onProgress ? (e: string) => onProgress(JSON.parse(e)) : undefined, token)),
  )
  return JSON.parse(json) as DatasetIndex
}

export interface SplitOptions {
  /**
   * `stratified`: random with class proportions kept (the reference); `speaker`: no speaker in two parts;
   * `kfold` / `speaker-kfold`: part `fold` of `folds` is the test set. @default 'stratified'
   */
  strategy?: 'stratified' | 'speaker' | 'kfold' | 'speaker-kfold'
  /** @default 0.2 */
  testFraction?: number
  /** @default 0 */
  valFraction?: number
  /** @default 42 */
  seed?: number
  /** `speaker`: these speakers are the test set (else `testFraction` of speakers drawn by seed). */
  testSpeakers?: string[]
  valSpeakers?: string[]
  /** @default 5 */
  folds?: number
  /** @default 0 */
  fold?: number
}

export interface Split {
  options: Required<Omit<SplitOptions, 'testSpeakers' | 'valSpeakers'>> & { testSpeakers: string[] | null; valSpeakers: string[] | null }
  train: DatasetItem[]
  val: DatasetItem[]
  test: DatasetItem[]
}

/** Splits an index (or its items) reproducibly: the same items and options give the same split. */
export function splitDataset(index: DatasetIndex | DatasetItem[], options: SplitOptions = {}): Split {
  const items = Array.isArray(index) ? index : index?.items
  if (!Array.isArray(items)) throw invalidOption('index', 'must be a DatasetIndex or an array of items')
  if (options.seed !== undefined && !(Number.isSafeInteger(options.seed) && options.seed >= 0)) {
    throw invalidOption('seed', `must be a non-negative integer, got ${options.seed}`)
  }
  return JSON.parse(callNative(() => native.splitDataset(JSON.stringify(items), JSON.stringify(options)))) as Split
}

const SPLIT_FORMAT = 'emotion-pipeline/split@1'

/** Writes `split.json` atomically. */
export function saveSplit(split: Split, path: string): void {
  mkdirSync(dirname(path), { recursive: true })
  const tmp = join(dirname(path), `.${process.pid}.split.json.tmp`)
  writeFileSync(tmp, JSON.stringify({ format: SPLIT_FORMAT, ...split }, null, 1))
  renameSync(tmp, path)
}

export function loadSplit(path: string): Split {
  let parsed: { format?: string } & Split
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'))
  } catch (err) {
    throw new EmotionPipelineError('DATASET', `cannot read split ${path}: ${(err as Error).message}`, { cause: err })
  }
  if (parsed.format !== SPLIT_FORMAT) {
    throw new EmotionPipelineError('DATASET', `${path} is not an emotion-pipeline split (format ${parsed.format})`)
  }
  const { format: _format, ...split } = parsed
  return split
}
