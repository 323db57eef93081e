import { awaitNative, callNative, EmotionPipelineError, invalidOption, optionsJson } from './errors.js'
import { native } from './native.js'
import type { DeviceSpec } from './device.js'
import { withCancel } from './cancel.js'
import { ensureWritableDir } from './run-dir.js'
import type { MelConfig } from './generated/options.js'

/**
 * Log-mel front end. Names and meaning follow `torchaudio.transforms.MelSpectrogram`; the one
 * definition, with defaults and validation, is the core's `MelConfig` (`src/generated/options.ts`).
 */
export type MelOptions = MelConfig

export interface DecodedAudio {
  /** Mono samples (channels averaged). */
  samples: Float32Array
  sampleRate: number
  durationSeconds: number
  /** Channels in the file before the downmix. */
  channels: number
}

export interface ProgressEvent {
  stage: string
  done: number
  total: number
  failed: number
}

export interface ExtractMelOptions {
  mel?: MelOptions
  /** @default 'auto' */
  device?: DeviceSpec
  /** Clips per batch on the device. @default 64 */
  batchSize?: number
  /** Reject on the first bad input instead of listing it in `failed`. @default false */
  strict?: boolean
  /** CPU threads that decode and resample; 0 = all cores. @default 0 */
  decodeThreads?: number
  /** On-disk feature cache keyed by file content + mel settings; off when not given. */
  cacheDir?: string
  onProgress?: (event: ProgressEvent) => void
  signal?: AbortSignal
}

export type AudioInput = string | { samples: Float32Array; sampleRate: number }

export interface MelFeatures {
  /** Row-major `[shape[0], nMels, frames]`. */
  data: Float32Array
  shape: [number, number, number]
  /** `indices[i]` is the input that row `i` came from. */
  indices: number[]
  /** Inputs that could not be featurised, with the reason. */
  failed: { index: number; path: string; code: string; message: string }[]
  /** Device the spectrograms were computed on. */
  device: string
  /** Cache counts when `cacheDir` was given. */
  cache?: { hits: number; misses: number; writes: number }
}

function checkRate(sampleRate: number | undefined, option: string): void {
  if (sampleRate !== undefined && !(Number.isInteger(sampleRate) && sampleRate >= 1000 && sampleRate <= 384000)) {
    throw invalidOption(option, `must be an integer from 1000 to 384000 Hz, got ${sampleRate}`)
  }
}

/** Decodes WAV, FLAC, Ogg Vorbis or MP3 to mono; resamples when `sampleRate` is given. */
export async function decodeAudio(path: string, options: { sampleRate?: number } = {}): Promise<DecodedAudio> {
  if (typeof path !== 'string' || path === '') throw invalidOption('path', 'must be a non-empty string')
  checkRate(options.sampleRate, 'sampleRate')
  return awaitNative(native.decodeAudio(path, options.sampleRate))
}

export function decodeAudioSync(path: string, options: { sampleRate?: number } = {}): DecodedAudio {
  if (typeof path !== 'string' || path === '') throw invalidOption('path', 'must be a non-empty string')
  checkRate(options.sampleRate, 'sampleRate')
  return callNative(() => native.decodeAudioSync(path, options.sampleRate))
}

/** Log-mel spectrograms of many clips, batched on the chosen device. */
export async function extractMel(inputs: AudioInput[], options: ExtractMelOptions = {}): Promise<MelFeatures> {
  if (!Array.isArray(inputs)) throw invalidOption('inputs', 'must be an array of paths or { samples, sampleRate }')
  inputs.forEach((input, i) => {
    if (typeof input === 'string') return
    if (!(input && input.samples instanceof Float32Array)) {
      throw invalidOption(`inputs[${i}]`, 'must be a path or { samples: Float32Array, sampleRate }')
    }
    checkRate(input.sampleRate, `inputs[${i}].sampleRate`)
  })
  const { onProgress, signal, ...rest } = options
  if (rest.cacheDir) ensureWritableDir(rest.cacheDir, 'cacheDir')
  const result = await withCancel(signal, (token) =>
    awaitNative(
      native.extractMel(
        inputs,
        optionsJson(rest),
        onProgress ? (json: string) => onProgress(JSON.parse(json) as ProgressEvent) : undefined,
        token,
      ),
    ),
  )
  return { ...result, shape: result.shape as [number, number, number] }
}

export { EmotionPipelineError }
