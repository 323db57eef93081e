// What `EmotionModel.predict` takes and returns: inputs of any kind (paths, encoded files in memory,
// samples) checked and handed to the core, and its rows turned into transformers.js-style results
// (`scores` sorted, `topK`), one error per bad input.
import { EmotionPipelineError, invalidOption, optionsJson } from './errors.js'
import type { ErrorCode } from './errors.js'
import type { DeviceSpec } from './device.js'
import type { AudioInput } from './audio.js'
import type { InferOptions } from './generated/options.js'
import type { PredictRow } from './generated/results.js'

/** A file path, an encoded file (WAV, FLAC, Ogg Vorbis, MP3) in memory, or mono samples at a rate. */
export type PredictInput = string | Uint8Array | { samples: Float32Array; sampleRate: number }

/** Options of `predict`: the core's `InferOptions` (window, voice gate, long inputs…) and the call's own. */
export interface PredictOptions extends Omit<InferOptions, 'device' | 'encoderDir'> {
  /** Where audio is featurised. @default the device the model was loaded on */
  device?: DeviceSpec
  /** Scores kept per result, best first. @default all labels */
  topK?: number
  /** Throw the first input's error instead of returning it in its row. @default false */
  strict?: boolean
  signal?: AbortSignal
  /** Unlabelled clips of the speaker of `inputs`, for a model trained with `speakerNorm`. */
  calibration?: AudioInput[]
}

export interface LabelScore {
  label: string
  score: number
}

/** One input's prediction. */
export interface PredictResult {
  /** The input's position in the call. */
  input: number
  /** The input's path, when it was one. */
  path?: string
  label: string
  labelIndex: number
  /** `[{ label, score }]`, best first, `topK` of them (as transformers.js' audio-classification). */
  scores: LabelScore[]
  /** One probability per label, in the model's label order. */
  probabilities: number[]
  /** The input's length in seconds. */
  seconds: number
  /** Windows averaged: 1 unless the input was longer than the model's window (`longInput`). */
  windows: number
  /** Whether any window was speech (the voice gate; a single window is not gated). */
  speech: boolean
  error?: undefined
}

/** An input that could not be scored: its own error, the other inputs' results stand. */
export interface PredictFailure {
  input: number
  path?: string
  error: { code: ErrorCode; message: string }
}

export type PredictRowResult = PredictResult | PredictFailure

/** The binding's input shape: exactly one of path, bytes, samples. */
export interface NativeInput {
  path?: string
  bytes?: Uint8Array
  samples?: Float32Array
  sampleRate?: number
}

/** Checks each input's kind (a wrong kind is a programming error: INVALID_OPTION naming it). */
export function toNativeInputs(inputs: PredictInput[], option = 'inputs'): NativeInput[] {
  if (!Array.isArray(inputs)) {
    throw invalidOption(
      option,
      'must be an array of paths, Buffers/Uint8Arrays or { samples, sampleRate } (features go to predictFeatures since 0.3)',
    )
  }
  return inputs.map((input, i) => {
    if (typeof input === 'string' && input !== '') return { path: input }
    if (input instanceof Uint8Array) return { bytes: input }
    if (input && typeof input === 'object' && 'samples' in input && input.samples instanceof Float32Array) {
      const rate = input.sampleRate
      if (!(Number.isInteger(rate) && rate > 0 && rate < 2 ** 32)) {
        throw invalidOption(`${option}[${i}].sampleRate`, `must be a whole number of Hz, got ${rate}`)
      }
      return { samples: input.samples, sampleRate: rate }
    }
    throw invalidOption(`${option}[${i}]`, 'must be a path, a Buffer/Uint8Array or { samples: Float32Array, sampleRate }')
  })
}

/** Sorted `{ label, score }`, the best `topK`. */
export function topScores(probabilities: number[], labels: string[], topK?: number): LabelScore[] {
  const scores = probabilities.map((score, i) => ({ label: labels[i], score })).sort((a, b) => b.score - a.score)
  return topK === undefined ? scores : scores.slice(0, topK)
}

export function checkTopK(topK: number | undefined, labels: number): void {
  if (topK !== undefined && !(Number.isInteger(topK) && topK >= 1)) {
    throw invalidOption('topK', `must be a whole number from 1 (the model has ${labels} labels), got ${topK}`)
  }
}

/** The core's rows as results; `strict` throws the first error instead. */
export function toResults(rows: PredictRow[], inputs: PredictInput[], labels: string[], options: PredictOptions): PredictRowResult[] {
  return rows.map((row) => {
    const input = inputs[row.input]
    const path = typeof input === 'string' ? { path: input } : {}
    if (row.error || !row.prediction) {
      const error = row.error ?? { code: 'INTERNAL' as ErrorCode, message: 'no prediction' }
      if (options.strict) throw new EmotionPipelineError(error.code, error.message)
      return { input: row.input, ...path, error: { code: error.code, message: error.message } }
    }
    const p = row.prediction
    return {
      input: row.input,
      ...path,
      label: p.label,
      labelIndex: p.labelIndex,
      scores: topScores(p.probabilities, labels, options.topK),
      probabilities: p.probabilities,
      seconds: p.seconds,
      windows: p.windows,
      speech: p.speech,
    }
  })
}

/** The keys of windowing and featurising that `predict`, `timeline` and `stream` all take. */
export const WINDOW_KEYS = {
  device: true,
  maxDuration: true,
  window: true,
  hop: true,
  vad: true,
  minVoiced: true,
  decodeThreads: true,
} as const

/**
 * The keys `predict` takes, kept complete by the compiler (a key added to `PredictOptions` or the core's
 * `InferOptions` must be added here): a misspelt key is refused by name instead of reaching the core.
 */
export const PREDICT_KEYS = Object.keys({
  topK: true,
  strict: true,
  signal: true,
  calibration: true,
  longInput: true,
  batchSize: true,
  ...WINDOW_KEYS,
} satisfies Record<keyof PredictOptions, true>)

/** The core's options from a call's: what crosses the boundary. */
export function inferOptions(options: Omit<PredictOptions, 'topK' | 'strict' | 'signal' | 'calibration'>, encoderDir?: string): string {
  const { device, ...rest } = options
  return optionsJson({ ...rest, device, encoderDir } satisfies InferOptions)
}
