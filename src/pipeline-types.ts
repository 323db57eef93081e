// The pipeline's public types (options, events, result) and what its stages share (`Run`), apart from
// the code that uses them so that the pipeline, its stages and the run files import them without a cycle.
import type { DistributedOption, World } from './distributed.js'
import type { MelOptions } from './audio.js'
import type { IndexOptions, SplitOptions } from './dataset.js'
import type { DeviceSpec } from './device.js'
import type { EncoderName } from './encoder.js'
import type { EncoderInput, EncoderPrecision, Pooling, TrainConfig } from './generated/options.js'
import type { DatasetItem } from './dataset.js'
import type { ModelName } from './presets.js'
import type { Tokenizer } from './tokenizer.js'
import type { TrainEvent, TrainOptions, TrainResult } from './train.js'
import type { TranscribeOptions } from './transcribe.js'

export type { ModelName }

/** Training settings shared by every model (the core's `TrainConfig` fields, defaults there). */
type SharedTrainSettings = Pick<TrainConfig, 'preset' | 'epochs' | 'batchSize' | 'accumulation' | 'seed' | 'amp'>

export interface PipelineOptions extends SharedTrainSettings {
  /** Dataset folder (RAVDESS names, `<label>/` folders, or use `index.manifest`). */
  data: string
  /** Run directory (created). */
  out: string
  /** @default ['encoder'] with the recommended preset, ['audio', 'text', 'fusion'] with the reference one */
  models?: ModelName[]
  /** `stratified` 80/20 (the reference), `speaker` (no speaker in two parts), or full split options. @default 'stratified' */
  split?: 'stratified' | 'speaker' | SplitOptions
  /** Adam's learning rate for every model: the core's `optim.lr` (`AdamConfig.lr`, whose default applies). */
  lr?: number
  /** @default 'auto' */
  device?: DeviceSpec
  mel?: MelOptions
  /** The frozen speech encoder of the `encoder` model: an installed name or a folder. @default 'whisper-base' */
  encoder?: EncoderName | string
  /** What the encoder sees: each clip at its own length, or padded to Whisper's 30 s. @default 'clip' */
  encoderInput?: EncoderInput
  /**
   * Standardise the encoder states per speaker (`DatasetItem.speaker`), test speakers included: uses
   * their unlabelled audio, so a deployed model needs calibration clips of each new speaker. Reports
   * say so. @default false
   */
  speakerNorm?: boolean
  /** How the encoder states are summarised per clip: their mean, or mean and deviation. @default 'mean' */
  encoderPooling?: Pooling
  /**
   * Arithmetic of the encoder: `'auto'` is fp16 on CUDA and, on the CPU, bf16 where the CPU has it
   * natively (about 2× fp32), else fp32. The model records the resolved precision and `predictFiles`
   * encodes new clips in it. @default 'auto'
   */
  encoderPrecision?: EncoderPrecision
  /**
   * Speed perturbation of the encoder model's training clips: extra copies at these speeds; `[]` for none.
   * @default [0.9, 1.1] with the recommended preset, [] with the reference one
   */
  speedPerturb?: number[]
  index?: Omit<IndexOptions, 'onProgress' | 'signal'>
  /** Feature cache folder. @default $EMOTION_PIPELINE_CACHE/features, else ~/.cache/emotion-pipeline/features */
  cacheDir?: string | null
  /**
   * Transcripts for the text and fusion models: `'whisper'` (Whisper tiny.en through transformers.js, as
   * the reference), `'ravdess-names'` (the statement each RAVDESS file name encodes), or a map to text
   * from clip path or file name without extension. @default 'whisper'
   */
  transcripts?: Record<string, string> | 'whisper' | 'ravdess-names'
  /** Whisper settings (`transcribe()` options). The model folder defaults to `$EMOTION_PIPELINE_WHISPER_DIR`,
   * then the one `emotion-pipeline install-models` builds, then the hub. */
  whisper?: Pick<TranscribeOptions, 'model' | 'modelDir' | 'cacheDir' | 'batchSize'>
  /** Tokens per transcript. @default 6 */
  maxTokens?: number
  /** Stop with `AUDIO_DECODE` at the first clip that cannot be decoded, instead of skipping it with a `skipped` event. @default false */
  strict?: boolean
  /**
   * Longest clip in seconds: longer ones fail to decode (`AUDIO_DECODE`: skipped, or an error with
   * `strict`) before they are read whole. Clips longer than a model's window are cut to it and said so.
   * @default 600 (the core's `ExtractOptions.maxDuration`)
   */
  maxDuration?: number
  /** Use a stratified sample of this many clips (quick runs). */
  maxItems?: number
  /**
   * Continue the run already in `out`: its `split.json` (and vocabulary) must be what these options give;
   * models whose checkpoints finished are evaluated, not retrained; interrupted ones go on from their last
   * checkpoint (same result as an uninterrupted run). Without it a run in `out` is overwritten. @default false
   */
  resume?: boolean
  /**
   * Write into an `out` that holds another run (its files are replaced; files that are not a run's are
   * kept) or other files. Without it, a non-empty `out` is refused unless `resume` continues its run.
   */
  overwrite?: boolean
  /** Extra per-model training options (architecture, schedule, …). */
  train?: Partial<Record<ModelName, Partial<TrainOptions>>>
  onProgress?: (event: PipelineEvent) => void
  signal?: AbortSignal
  /**
   * Run as one rank of a data-parallel job (`'env'`: torchrun's variables, as `train --nproc-per-node N`
   * sets them; or a world's options, or a joined world). Every rank runs the same options: the feature
   * passes are split across the ranks (into `cacheDir`, which all must see), every model trains
   * data-parallel, and rank 0 alone writes the run directory and reports progress.
   */
  distributed?: DistributedOption | World
}

export type PipelineEvent =
  | { type: 'stage'; stage: string; message: string }
  | { type: 'features'; done: number; total: number }
  /** A Hub encoder's file being fetched into the Hugging Face cache (bytes; `total` 0 when unknown). */
  | { type: 'download'; file: string; done: number; total: number }
  | { type: 'transcribe'; done: number; total: number; cached: number }
  /**
   * A file left out of the run: indexing could not use it (`code` 'DATASET'), or it could not be
   * decoded (`strict: true` makes that an error).
   */
  | { type: 'skipped'; path: string; code: string; message: string }
  | (TrainEvent & { stage?: undefined })

export interface PipelineResult {
  runDir: string
  models: Partial<Record<ModelName, TrainResult>>
  files: string[]
  split: { strategy: string; train: number; val: number; test: number }
  stageSeconds: Record<string, number>
}

/** What every stage of one run shares: its options, folder, progress and timings. */
export interface Run {
  options: PipelineOptions
  runDir: string
  seed: number
  emit: (event: PipelineEvent) => void
  /** Runs `fn`, recording its seconds under `name`. */
  timed: <T>(name: string, fn: () => Promise<T> | T) => Promise<T>
  /** Says a stage started (a `stage` event), then runs it timed. */
  stage: <T>(name: string, message: string, fn: () => Promise<T> | T) => Promise<T>
  stageSeconds: Record<string, number>
  /** Lines for the report's notes. */
  notes: string[]
  /** Files written, relative to `runDir`. */
  files: string[]
  /** Files left out: by indexing, or because they could not be decoded. */
  skipped: { path: string; code: string; message: string }[]
  /** The data-parallel world this run is a rank of; undefined alone. */
  world?: World
  /** Whether this process writes the run directory (rank 0, or alone). */
  writes: boolean
}

/** Transcripts and the tokenizer fitted on the training part, for the text and fusion models. */
export interface TextInputs {
  tokenizer: Tokenizer
  textOf: (item: DatasetItem) => string
  source: string
}

/**
 * The training settings of one model from the pipeline options. Unset options stay unset: the core
 * fills in its defaults (and results carry the resolved config), so no default is restated here.
 */
export function trainSettings(o: PipelineOptions, model: ModelName, seed: number): Omit<TrainOptions, 'train'> {
  return {
    model,
    preset: o.preset,
    epochs: o.epochs,
    batchSize: o.batchSize,
    accumulation: o.accumulation,
    seed,
    amp: o.amp,
    optim: o.lr === undefined ? undefined : { lr: o.lr },
  }
}
