import { awaitNative, invalidOption, optionsJson } from './errors.js'
import { native } from './native.js'
import { withCancel } from './cancel.js'
import { ensureWritableDir } from './run-dir.js'
import { asRank, nativeWorldOf, trainingWorld } from './distributed.js'
import type { DistributedOption, World } from './distributed.js'
import type { DeviceSpec } from './device.js'
import type { EncoderIdentity, MelConfig, TrainConfig } from './generated/options.js'
import type { TrainEvent, TrainResult } from './generated/results.js'

/**
 * Inputs of one split. `mel` from `extractMel` (`[n, nMels, frames]`), `tokens` `[n, maxLen]` ids,
 * `embedding` from `extractEmbeddings` (`[n, layers, width]`).
 */
export interface TrainSet {
  /** `config`, as `extractMel` returns it, is recorded in the model unless `mel` is given. */
  mel?: { data: Float32Array; shape: [number, number, number]; config?: MelConfig }
  tokens?: { data: Int32Array; shape: [number, number] }
  /** `encoderSource`, as `extractEmbeddings` returns it, is recorded in the model unless given. */
  embedding?: { data: Float32Array; shape: [number, number, number]; encoderSource?: EncoderIdentity }
  /** Class ids indexing `labels`. */
  labels: Int32Array | number[]
  /**
   * The speaker of each row, `0..speakers`: what `encoderHead.speakerAdversary` trains the encoder
   * head to be blind to. Only read with that option.
   */
  speakerIds?: Int32Array | number[]
}

export type { ClassScores, EpochRecord, Metrics, ModelMeta, Prediction, TrainEvent, TrainResult } from './generated/results.js'

/**
 * Options of `train()`: the core's `TrainConfig` (one definition, with its defaults and validation, in
 * Rust: `src/generated/options.ts`) plus the data and the callbacks.
 */
export interface TrainOptions extends Omit<TrainConfig, 'device'> {
  train: TrainSet
  /** Drives the best checkpoint and early stopping. */
  val?: TrainSet
  /** Scored with the best weights at the end. */
  test?: TrainSet
  /** `'auto'`, `'cpu'`, `'cuda'` or `'cuda:N'`. @default 'auto' */
  device?: DeviceSpec
  onProgress?: (event: TrainEvent) => void
  signal?: AbortSignal
  /**
   * Train as one rank of a data-parallel job: `'env'` reads torchrun's variables (`RANK`,
   * `WORLD_SIZE`, `MASTER_ADDR`, … — what `train --nproc-per-node` sets), or the world's options, or a
   * world `joinWorld()` returned. Every rank calls `train` with the same options and sets; each trains
   * on its share of every batch (`batchSize` rows per rank), gradients are summed across ranks, rank 0
   * writes the checkpoints. Alone (no variables, or a world of 1): an ordinary job.
   */
  distributed?: DistributedOption | World
}

export function toNativeSet(set: TrainSet | undefined, name: string) {
  if (set === undefined) return undefined
  if (!set || !(set.labels instanceof Int32Array || Array.isArray(set.labels)))
    throw invalidOption(`${name}.labels`, 'must be an Int32Array or number[]')
  if (set.mel && !(set.mel.data instanceof Float32Array)) throw invalidOption(`${name}.mel.data`, 'must be a Float32Array')
  if (set.embedding && !(set.embedding.data instanceof Float32Array))
    throw invalidOption(`${name}.embedding.data`, 'must be a Float32Array')
  return {
    mel: set.mel?.data,
    melShape: set.mel?.shape,
    embedding: set.embedding?.data,
    embeddingShape: set.embedding?.shape,
    tokens: set.tokens ? Int32Array.from(set.tokens.data) : undefined,
    tokensShape: set.tokens?.shape,
    labels: Int32Array.from(set.labels),
    speakerIds: set.speakerIds ? Int32Array.from(set.speakerIds) : undefined,
  }
}

/** Trains one model on its own thread; progress through `onProgress`, cancel with `signal`. */
export async function train(options: TrainOptions): Promise<TrainResult> {
  if (!options || typeof options !== 'object') throw invalidOption('options', 'must be an object')
  const { train: trainSet, val, test, onProgress, signal, distributed, ...settings } = options
  // The encoder head's input shape, speaker count and row groups come from the data in the core; how
  // the features were made comes with them from extractMel / extractEmbeddings unless given.
  const config = {
    ...settings,
    mel: settings.mel ?? trainSet?.mel?.config,
    encoderSource: settings.encoderSource ?? trainSet?.embedding?.encoderSource,
  }
  const { world, joined } = await trainingWorld(distributed)
  const json = await asRank(world, async () => {
    if (config.checkpointDir && (world?.rank ?? 0) === 0) ensureWritableDir(config.checkpointDir, 'checkpointDir')
    const text = await withCancel(signal, (token) =>
      awaitNative(
        native.train(
          optionsJson(config),
          toNativeSet(trainSet, 'train')!,
          toNativeSet(val, 'val'),
          toNativeSet(test, 'test'),
          onProgress ? (e: string) => onProgress(JSON.parse(e) as TrainEvent) : undefined,
          token,
          world ? nativeWorldOf(world) : undefined,
        ),
      ),
    )
    // A world joined here is left here (every rank passes a last barrier; rank 0 keeps the store up
    // until the others have).
    if (joined) await world?.leave()
    return text
  })
  return JSON.parse(json) as TrainResult
}
