import { awaitNative, callNative, EmotionPipelineError, invalidOption, optionsJson } from './errors.js'
import { native } from './native.js'
import type { DeviceSpec } from './device.js'
import { shardedPass } from './distributed.js'
import type { World } from './distributed.js'
import { withCancel } from './cancel.js'
import { ensureWritableDir } from './run-dir.js'
import type { ExtractOptions, MelConfig } from './generated/options.js'
import type { MelFeatures as CoreMelFeatures, ProgressEvent } from './generated/results.js'
import type * as Native from '../bindings/index.js'

/**
 * Log-mel front end. Names and meaning follow `torchaudio.transforms.MelSpectrogram`; the one
 * definition, with defaults and validation, is the core's `MelConfig` (`src/generated/options.ts`).
 */
export type MelOptions = MelConfig

/** Mono samples (channels averaged) with the rate and the channel count before the downmix. */
export type DecodedAudio = Native.DecodedAudio

export type { ProgressEvent }

/** Options of `extractMel`: the core's `ExtractOptions` plus progress and cancellation. */
export interface ExtractMelOptions extends Omit<ExtractOptions, 'device'> {
  /** @default 'auto' */
  device?: DeviceSpec
  onProgress?: (event: ProgressEvent) => void
  signal?: AbortSignal
  /** Split the pass across the ranks of this world (`joinWorld`): each computes its share into `cacheDir`, then all read the whole set. */
  world?: World
}

export type AudioInput = string | { samples: Float32Array; sampleRate: number }

/** Log-mel features: the core's `MelFeatures` with the spectrograms as a typed array. */
export interface MelFeatures extends CoreMelFeatures {
  /** Row-major `[shape[0], nMels, frames]`. */
  data: Float32Array
}

/**
 * A sample rate must fit the binding's unsigned 32-bit integer; its range is the core's to check
 * (`audio::SAMPLE_RATES`), so the message is the same from every entry point.
 */
function checkRate(sampleRate: number | undefined, option: string): void {
  if (sampleRate !== undefined && !(Number.isInteger(sampleRate) && sampleRate >= 0 && sampleRate < 2 ** 32)) {
    throw invalidOption(option, `must be a whole number of Hz, got ${sampleRate}`)
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

/** Throws `INVALID_OPTION` naming the first input that is neither a path nor `{ samples, sampleRate }`. */
export function checkAudioInputs(inputs: AudioInput[]): void {
  if (!Array.isArray(inputs)) throw invalidOption('inputs', 'must be an array of paths or { samples, sampleRate }')
  inputs.forEach((input, i) => {
    if (typeof input === 'string') return
    if (!(input && input.samples instanceof Float32Array)) {
      throw invalidOption(`inputs[${i}]`, 'must be a path or { samples: Float32Array, sampleRate }')
    }
    checkRate(input.sampleRate, `inputs[${i}].sampleRate`)
  })
}

/** Log-mel spectrograms of many clips, batched on the chosen device. */
export async function extractMel(inputs: AudioInput[], options: ExtractMelOptions = {}): Promise<MelFeatures> {
  checkAudioInputs(inputs)
  const { onProgress, signal, world, ...rest } = options
  if (rest.cacheDir) ensureWritableDir(rest.cacheDir, 'cacheDir')
  const run = async (list: AudioInput[]): Promise<MelFeatures> => {
    const result = await withCancel(signal, (token) =>
      awaitNative(
        native.extractMel(
          list,
          optionsJson(rest),
          onProgress ? (json: string) => onProgress(JSON.parse(json) as ProgressEvent) : undefined,
          token,
        ),
      ),
    )
    return { ...(JSON.parse(result.featuresJson) as CoreMelFeatures), data: result.data }
  }
  return world ? shardedPass(world, rest.cacheDir, inputs, run) : run(inputs)
}

export { EmotionPipelineError }
