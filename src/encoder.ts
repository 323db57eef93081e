import { existsSync, statSync } from 'node:fs'
import { basename, resolve } from 'node:path'
import { checkAudioInputs } from './audio.js'
import type { AudioInput } from './audio.js'
import { withCancel } from './cancel.js'
import type { DeviceSpec } from './device.js'
import { shardedPass } from './distributed.js'
import type { World } from './distributed.js'
import { awaitNative, EmotionPipelineError, invalidOption, optionsJson } from './errors.js'
import { DEFAULTS } from './generated/options.js'
import type { EmbedOptions, EncoderIdentity } from './generated/options.js'
import type { Embeddings as CoreEmbeddings, ProgressEvent } from './generated/results.js'
import { native } from './native.js'
import { ensureWritableDir } from './run-dir.js'

import { DEFAULT_ENCODER, ENCODER_NAMES, ENCODERS, installedEncoderDir, isEncoderInstalled } from './encoder-install.js'
import { cachedAt, cachedEncoderBySha, hubEncoder, parseHubName } from './hub.js'
import type { HubName } from './hub.js'
import type { DownloadProgress } from './download.js'

/** Progress and cancellation of a Hub download. */
export type HubOptions = Parameters<typeof hubEncoder>[1]
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
  /** Extraction progress, and (stage `download`, `done`/`total` in bytes, `file`) a Hub encoder's download. */
  onProgress?: (event: EmbeddingsProgress) => void
  signal?: AbortSignal
  /** Split the pass across the ranks of this world (`joinWorld`): each computes its share into `cacheDir`, then all read the whole set. */
  world?: World
}

/** Progress of `extractEmbeddings`: the core's stages, and `download` while a Hub encoder is fetched. */
export type EmbeddingsProgress = ProgressEvent & { file?: string }

/** Pooled encoder states: the core's `Embeddings` with the rows as a typed array. */
export interface Embeddings extends CoreEmbeddings {
  /** Row-major `[shape[0], layers + 1, width]`. */
  data: Float32Array
  /**
   * What a model trained on these states records of its encoder, so that it can featurise audio the
   * same way: `train()` takes it from here when its `encoderSource` is not given.
   */
  encoderSource: EncoderIdentity
}

/** The identity a model on `states` records: where the encoder came from and how the states were made. */
export function identityOf(
  location: Pick<EncoderIdentity, 'source' | 'name'>,
  states: Pick<CoreEmbeddings, 'modelSha256' | 'precision' | 'heads'>,
  made: { input?: EncoderIdentity['input']; pooling?: EncoderIdentity['pooling']; speakerNorm?: boolean },
): EncoderIdentity {
  return {
    ...location,
    sha256: states.modelSha256,
    input: made.input ?? DEFAULTS.EmbedOptions.input,
    pooling: made.pooling ?? DEFAULTS.EmbedOptions.pooling,
    precision: states.precision,
    speakerNorm: made.speakerNorm === true,
    heads: states.heads,
  }
}

const isInstalledName = (encoder: string) => (ENCODER_NAMES as readonly string[]).includes(encoder)

/** `encoder` names a Hub repository: `org/name[@revision]` that is not a local folder. */
export function hubNameOf(encoder: string): HubName | undefined {
  return existsSync(encoder) ? undefined : parseHubName(encoder)
}

/**
 * The folder of `encoder`: an installed encoder's name, a local folder, or a Hugging Face Hub repository
 * `org/name[@revision]` (fetched into the Hugging Face cache once; `HF_HUB_OFFLINE=1` uses the cache only).
 */
export async function encoderFolder(encoder: string = DEFAULT_ENCODER, options: HubOptions = {}): Promise<string> {
  const hub = typeof encoder === 'string' ? hubNameOf(encoder) : undefined
  return hub ? (await hubEncoder(hub, options)).dir : resolveEncoder(encoder)
}

/**
 * Where `encoder` comes from, as a model's spec records it: an installed encoder by name, a Hub
 * repository at the commit it resolved to, a folder by its own name only (never an absolute path: model
 * folders move between machines).
 */
export async function encoderLocation(encoder: string, options: HubOptions = {}): Promise<Pick<EncoderIdentity, 'source' | 'name'>> {
  if (isInstalledName(encoder)) return { source: 'installed', name: encoder }
  const hub = hubNameOf(encoder)
  if (hub) return { source: 'hub', name: `${hub.repo}@${(await hubEncoder(hub, options)).commit}` }
  return { source: 'folder', name: basename(resolve(encoder)) }
}

/** The identity a model records for the encoder in `dir` (the core's: SHA-256 of its weights, once per process). */
export function encoderSha256(dir: string): Promise<string> {
  return awaitNative(native.encoderSha256(dir))
}

/**
 * The folder of the encoder a model was trained on (`identity`, from its spec): `override` (a name or a
 * folder) when given, checked by SHA-256; a Hub encoder from its repository at its commit; else the
 * installed encoder, or the Hugging Face cache's, with that SHA-256, whatever the model called it (a
 * model folder copied to another machine finds the same encoder there). Otherwise
 * `MODEL_NOT_FOUND` naming the SHA-256 and the override.
 */
export async function findEncoder(identity: EncoderIdentity, override?: string): Promise<string> {
  const described = `the ${identity.source} encoder '${identity.name}' (weights SHA-256 ${identity.sha256})`
  const checked = async (dir: string) => {
    const sha = await encoderSha256(dir)
    if (sha !== identity.sha256)
      throw new EmotionPipelineError(
        'MODEL_NOT_FOUND',
        `the model was trained on ${described}, but ${dir} holds SHA-256 ${sha}: give the same encoder`,
      )
    return dir
  }
  if (override !== undefined) return checked(await encoderFolder(override))
  // Without the network first: the Hub snapshot at the recorded commit, an installed encoder or a
  // Hugging Face cache blob with the SHA-256; the Hub itself last.
  const hub = identity.source === 'hub' ? parseHubName(identity.name) : undefined
  const atCommit = hub && cachedAt(hub.repo, hub.revision)
  if (atCommit) return checked(atCommit)
  const installed = ENCODER_NAMES.find((n) => ENCODERS[n].sha256 === identity.sha256)
  if (installed && isEncoderInstalled(installed)) return installedEncoderDir(installed)
  const inHubCache = cachedEncoderBySha(identity.sha256)
  if (inHubCache) return inHubCache
  if (hub) return checked((await hubEncoder(hub)).dir)
  const howToGive = 'give its folder with loadModel(dir, { encoder: DIR }) (CLI: predict --encoder DIR)'
  if (installed)
    throw new EmotionPipelineError(
      'MODEL_NOT_FOUND',
      `the model was trained on ${described}, which is ${installed}, not installed in ${installedEncoderDir(installed)}: install it with \`npx emotion-pipeline install-models --encoder ${installed}\`, or ${howToGive}`,
    )
  throw new EmotionPipelineError(
    'MODEL_NOT_FOUND',
    `the model was trained on ${described}, which is not an installed encoder (${ENCODER_NAMES.join(', ')}): ${howToGive}`,
  )
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
      `encoder ${encoder} is neither an installed encoder (${ENCODER_NAMES.join(', ')}), a folder with a Whisper encoder (a CTranslate2 model.bin, or config.json with model.safetensors) nor a Hugging Face Hub repository (org/name[@revision])`,
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
  const { encoder, onProgress, signal, world, ...rest } = options
  const download =
    onProgress &&
    ((p: DownloadProgress & { file: string }) =>
      onProgress({ stage: 'download', file: p.file, done: p.done, total: p.total ?? 0, failed: 0 }))
  const modelDir = await encoderFolder(encoder, { signal, onProgress: download })
  if (rest.cacheDir) ensureWritableDir(rest.cacheDir, 'cacheDir')
  const run = async (list: AudioInput[]): Promise<Embeddings> => {
    const result = await withCancel(signal, (token) =>
      awaitNative(
        native.extractEmbeddings(
          list,
          optionsJson({ ...rest, modelDir }),
          onProgress ? (json: string) => onProgress(JSON.parse(json) as ProgressEvent) : undefined,
          token,
        ),
      ),
    )
    const states = JSON.parse(result.featuresJson) as CoreEmbeddings
    return { ...states, data: result.data, encoderSource: identityOf(location, states, rest) }
  }
  const location = await encoderLocation(encoder ?? DEFAULT_ENCODER, { signal })
  return world ? shardedPass(world, rest.cacheDir, inputs, run) : run(inputs)
}
