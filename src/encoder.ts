import { existsSync, statSync } from 'node:fs'
import { basename, resolve } from 'node:path'
import { checkAudioInputs } from './audio.js'
import type { AudioInput } from './audio.js'
import { withCancel } from './cancel.js'
import type { DeviceSpec } from './device.js'
import { awaitNative, EmotionPipelineError, invalidOption, optionsJson } from './errors.js'
import type { EmbedOptions, EncoderIdentity } from './generated/options.js'
import type { Embeddings as CoreEmbeddings, ProgressEvent } from './generated/results.js'
import { native } from './native.js'
import { ensureWritableDir } from './run-dir.js'

import { DEFAULT_ENCODER, ENCODER_NAMES, ENCODERS, installedEncoderDir, isEncoderInstalled } from './encoder-install.js'
import type { EncoderName } from './encoder-install.js'

/** Encoders installed by name (`npx emotion-pipeline install-models --encoder NAME`): defined in encoder-install.ts. */
export { DEFAULT_ENCODER, ENCODER_NAMES, installedEncoderDir }
export type { EncoderName }

/** Options of `extractEmbeddings`: the core's `EmbedOptions` with the encoder named or given as a folder. */
export interface ExtractEmbeddingsOptions extends Omit<EmbedOptions, 'modelDir' | 'device'> {
  /** An installed encoder's name, or a folder holding a CTranslate2 Whisper `model.bin`. @default 'whisper-base' */
  encoder?: EncoderName | string
  /** @default 'auto' */
  device?: DeviceSpec
  onProgress?: (event: ProgressEvent) => void
  signal?: AbortSignal
}

/** Pooled encoder states: the core's `Embeddings` with the rows as a typed array. */
export interface Embeddings extends CoreEmbeddings {
  /** Row-major `[shape[0], layers + 1, width]`. */
  data: Float32Array
}

/**
 * Where `encoder` (a name or a folder) comes from, as a model's spec records it: an installed encoder
 * by name, a folder by its own name only (never an absolute path: model folders move between machines).
 */
export function encoderLocation(encoder: string): Pick<EncoderIdentity, 'source' | 'name'> {
  if ((ENCODER_NAMES as readonly string[]).includes(encoder)) return { source: 'installed', name: encoder }
  return { source: 'folder', name: basename(resolve(encoder)) }
}

/** The folder of `encoder` (a name or a path); `MODEL_NOT_FOUND` with the command that installs it. */
export function resolveEncoder(encoder: string = DEFAULT_ENCODER): string {
  if (typeof encoder !== 'string' || encoder === '') throw invalidOption('encoder', `must be ${ENCODER_NAMES.join(', ')} or a folder`)
  if ((ENCODER_NAMES as readonly string[]).includes(encoder)) {
    const dir = installedEncoderDir(encoder as EncoderName)
    if (!isEncoderInstalled(encoder as EncoderName)) {
      throw new EmotionPipelineError(
        'MODEL_NOT_FOUND',
        `the ${encoder} encoder is not installed in ${dir}; install it with \`npx emotion-pipeline install-models --encoder ${encoder}\` (downloads it once, ${(ENCODERS[encoder as EncoderName].bytes / 1e6).toFixed(0)} MB)`,
      )
    }
    return dir
  }
  const dir = resolve(encoder)
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new EmotionPipelineError(
      'MODEL_NOT_FOUND',
      `encoder ${encoder} is neither an installed encoder (${ENCODER_NAMES.join(', ')}) nor a folder with a CTranslate2 Whisper model.bin`,
    )
  }
  return dir
}

/**
 * Runs a frozen Whisper encoder over each clip and mean-pools every layer's states over the clip's
 * own frames: `[clips, layers + 1, width]`, cached by content when `cacheDir` is given.
 */
export async function extractEmbeddings(inputs: AudioInput[], options: ExtractEmbeddingsOptions = {}): Promise<Embeddings> {
  checkAudioInputs(inputs)
  const { encoder, onProgress, signal, ...rest } = options
  const modelDir = resolveEncoder(encoder)
  if (rest.cacheDir) ensureWritableDir(rest.cacheDir, 'cacheDir')
  const result = await withCancel(signal, (token) =>
    awaitNative(
      native.extractEmbeddings(
        inputs,
        optionsJson({ ...rest, modelDir }),
        onProgress ? (json: string) => onProgress(JSON.parse(json) as ProgressEvent) : undefined,
        token,
      ),
    ),
  )
  return { ...(JSON.parse(result.featuresJson) as CoreEmbeddings), data: result.data }
}
