import { awaitNative, invalidOption, optionsJson } from './errors.js'
import { native } from './native.js'
import { withCancel } from './cancel.js'
import { ensureWritableDir } from './run-dir.js'
import { checkAudioInputs } from './audio.js'
import type { AudioInput } from './audio.js'
import { findEncoder } from './encoder.js'
import type { DeviceSpec } from './device.js'
import type { PredictAudioOptions, TrainConfig } from './generated/options.js'
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

export interface LoadModelOptions {
  /** @default 'auto' */
  device?: DeviceSpec
  /**
   * The encoder of a model on encoder states, as a name or a folder, checked by SHA-256. Unset: the
   * installed encoder with the SHA-256 the model recorded (found whatever it was called when training).
   */
  encoder?: string
}

/** A trained model: `loadModel(dir)`. */
export class EmotionModel {
  private constructor(
    private readonly inner: InstanceType<typeof native.NativeModel>,
    readonly meta: ModelMeta,
    /** Where the encoder of a model on encoder states was found (looked for again by `predictFiles` when not). */
    private readonly encoder: { dir?: string },
  ) {}

  static async load(dir: string, options: LoadModelOptions = {}): Promise<EmotionModel> {
    const inner = await awaitNative(native.loadModel(dir, options.device ?? 'auto'))
    const meta = JSON.parse(inner.metaJson) as ModelMeta
    const identity = meta.spec.inputs.embedding?.encoder
    // An override is checked now; a missing encoder only matters to predictFiles (predict on states
    // needs none), which throws the reason.
    let encoder: { dir?: string } = {}
    if (identity) {
      if (options.encoder !== undefined) encoder = { dir: await findEncoder(identity, options.encoder) }
      else
        encoder = await findEncoder(identity).then(
          (dir) => ({ dir }),
          () => ({}),
        )
    }
    return new EmotionModel(inner, meta, encoder)
  }

  /** The folder of the encoder the model was trained on (models on encoder states, when found). */
  get encoderDir(): string | undefined {
    return this.encoder.dir
  }

  get labels(): string[] {
    return this.meta.spec.labels
  }

  /** Predicts from features (mel from `extractMel` made with `meta.spec.inputs.mel.config`, tokens, or states). */
  async predict(inputs: Omit<TrainSet, 'labels'>): Promise<Prediction[]> {
    const set = toNativeSet({ ...inputs, labels: [] }, 'inputs')!
    return JSON.parse(await awaitNative(this.inner.predict(set))) as Prediction[]
  }

  /**
   * Predicts from audio (files, or `{ samples, sampleRate }` in memory), featurised as the model was
   * trained: its mel settings, or its encoder (checked by SHA-256), in the core. A model trained with
   * `speakerNorm` needs `calibration`: unlabelled clips of the one speaker of `inputs` (they may include
   * `inputs`; a few dozen is what training saw).
   */
  async predictFiles(
    inputs: AudioInput[],
    options: { device?: DeviceSpec; calibration?: AudioInput[]; signal?: AbortSignal } = {},
  ): Promise<(Prediction & { path: string })[]> {
    checkAudioInputs(inputs)
    if (options.calibration) checkAudioInputs(options.calibration)
    const identity = this.meta.spec.inputs.embedding?.encoder
    if (identity && !this.encoder.dir) this.encoder.dir = await findEncoder(identity) // MODEL_NOT_FOUND says how to get it
    const encoderDir = this.encoder.dir
    const json = await withCancel(options.signal, (token) =>
      awaitNative(
        this.inner.predictAudio(
          inputs,
          options.calibration,
          optionsJson({ device: options.device ?? 'cpu', encoderDir } satisfies PredictAudioOptions),
          token,
        ),
      ),
    )
    const predictions = JSON.parse(json) as Prediction[]
    return predictions.map((p, i) => ({ ...p, path: typeof inputs[i] === 'string' ? inputs[i] : `<samples #${i}>` }))
  }
}

/**
 * Loads a trained model folder (`models/<model>` of a run, or a `checkpointDir`). Asynchronous since 0.2:
 * the checkpoint is read and checked on a thread of its own, and a damaged one rejects.
 */
export function loadModel(dir: string, options: LoadModelOptions = {}): Promise<EmotionModel> {
  return EmotionModel.load(dir, options)
}
