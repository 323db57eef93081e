// trainPipeline(): dataset folder → index → split → features → (transcripts → tokens) → train audio,
// text and fusion models → evaluate → run directory with metrics, plots and a report.
import { resolve } from 'node:path'
import { callNative, EmotionPipelineError, invalidOption, optionsJson } from './errors.js'
import { hubNameOf, resolveEncoder } from './encoder.js'
import { native } from './native.js'
import { asRank, trainingWorld } from './distributed.js'
import type { World } from './distributed.js'
import { runStages } from './pipeline-stages.js'
import { trainSettings } from './pipeline-types.js'
import type { ModelName, PipelineOptions, PipelineResult } from './pipeline-types.js'
import { defaultModels, MODEL_NAMES, uses } from './presets.js'
import { ensureWritableDir, lockRunDir } from './run-dir.js'
import { claimOut } from './run-layout.js'
import type { TrainOptions } from './train.js'

export type { ModelName, PipelineEvent, PipelineOptions, PipelineResult } from './pipeline-types.js'
export { defaultModels, MODEL_NAMES }

export async function trainPipeline(options: PipelineOptions): Promise<PipelineResult> {
  validate(options)
  const runDir = resolve(options.out)
  const { world, joined } = await trainingWorld(options.distributed)
  if (!world) return claimAndRun(options, runDir)
  // Rank 0 owns the run directory; the others start once it has claimed it (a refusal there stops
  // them at the barrier, naming rank 0's reason).
  return asRank(world, async () => {
    const result =
      world.rank === 0
        ? await claimAndRun(options, runDir, world)
        : await world.barrier('pipeline/claimed').then(() => runStages(options, runDir, world))
    if (joined) await world.leave()
    return result
  })
}

async function claimAndRun(options: PipelineOptions, runDir: string, world?: World): Promise<PipelineResult> {
  ensureWritableDir(runDir, 'out')
  const lock = lockRunDir(runDir)
  try {
    claimOut(runDir, 'train', options)
    await world?.barrier('pipeline/claimed')
    return await runStages(options, runDir, world)
  } finally {
    lock.release()
  }
}

/** Every key `PipelineOptions` has; the compiler keeps it complete, the check refuses typos such as `epoch`. */
const PIPELINE_KEYS = {
  data: true,
  out: true,
  models: true,
  preset: true,
  split: true,
  seed: true,
  epochs: true,
  batchSize: true,
  accumulation: true,
  lr: true,
  amp: true,
  device: true,
  mel: true,
  encoder: true,
  encoderInput: true,
  speakerNorm: true,
  speedPerturb: true,
  encoderPooling: true,
  encoderPrecision: true,
  index: true,
  cacheDir: true,
  transcripts: true,
  whisper: true,
  maxTokens: true,
  maxItems: true,
  resume: true,
  overwrite: true,
  train: true,
  onProgress: true,
  signal: true,
  distributed: true,
  strict: true,
  maxDuration: true,
} satisfies Record<keyof PipelineOptions, true>

function validate(o: PipelineOptions): void {
  if (!o || typeof o !== 'object') throw invalidOption('options', 'must be an object')
  if (typeof o.data !== 'string' || !o.data) throw invalidOption('data', 'must be the dataset folder')
  if (typeof o.out !== 'string' || !o.out) throw invalidOption('out', 'must be the run directory')
  for (const m of o.models ?? [])
    if (!MODEL_NAMES.includes(m)) throw invalidOption('models', `unknown model '${m}' (${MODEL_NAMES.join(', ')})`)
  if (o.models && o.models.length === 0) throw invalidOption('models', 'must name at least one model')
  const positiveInt = (name: string, v: unknown) => {
    if (v !== undefined && !(Number.isInteger(v) && (v as number) > 0)) throw invalidOption(name, `must be a positive integer, got ${v}`)
  }
  for (const key of Object.keys(o)) {
    if (!(key in PIPELINE_KEYS)) throw invalidOption(key, `unknown option (known: ${Object.keys(PIPELINE_KEYS).join(', ')})`)
  }
  for (const key of Object.keys(o.train ?? {})) {
    if (!MODEL_NAMES.includes(key as ModelName)) throw invalidOption(`train.${key}`, `unknown model (${MODEL_NAMES.join(', ')})`)
  }
  positiveInt('maxItems', o.maxItems)
  positiveInt('maxTokens', o.maxTokens)
  if (o.resume !== undefined && typeof o.resume !== 'boolean') throw invalidOption('resume', `must be true or false, got ${o.resume}`)
  // Training settings are checked by the core that owns them, before any feature is extracted.
  // Every model trained, and every model with settings under `train` (a typo there is an error even
  // when that model is not trained this time).
  const checked = new Set([...(o.models ?? defaultModels(o.preset)), ...(Object.keys(o.train ?? {}) as ModelName[])])
  for (const model of checked) {
    const { onProgress: _p, signal: _s, train: _t, val: _v, test: _x, ...extra } = (o.train?.[model] ?? {}) as Partial<TrainOptions>
    const settings = trainSettings(o, model, o.seed ?? 0)
    try {
      callNative(() => native.resolveTrainConfig(optionsJson(settings)))
    } catch (err) {
      // The pipeline's `lr` is the core's `optim.lr`.
      const e = err as EmotionPipelineError
      throw new EmotionPipelineError(e.code, e.message.replace('`optim.lr`', '`lr`'), { cause: e })
    }
    try {
      callNative(() => native.resolveTrainConfig(optionsJson({ ...settings, ...extra })))
    } catch (err) {
      // The top-level settings passed, so the fault is under train.<model>: say so in the option name.
      const e = err as EmotionPipelineError
      const named = e.message.replace(
        /^invalid option `(?:train options|([^`]+))`/,
        (_m, field?: string) => `invalid option \`train.${model}${field ? `.${field}` : ''}\``,
      )
      throw new EmotionPipelineError(e.code, named, { cause: e })
    }
  }
  if (typeof o.transcripts === 'string' && !['whisper', 'ravdess-names'].includes(o.transcripts)) {
    throw invalidOption('transcripts', `must be 'whisper', 'ravdess-names' or a { path: text } map, got '${o.transcripts}'`)
  }
  if (
    o.speedPerturb !== undefined &&
    !(Array.isArray(o.speedPerturb) && o.speedPerturb.every((x) => typeof x === 'number' && x >= 0.5 && x <= 2))
  )
    throw invalidOption('speedPerturb', `must be a list of speeds from 0.5 to 2, e.g. [0.9, 1.1], got ${JSON.stringify(o.speedPerturb)}`)
  if (o.encoderPooling !== undefined && !['mean', 'meanStd'].includes(o.encoderPooling))
    throw invalidOption('encoderPooling', `must be 'mean' or 'meanStd', got '${o.encoderPooling}'`)
  if (o.encoderPrecision !== undefined && !['auto', 'fp32', 'fp16', 'bf16'].includes(o.encoderPrecision))
    throw invalidOption('encoderPrecision', `must be 'auto', 'fp32', 'fp16' or 'bf16', got '${o.encoderPrecision}'`)
  if (o.encoderInput !== undefined && !['clip', 'padded'].includes(o.encoderInput))
    throw invalidOption('encoderInput', `must be 'clip' or 'padded', got '${o.encoderInput}'`)
  // A Hub repository is fetched when the features are made; installed names and folders are checked now.
  if ((o.models ?? defaultModels(o.preset)).some((m) => uses(m, 'embedding')) && !(o.encoder && hubNameOf(o.encoder)))
    resolveEncoder(o.encoder)
  if (typeof o.split === 'string' && !['stratified', 'speaker'].includes(o.split))
    throw invalidOption('split', `must be 'stratified', 'speaker' or split options, got '${o.split}'`)
}
