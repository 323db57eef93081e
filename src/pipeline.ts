// trainPipeline(): dataset folder → index → split → features → (transcripts → tokens) → train audio,
// text and fusion models → evaluate → run directory with metrics, plots and a report.
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { basename, join, resolve } from 'node:path'
import { extractMel } from './audio.js'
import type { MelOptions } from './audio.js'
import { indexDataset, loadSplit, saveSplit, splitDataset } from './dataset.js'
import type { DatasetItem, IndexOptions, Split, SplitOptions } from './dataset.js'
import { deviceInfo } from './device.js'
import type { DeviceSpec } from './device.js'
import { callNative, EmotionPipelineError, invalidOption, optionsJson } from './errors.js'
import { native } from './native.js'
import { cacheRoot } from './cache.js'
import { ensureWritableDir, lockRunDir } from './run-dir.js'
import { REFERENCE_ACCURACY, reportMarkdown, trainingSeconds, writeHistoryCsv, writePlots } from './report.js'
import { RAVDESS_STATEMENTS, Tokenizer } from './tokenizer.js'
import { train } from './train.js'
import { bundledWhisperDir, transcribe } from './transcribe.js'
import type { TranscribeOptions } from './transcribe.js'
import type { TrainEvent, TrainOptions, TrainResult, TrainSet } from './train.js'
import { DEFAULTS } from './generated/options.js'
import type { TrainConfig } from './generated/options.js'

export type ModelName = 'audio' | 'text' | 'fusion'

/** Training settings shared by every model (the core's `TrainConfig` fields, defaults there). */
type SharedTrainSettings = Pick<TrainConfig, 'epochs' | 'batchSize' | 'accumulation' | 'seed' | 'amp'>

export interface PipelineOptions extends SharedTrainSettings {
  /** Dataset folder (RAVDESS names, `<label>/` folders, or use `index.manifest`). */
  data: string
  /** Run directory (created). */
  out: string
  /** @default ['audio', 'text', 'fusion'] */
  models?: ModelName[]
  /** `stratified` 80/20 (the reference), `speaker` (no speaker in two parts), or full split options. @default 'stratified' */
  split?: 'stratified' | 'speaker' | SplitOptions
  /** Adam's learning rate for every model: the core's `optim.lr` (`AdamConfig.lr`, whose default applies). */
  lr?: number
  /** @default 'auto' */
  device?: DeviceSpec
  mel?: MelOptions
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
   * then the one `scripts/whisper.mjs` builds, then the hub. */
  whisper?: Pick<TranscribeOptions, 'model' | 'modelDir' | 'cacheDir' | 'batchSize'>
  /** Tokens per transcript. @default 6 */
  maxTokens?: number
  /** Stop with `AUDIO_DECODE` at the first clip that cannot be decoded, instead of skipping it with a `skipped` event. @default false */
  strict?: boolean
  /** Use a stratified sample of this many clips (quick runs). */
  maxItems?: number
  /**
   * Continue the run already in `out`: its `split.json` (and vocabulary) must be what these options give;
   * models whose checkpoints finished are evaluated, not retrained; interrupted ones go on from their last
   * checkpoint (same result as an uninterrupted run). Without it a run in `out` is overwritten. @default false
   */
  resume?: boolean
  /** Extra per-model training options (architecture, schedule, …). */
  train?: Partial<Record<ModelName, Partial<TrainOptions>>>
  onProgress?: (event: PipelineEvent) => void
  signal?: AbortSignal
}

export type PipelineEvent =
  | { type: 'stage'; stage: string; message: string }
  | { type: 'features'; done: number; total: number }
  | { type: 'transcribe'; done: number; total: number; cached: number }
  /** A clip that could not be decoded was left out of the run (`strict: true` makes it an error). */
  | { type: 'skipped'; path: string; code: string; message: string }
  | (TrainEvent & { stage?: undefined })

export interface PipelineResult {
  runDir: string
  models: Partial<Record<ModelName, TrainResult>>
  files: string[]
  split: { strategy: string; train: number; val: number; test: number }
  stageSeconds: Record<string, number>
}

const DEFAULT_MODELS: ModelName[] = ['audio', 'text', 'fusion']

export async function trainPipeline(options: PipelineOptions): Promise<PipelineResult> {
  validate(options)
  const runDir = resolve(options.out)
  ensureWritableDir(runDir, 'out')
  const lock = lockRunDir(runDir)
  try {
    return await runStages(options, runDir)
  } finally {
    lock.release()
  }
}

async function runStages(options: PipelineOptions, runDir: string): Promise<PipelineResult> {
  const emit = options.onProgress ?? (() => {})
  const stage = (name: string, message: string) => emit({ type: 'stage', stage: name, message })
  const models = options.models ?? DEFAULT_MODELS
  const seed = options.seed ?? DEFAULTS.TrainConfig.seed
  const stageSeconds: Record<string, number> = {}
  const timed = async <T>(name: string, fn: () => Promise<T> | T): Promise<T> => {
    const t0 = performance.now()
    try {
      return await fn()
    } finally {
      stageSeconds[name] = (performance.now() - t0) / 1000
    }
  }
  const info = deviceInfo()
  const device = options.device ?? 'auto'
  const deviceName = device === 'auto' ? (info.cudaAvailable ? 'cuda:0' : 'cpu') : device
  const cacheDir = options.cacheDir === null ? undefined : (options.cacheDir ?? join(cacheRoot(), 'features'))

  stage('index', `indexing ${options.data}`)
  const index = await timed('index', () => indexDataset(options.data, { ...options.index, signal: options.signal }))
  if (index.items.length === 0) throw new EmotionPipelineError('DATASET', `no usable clips in ${options.data}`)
  let items = index.items
  if (options.maxItems && options.maxItems < items.length) {
    items = splitDataset(items, { testFraction: options.maxItems / items.length, seed }).test
  }
  const labels = [...new Set(items.map((i) => i.label))]
  const ravdessOrder = ['neutral', 'calm', 'happy', 'sad', 'angry', 'fearful', 'disgust', 'surprised']
  if (labels.every((l) => ravdessOrder.includes(l))) labels.sort((a, b) => ravdessOrder.indexOf(a) - ravdessOrder.indexOf(b))
  else labels.sort()

  const splitOptions: SplitOptions =
    typeof options.split === 'object' ? { seed, ...options.split } : { strategy: options.split ?? 'stratified', testFraction: 0.2, seed }
  const split: Split = splitDataset(items, splitOptions)
  if (options.resume) checkSameSplit(join(runDir, 'split.json'), split)
  saveSplit(split, join(runDir, 'split.json'))
  stage('split', `${split.options.strategy}: ${split.train.length} train, ${split.val.length} val, ${split.test.length} test`)

  stage('features', 'log-mel spectrograms')
  const features = await timed('features', async () => {
    const all = [...split.train, ...split.val, ...split.test]
    const mel = await extractMel(
      all.map((i) => i.path),
      {
        mel: options.mel,
        device,
        cacheDir,
        strict: options.strict ?? false,
        signal: options.signal,
        onProgress: (e) => emit({ type: 'features', done: e.done, total: e.total }),
      },
    )
    return mel
  })
  const notes: string[] = []
  const per = features.shape[1] * features.shape[2]
  const sliceMel = (from: number, count: number): TrainSet['mel'] => ({
    data: features.data.subarray(from * per, (from + count) * per),
    shape: [count, features.shape[1], features.shape[2]],
  })
  const labelIds = (list: DatasetItem[]) => Int32Array.from(list.map((i) => labels.indexOf(i.label)))
  // A clip that cannot be featurised is skipped, said in a `skipped` event and counted in metrics.json
  // and the report; `strict: true` makes it an error instead. Rows are in input order without it.
  const skipped = features.failed.map((f) => ({ path: f.path, code: f.code, message: f.message }))
  for (const s of skipped) emit({ type: 'skipped', ...s })
  const failedInputs = new Set(features.failed.map((f) => f.index))
  const keep = (list: DatasetItem[], offset: number) => list.filter((_, i) => !failedInputs.has(offset + i))
  const parts = {
    train: keep(split.train, 0),
    val: keep(split.val, split.train.length),
    test: keep(split.test, split.train.length + split.val.length),
  }
  if (parts.train.length === 0) throw new EmotionPipelineError('DATASET', 'no training clip could be decoded (see the skipped events)')
  if (skipped.length > 0)
    notes.push(`Skipped ${skipped.length} clip(s) that could not be decoded: ${skipped.map((s) => s.path).join(', ')}.`)
  const offsets = { train: 0, val: parts.train.length, test: parts.train.length + parts.val.length }

  // Text inputs, only when a text-using model is asked for.
  let tokenizer: Tokenizer | undefined
  let transcriptSource = 'none'
  const needsText = models.some((m) => m !== 'audio')
  const allItems = [...parts.train, ...parts.val, ...parts.test]
  const textOf = needsText ? await timed('transcripts', () => transcriptsFor(options, allItems, stage, emit)) : undefined
  if (textOf) {
    const source = options.transcripts ?? 'whisper'
    transcriptSource =
      typeof source === 'object'
        ? 'provided'
        : source === 'whisper'
          ? 'Whisper tiny.en (transformers.js)'
          : 'RAVDESS statements from the file names'
    tokenizer = Tokenizer.fit(
      parts.train.map((i) => textOf(i)),
      options.maxTokens,
    )
    if (options.resume) checkSameVocabulary(join(runDir, 'vocabulary.json'), tokenizer.vocabulary)
    writeFileSync(join(runDir, 'vocabulary.json'), JSON.stringify(tokenizer.toJSON(), null, 1))
    writeFileSync(join(runDir, 'transcripts.json'), JSON.stringify(Object.fromEntries(allItems.map((i) => [i.path, textOf(i)])), null, 1))
    notes.push(
      `Text: ${transcriptSource}; vocabulary of ${tokenizer.vocabulary.length} tokens from the training split, max ${tokenizer.maxLength} tokens.`,
    )
  }
  const set = (name: keyof typeof parts): TrainSet | undefined => {
    const list = parts[name]
    if (list.length === 0) return undefined
    return {
      mel: sliceMel(offsets[name], list.length),
      tokens: tokenizer ? { data: tokenizer.encodeAll(list.map((i) => textOf!(i))), shape: [list.length, tokenizer.maxLength] } : undefined,
      labels: labelIds(list),
    }
  }
  const sets = { train: set('train')!, val: set('val'), test: set('test') }

  const results: Partial<Record<ModelName, TrainResult>> = {}
  const files: string[] = ['split.json']
  for (const model of models) {
    const name = `train-${model}`
    stage(name, `training the ${model} model`)
    results[model] = await timed(name, () =>
      train({
        ...trainSettings(options, model, seed),
        labels,
        device,
        vocabSize: tokenizer?.vocabulary.length,
        vocabulary: tokenizer?.vocabulary,
        mel: options.mel ?? {},
        checkpointDir: join(runDir, 'models', model),
        resume: options.resume,
        ...options.train?.[model],
        train: model === 'text' ? { ...sets.train, mel: undefined } : model === 'audio' ? { ...sets.train, tokens: undefined } : sets.train,
        val: sets.val && (model === 'text' ? { ...sets.val, mel: undefined } : sets.val),
        test: sets.test && (model === 'text' ? { ...sets.test, mel: undefined } : sets.test),
        onProgress: (e) => emit(e),
        signal: options.signal,
      }),
    )
    files.push(`models/${model}/best.safetensors`, `models/${model}/best.json`)
  }

  stage('report', `writing ${runDir}`)
  await timed('report', () => {
    const trained = results as Record<string, TrainResult>
    writeHistoryCsv(join(runDir, 'history.csv'), trained)
    for (const [model, r] of Object.entries(trained)) files.push(...writePlots(runDir, model, r, r.test))
    const metrics = {
      reference: REFERENCE_ACCURACY,
      split: { strategy: split.options.strategy, seed, train: split.train.length, val: split.val.length, test: split.test.length },
      skipped,
      models: Object.fromEntries(
        Object.entries(trained).map(([m, r]) => [
          m,
          {
            test: r.test,
            val: r.val,
            bestEpoch: r.bestEpoch,
            epochs: r.history.length,
            trainSeconds: trainingSeconds(r),
            seconds: r.seconds,
            precision: r.precision,
            device: r.device,
          },
        ]),
      ),
      stageSeconds,
    }
    writeFileSync(join(runDir, 'metrics.json'), JSON.stringify(metrics, null, 1))
    const config = {
      options: { ...options, onProgress: undefined, signal: undefined, transcripts: transcriptSource },
      // What the run used, defaults filled in, so a run can be repeated from this file alone.
      effective: {
        models,
        split: split.options,
        // The pipeline-level settings as the core resolves them (no default restated here)…
        ...pipelineLevel(options, seed),
        // …and per model, as each job ran (defaults filled in); data-derived fields left out.
        trainConfig: Object.fromEntries(
          Object.entries(trained).map(([m, r]) => [m, { ...r.config, labels: undefined, vocabulary: undefined, checkpointDir: undefined }]),
        ),
        precision: Object.fromEntries(Object.entries(trained).map(([m, r]) => [m, r.precision])),
        mel: options.mel ?? 'defaults',
        maxTokens: tokenizer?.maxLength ?? null,
        maxItems: options.maxItems ?? null,
        train: options.train ?? {},
      },
      labels,
      device: deviceName,
      torch: info.torchVersion,
      cpus: cpus().length,
      node: process.version,
      package: 'emotion-pipeline',
      dataset: { root: index.root, items: index.items.length, duplicates: index.duplicates.length, problems: index.problems.length },
    }
    writeFileSync(join(runDir, 'config.json'), JSON.stringify(config, null, 1))
    if (index.duplicates.length)
      notes.push(`${index.duplicates.length} duplicate clip(s) left out: ${index.duplicates.map((d) => basename(d.path)).join(', ')}.`)
    if (index.problems.length)
      notes.push(
        `${index.problems.length} file(s) left out by indexing: ${index.problems.map((p) => `${basename(p.path)} (${p.kind}: ${p.message})`).join('; ')}.`,
      )
    writeFileSync(
      join(runDir, 'report.md'),
      reportMarkdown({
        results: trained,
        split: { strategy: split.options.strategy, train: split.train.length, val: split.val.length, test: split.test.length, seed },
        device: deviceName,
        machine: `${cpus().length} CPU cores${info.devices[0] ? `, ${info.devices[0].name}` : ''}`,
        stageSeconds,
        transcripts: transcriptSource,
        notes,
      }),
    )
    files.push('history.csv', 'metrics.json', 'config.json', 'report.md')
  })
  return {
    runDir,
    models: results,
    files,
    split: { strategy: split.options.strategy, train: split.train.length, val: split.val.length, test: split.test.length },
    stageSeconds,
  }
}

function checkSameSplit(path: string, split: Split): void {
  if (!existsSync(path)) return
  const saved = loadSplit(path)
  for (const part of ['train', 'val', 'test'] as const) {
    const before = saved[part].map((i) => i.path)
    const now = split[part].map((i) => i.path)
    if (before.length !== now.length || before.some((p, k) => p !== now[k])) {
      throw invalidOption(
        'resume',
        `${path} holds another ${part} set (${before.length} clips, now ${now.length}): resume with the data, split and seed of that run, or write to another out folder`,
      )
    }
  }
}

function checkSameVocabulary(path: string, vocabulary: string[]): void {
  if (!existsSync(path)) return
  const saved = JSON.parse(readFileSync(path, 'utf8')) as { vocabulary?: string[] }
  if (JSON.stringify(saved.vocabulary) !== JSON.stringify(vocabulary)) {
    throw invalidOption(
      'resume',
      `${path} differs from the vocabulary of these transcripts: resume with the transcripts of that run, or write to another out folder`,
    )
  }
}

async function transcriptsFor(
  options: PipelineOptions,
  items: DatasetItem[],
  stage: (name: string, message: string) => void,
  emit: (e: PipelineEvent) => void,
): Promise<(item: DatasetItem) => string> {
  const source = options.transcripts ?? 'whisper'
  if (source === 'whisper') {
    const bundled = bundledWhisperDir()
    const modelDir = options.whisper?.modelDir ?? process.env.EMOTION_PIPELINE_WHISPER_DIR ?? (existsSync(bundled) ? bundled : undefined)
    stage('transcripts', `Whisper on ${items.length} clips (${modelDir ?? options.whisper?.model ?? 'hub model'})`)
    const out = await transcribe(
      items.map((i) => i.path),
      {
        ...options.whisper,
        modelDir,
        signal: options.signal,
        onProgress: (e) => emit({ type: 'transcribe', done: e.done, total: e.total, cached: e.cached }),
      },
    )
    const byPath = new Map(out.map((t) => [t.path, t.text]))
    return (i) => byPath.get(i.path) ?? ''
  }
  if (source === 'ravdess-names') {
    const missing = items.find((i) => !i.ravdess)
    if (missing)
      throw invalidOption('transcripts', `'ravdess-names' needs RAVDESS file names; ${missing.path} is not one: pass transcripts`)
    return (i) => RAVDESS_STATEMENTS[i.ravdess!.statement]
  }
  // Keys are clip paths or file names without extension (so one map serves FLAC, WAV and Vorbis copies).
  const textOf = (i: DatasetItem) => source[i.path] ?? source[basename(i.path).replace(/\.[^.]*$/, '')]
  const missing = items.find((i) => typeof textOf(i) !== 'string')
  if (missing) throw invalidOption('transcripts', `no transcript for ${missing.path} (keys are clip paths or file names without extension)`)
  return textOf
}

/**
 * The training settings of one model from the pipeline options. Unset options stay unset: the core
 * fills in its defaults (and results carry the resolved config), so no default is restated here.
 */
function trainSettings(o: PipelineOptions, model: ModelName, seed: number): Omit<TrainOptions, 'train'> {
  return {
    model,
    epochs: o.epochs,
    batchSize: o.batchSize,
    accumulation: o.accumulation,
    seed,
    amp: o.amp,
    optim: o.lr === undefined ? undefined : { lr: o.lr },
  }
}

/** `epochs`, `batchSize`, `accumulation`, `lr` and `amp` after the core filled in its defaults. */
function pipelineLevel(o: PipelineOptions, seed: number) {
  const resolved = JSON.parse(
    callNative(() => native.resolveTrainConfig(optionsJson(trainSettings(o, 'audio', seed)))),
  ) as Required<TrainConfig>
  return {
    epochs: resolved.epochs,
    batchSize: resolved.batchSize,
    accumulation: resolved.accumulation,
    lr: resolved.optim.lr,
    amp: resolved.amp,
  }
}

/** Every key `PipelineOptions` has; the compiler keeps it complete, the check refuses typos such as `epoch`. */
const PIPELINE_KEYS = {
  data: true,
  out: true,
  models: true,
  split: true,
  seed: true,
  epochs: true,
  batchSize: true,
  accumulation: true,
  lr: true,
  amp: true,
  device: true,
  mel: true,
  index: true,
  cacheDir: true,
  transcripts: true,
  whisper: true,
  maxTokens: true,
  maxItems: true,
  resume: true,
  train: true,
  onProgress: true,
  signal: true,
  strict: true,
} satisfies Record<keyof PipelineOptions, true>

function validate(o: PipelineOptions): void {
  if (!o || typeof o !== 'object') throw invalidOption('options', 'must be an object')
  if (typeof o.data !== 'string' || !o.data) throw invalidOption('data', 'must be the dataset folder')
  if (typeof o.out !== 'string' || !o.out) throw invalidOption('out', 'must be the run directory')
  for (const m of o.models ?? [])
    if (!DEFAULT_MODELS.includes(m)) throw invalidOption('models', `unknown model '${m}' (audio, text, fusion)`)
  if (o.models && o.models.length === 0) throw invalidOption('models', 'must name at least one model')
  const positiveInt = (name: string, v: unknown) => {
    if (v !== undefined && !(Number.isInteger(v) && (v as number) > 0)) throw invalidOption(name, `must be a positive integer, got ${v}`)
  }
  for (const key of Object.keys(o)) {
    if (!(key in PIPELINE_KEYS)) throw invalidOption(key, `unknown option (known: ${Object.keys(PIPELINE_KEYS).join(', ')})`)
  }
  for (const key of Object.keys(o.train ?? {})) {
    if (!DEFAULT_MODELS.includes(key as ModelName)) throw invalidOption(`train.${key}`, `unknown model (audio, text, fusion)`)
  }
  positiveInt('maxItems', o.maxItems)
  positiveInt('maxTokens', o.maxTokens)
  if (o.resume !== undefined && typeof o.resume !== 'boolean') throw invalidOption('resume', `must be true or false, got ${o.resume}`)
  // Training settings are checked by the core that owns them, before any feature is extracted.
  for (const model of o.models ?? DEFAULT_MODELS) {
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
  if (typeof o.split === 'string' && !['stratified', 'speaker'].includes(o.split))
    throw invalidOption('split', `must be 'stratified', 'speaker' or split options, got '${o.split}'`)
}
