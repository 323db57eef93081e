import { awaitNative, EmotionPipelineError, invalidOption, optionsJson } from './errors.js'
import { native } from './native.js'
import { withCancel } from './cancel.js'
import { ensureWritableDir } from './run-dir.js'
import { extractMel } from './audio.js'
import { extractEmbeddings } from './encoder.js'
import { speakerStats, standardise } from './speaker-norm.js'
import type { DeviceSpec } from './device.js'
import type { TrainConfig } from './generated/options.js'
import type { ModelMeta, Prediction, TrainEvent, TrainResult } from './generated/results.js'

/**
 * Inputs of one split. `mel` from `extractMel` (`[n, nMels, frames]`), `tokens` `[n, maxLen]` ids,
 * `embedding` from `extractEmbeddings` (`[n, layers, width]`).
 */
export interface TrainSet {
  mel?: { data: Float32Array; shape: [number, number, number] }
  tokens?: { data: Int32Array; shape: [number, number] }
  embedding?: { data: Float32Array; shape: [number, number, number] }
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
}

function toNativeSet(set: TrainSet | undefined, name: string) {
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
  const { train: trainSet, val, test, onProgress, signal, ...settings } = options
  // The encoder head's input shape, speaker count and row groups come from the data in the core.
  const config = settings
  if (config.checkpointDir) ensureWritableDir(config.checkpointDir, 'checkpointDir')
  const json = await withCancel(signal, (token) =>
    awaitNative(
      native.train(
        optionsJson(config),
        toNativeSet(trainSet, 'train')!,
        toNativeSet(val, 'val'),
        toNativeSet(test, 'test'),
        onProgress ? (e: string) => onProgress(JSON.parse(e) as TrainEvent) : undefined,
        token,
      ),
    ),
  )
  return JSON.parse(json) as TrainResult
}

/** A trained model: `loadModel(dir)`. */
export class EmotionModel {
  private constructor(
    private readonly inner: InstanceType<typeof native.NativeModel>,
    readonly meta: ModelMeta,
  ) {}

  static async load(dir: string, options: { device?: DeviceSpec } = {}): Promise<EmotionModel> {
    const inner = await awaitNative(native.loadModel(dir, options.device ?? 'auto'))
    return new EmotionModel(inner, JSON.parse(inner.metaJson) as ModelMeta)
  }

  get labels(): string[] {
    return this.meta.config.labels
  }

  /** Predicts from features (mel from `extractMel` made with `meta.config.mel`, or tokens). */
  async predict(inputs: Omit<TrainSet, 'labels'>): Promise<Prediction[]> {
    const set = toNativeSet({ ...inputs, labels: [] }, 'inputs')!
    return JSON.parse(await awaitNative(this.inner.predict(set))) as Prediction[]
  }

  /**
   * Featurises audio files as the model was trained (its mel settings, or its encoder), then predicts
   * (audio and encoder models). A model trained with `speakerNorm` needs `calibration`: unlabelled
   * clips of the one speaker of `paths` (they may include `paths`; a few dozen is what training saw).
   */
  async predictFiles(
    paths: string[],
    options: { device?: DeviceSpec; calibration?: string[] } = {},
  ): Promise<(Prediction & { path: string })[]> {
    const device = options.device ?? 'cpu'
    const source = this.meta.config.encoderSource
    if (this.meta.config.model === 'encoder' && source) {
      const embed = async (files: string[]) => {
        const e = await extractEmbeddings(files, {
          encoder: source.encoder,
          input: source.input,
          pooling: source.pooling,
          precision: source.precision,
          device,
          strict: true,
        })
        if (e.modelSha256 !== source.modelSha256)
          throw new EmotionPipelineError(
            'MODEL_NOT_FOUND',
            `the model was trained on states of the ${source.encoder} encoder with SHA-256 ${source.modelSha256}, but that encoder's model.bin is now ${e.modelSha256}: install the same encoder`,
          )
        return e
      }
      const e = await embed(paths)
      const per = e.shape[1] * e.shape[2]
      if (source.speakerNorm) {
        if (!options.calibration?.length)
          throw invalidOption(
            'calibration',
            'this model standardises encoder states per speaker (speakerNorm): give unlabelled clips of the speaker of these files (they may be the files themselves)',
          )
        const c = await embed(options.calibration)
        const stats = speakerStats(Array.from({ length: c.shape[0] }, (_, i) => c.data.subarray(i * per, (i + 1) * per)))
        for (let i = 0; i < e.shape[0]; i++) standardise(e.data.subarray(i * per, (i + 1) * per), stats)
      }
      return (await this.predict({ embedding: { data: e.data, shape: e.shape } })).map((p, i) => ({ ...p, path: paths[e.indices[i]] }))
    }
    const mel = await extractMel(paths, { mel: this.meta.config.mel ?? {}, device, strict: true })
    return (await this.predict({ mel: { data: mel.data, shape: mel.shape } })).map((p, i) => ({ ...p, path: paths[mel.indices[i]] }))
  }
}

/**
 * Loads a trained model folder (`models/<model>` of a run, or a `checkpointDir`). Asynchronous since 0.2:
 * the checkpoint is read and checked on a thread of its own, and a damaged one rejects.
 */
export function loadModel(dir: string, options: { device?: DeviceSpec } = {}): Promise<EmotionModel> {
  return EmotionModel.load(dir, options)
}
