import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { awaitNative, callNative, EmotionPipelineError, invalidOption } from './errors.js'
import { native } from './native.js'
import { withCancel } from './cancel.js'
import { writeFileAtomic } from './run-dir.js'
import type { IndexOptions as CoreIndexOptions, SplitOptions } from './generated/options.js'
import type { DatasetIndex, DatasetItem, ProgressEvent, Split } from './generated/results.js'

export type { DatasetIndex, DatasetItem, RavdessName } from './generated/results.js'

/** Options of `indexDataset`: the core's `IndexOptions` plus progress and cancellation. */
export interface IndexOptions extends CoreIndexOptions {
  onProgress?: (event: ProgressEvent) => void
  signal?: AbortSignal
}

/** Finds, labels, hashes and validates the clips under `dir`. */
export async function indexDataset(dir: string, options: IndexOptions = {}): Promise<DatasetIndex> {
  if (typeof dir !== 'string' || dir === '') throw invalidOption('dir', 'must be a folder path')
  // A manifest given as the dataset itself (`--data clips.csv`) is indexed as a manifest.
  if (options.manifest == null && /\.(csv|jsonl)$/i.test(dir) && existsSync(dir) && statSync(dir).isFile()) {
    return indexDataset(dirname(resolve(dir)), { ...options, layout: 'manifest', manifest: resolve(dir) })
  }
  const { onProgress, signal, ...rest } = options
  const json = await withCancel(signal, (token) =>
    awaitNative(native.indexDataset(dir, JSON.stringify(rest), onProgress ? (e: string) => onProgress(JSON.parse(e)) : undefined, token)),
  )
  return JSON.parse(json) as DatasetIndex
}

export type { SplitOptions }

/** A split as `splitDataset` returns it: its options with every default filled in. */
export type { Split }

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
  writeFileAtomic(path, JSON.stringify({ format: SPLIT_FORMAT, ...split }, null, 1))
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
