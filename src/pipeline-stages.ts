// The stages of one trainPipeline() run: index and split → features → transcripts and tokens → one
// training job per model. Each stage is a function of the run's shared state (`Run`).
import { existsSync, readFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { extractMel } from './audio.js'
import { DEFAULT_ENCODER, encoderLocation, extractEmbeddings, identityOf } from './encoder.js'
import type { Embeddings } from './encoder.js'
import { cacheRoot } from './cache.js'
import { indexDataset, loadSplit, saveSplit, splitDataset } from './dataset.js'
import type { DatasetIndex, DatasetItem, Split, SplitOptions } from './dataset.js'
import { callNative, EmotionPipelineError, invalidOption } from './errors.js'
import { DEFAULTS } from './generated/options.js'
import type { EncoderIdentity } from './generated/options.js'
import type { DeviceSpec } from './device.js'
import { defaultModels, defaultSpeakerAdversary, defaultSpeedPerturb, uses } from './presets.js'
import { trainSettings } from './pipeline-types.js'
import type { ModelName, PipelineOptions, PipelineResult, Run, TextInputs } from './pipeline-types.js'
import { shardedPass } from './distributed.js'
import type { World } from './distributed.js'
import { ensureWritableDir, writeFileAtomic } from './run-dir.js'
import { writeRunFiles } from './run-files.js'
import { RUN_FILES, runPaths } from './run-layout.js'
import { native } from './native.js'
import { normaliseBySpeaker } from './speaker-norm.js'
import { RAVDESS_STATEMENTS, Tokenizer } from './tokenizer.js'
import { train } from './train.js'
import type { TrainResult, TrainSet } from './train.js'
import { transcribe } from './transcribe.js'
import { whisperModelDir } from './whisper-install.js'

/** Clips of one part of the split that could be featurised, and their features. */
interface Part {
  items: DatasetItem[]
  mel: TrainSet['mel']
  embedding: TrainSet['embedding']
  /** Extra training rows for the encoder model: the part's clips at other speeds (`speedPerturb`). */
  perturbed?: { items: DatasetItem[]; embedding: NonNullable<TrainSet['embedding']> }
}

export async function runStages(options: PipelineOptions, runDir: string, world?: World): Promise<PipelineResult> {
  const writes = (world?.rank ?? 0) === 0
  // In a world, rank 0 alone reports progress (the others do the same work in step).
  const emit = (writes && options.onProgress) || (() => {})
  const stageSeconds: Record<string, number> = {}
  const run: Run = {
    options,
    runDir,
    seed: options.seed ?? DEFAULTS.TrainConfig.seed,
    emit,
    stageSeconds,
    notes: [],
    files: [RUN_FILES.split],
    skipped: [],
    world,
    writes,
    timed: async (name, fn) => {
      const t0 = performance.now()
      try {
        return await fn()
      } finally {
        stageSeconds[name] = (performance.now() - t0) / 1000
      }
    },
    stage: (name, message, fn) => {
      emit({ type: 'stage', stage: name, message })
      return run.timed(name, fn)
    },
  }
  const models = options.models ?? defaultModels(options.preset)
  if (world)
    run.notes.push(
      `Data-parallel over ${world.worldSize} processes (c10d Gloo): each model's batch size is per process, gradients summed across them at every optimiser step.`,
    )
  const { index, labels, split } = await indexAndSplit(run)
  // Decided before any feature is extracted: a refusal costs nothing.
  const speakerAdversary = models.includes('encoder') ? speakerAdversaryFor(run, split) : 0
  const parts = await featurise(run, split, models)
  const text = models.some((m) => uses(m, 'tokens')) ? await textInputs(run, parts) : undefined
  const sets = trainingSets(parts, labels, text)
  const results: Partial<Record<ModelName, TrainResult>> = {}
  for (const model of models) {
    results[model] = await run.stage(`train-${model}`, `training the ${model} model`, () =>
      trainModel(run, model, labels, sets, text, parts.encoderSource, speakerAdversary),
    )
    run.files.push(`${RUN_FILES.models}/${model}/best.safetensors`, `${RUN_FILES.models}/${model}/best.json`)
  }
  if (writes) await run.stage('report', `writing ${runDir}`, () => writeRunFiles(run, { index, labels, split, results, text, models }))
  return {
    runDir,
    models: results,
    files: run.files,
    split: { strategy: split.options.strategy, train: split.train.length, val: split.val.length, test: split.test.length },
    stageSeconds,
  }
}

/** Indexes the dataset, samples it (`maxItems`), orders the labels and writes `split.json`. */
async function indexAndSplit(run: Run): Promise<{ index: DatasetIndex; labels: string[]; split: Split }> {
  const { options, seed } = run
  const index = await run.stage('index', `indexing ${options.data}`, () =>
    indexDataset(options.data, { ...options.index, signal: options.signal }),
  )
  if (index.items.length === 0) throw new EmotionPipelineError('DATASET', `no usable clips in ${options.data}`)
  // Files indexing left out (unreadable, unlabelled, missing from a manifest…) are reported like clips
  // that fail to decode: a `skipped` event each and metrics.json's `skipped`.
  for (const p of index.problems) {
    const left = { path: p.path, code: 'DATASET', message: `${p.kind}: ${p.message}` }
    run.skipped.push(left)
    run.emit({ type: 'skipped', ...left })
  }
  let items = index.items
  if (options.maxItems && options.maxItems < items.length) {
    items = splitDataset(items, { testFraction: options.maxItems / items.length, seed }).test
  }
  const labels = [...new Set(items.map((i) => i.label))]
  if (labels.every((l) => RAVDESS_ORDER.includes(l))) labels.sort((a, b) => RAVDESS_ORDER.indexOf(a) - RAVDESS_ORDER.indexOf(b))
  else labels.sort()

  const splitOptions: SplitOptions =
    typeof options.split === 'object' ? { seed, ...options.split } : { strategy: options.split ?? DEFAULTS.SplitOptions.strategy, seed }
  checkSpeakersForSplit(options.data, items, splitOptions)
  const split = splitDataset(items, splitOptions)
  if (split.train.length === 0)
    throw invalidOption(
      options.maxItems ? 'maxItems' : 'split',
      `${options.maxItems ? `is ${options.maxItems} (--max-items): ` : ''}the split of ${items.length} clip(s) leaves none to train on (${split.val.length} validation, ${split.test.length} test); use more clips${options.maxItems ? ' (a few per class at least)' : ' or a smaller test fraction'}`,
    )
  if (run.writes) {
    if (options.resume) checkSameSplit(runPaths(run.runDir).split, split)
    saveSplit(split, runPaths(run.runDir).split)
  }
  const thin = thinLabels(labels, split)
  if (thin) run.notes.push(`${thin}.`)
  run.emit({
    type: 'stage',
    stage: 'split',
    message: `${split.options.strategy}: ${split.train.length} train, ${split.val.length} val, ${split.test.length} test${thin ? `; ${thin}` : ''}`,
  })
  return { index, labels, split }
}

/** Labels the split leaves without a training clip (the model cannot learn them) or without a test clip. */
function thinLabels(labels: string[], split: Split): string {
  const missing = (part: DatasetItem[]) => labels.filter((l) => !part.some((i) => i.label === l))
  const lines = []
  const untrained = missing(split.train)
  if (untrained.length) lines.push(`no training clip for ${untrained.join(', ')} (the model cannot learn it)`)
  const untested = split.test.length ? missing(split.test) : []
  if (untested.length) lines.push(`no test clip for ${untested.join(', ')} (too few clips: its test figures are empty)`)
  return lines.join('; ')
}

/** A split by speaker needs every clip's speaker: refused naming `split` (`--split`), not an internal field. */
function checkSpeakersForSplit(data: string, items: DatasetItem[], split: SplitOptions): void {
  if (split.strategy !== 'speaker' && split.strategy !== 'speaker-kfold') return
  const unnamed = items.filter((i) => i.speaker === '')
  if (unnamed.length === 0) return
  throw invalidOption(
    'split',
    `is '${split.strategy}' (--split), which needs every clip's speaker, but ${unnamed.length} of ${items.length} clips in ${data} name none (e.g. ${unnamed[0].path}); ` +
      "use split 'stratified' (the default), or RAVDESS file names or a manifest with a speaker column",
  )
}

const RAVDESS_ORDER = ['neutral', 'calm', 'happy', 'sad', 'angry', 'fearful', 'disgust', 'surprised']

/** Rows `[n, a, b]` of a feature job, as the typed array and shape of a `TrainSet` input. */
interface Rows {
  data: Float32Array
  shape: number[]
  indices: number[]
  /** Inputs longer than the window (only the window was used). */
  cut: number[]
  failed: { index: number; path: string; code: string; message: string }[]
}

/**
 * Log-mel features (audio, text and fusion models) and encoder embeddings (encoder model) of every
 * clip. A clip that cannot be featurised is left out of every model with a `skipped` event, counted in
 * metrics.json and the report; `strict: true` makes it an error instead.
 */
async function featurise(run: Run, split: Split, models: ModelName[]): Promise<Parts> {
  const { options } = run
  const all = [...split.train, ...split.val, ...split.test]
  const paths = all.map((i) => i.path)
  const cacheDir = options.cacheDir === null ? undefined : (options.cacheDir ?? join(cacheRoot(), 'features'))
  if (cacheDir && options.cacheDir === undefined)
    ensureWritableDir(
      cacheDir,
      'cacheDir',
      ': the default feature cache; set cacheDir (--cache-dir DIR, or EMOTION_PIPELINE_CACHE) elsewhere, or null (--cache-dir none) for none',
    )
  const common = {
    device: options.device ?? 'auto',
    cacheDir,
    strict: options.strict ?? false,
    signal: options.signal,
    maxDuration: options.maxDuration,
    // Each rank computes its share into the cache, then every rank reads the whole set.
    world: run.world,
  }
  const { mel, embedding } = await extractRows(run, paths, models, common)
  const failures = reportCutAndSkipped(run, paths, mel, embedding)
  const part = (list: DatasetItem[], offset: number): Part => {
    const inputs = list.map((_, i) => offset + i).filter((i) => !failures.has(i))
    return {
      items: inputs.map((i) => all[i]),
      mel: mel && (rowsOf(mel, inputs) as TrainSet['mel']),
      embedding: embedding && (rowsOf(embedding, inputs) as TrainSet['embedding']),
    }
  }
  const train = part(split.train, 0)
  const val = part(split.val, split.train.length)
  const test = part(split.test, split.train.length + split.val.length)
  if (train.items.length === 0) throw new EmotionPipelineError('DATASET', 'no training clip could be decoded (see the skipped events)')
  const speeds = options.speedPerturb ?? defaultSpeedPerturb(options.preset)
  if (embedding && speeds.length) train.perturbed = await perturbed(run, train.items, speeds, common)
  const encoderSource = embedding && (await encoderIdentity(options, embedding))
  if (options.speakerNorm && embedding) speakerNormalise(run, all, [train, val, test])
  return { train, val, test, encoderSource }
}

type FeatureOptions = Parameters<typeof perturbed>[3]

/** The log-mel and encoder states the models need, of every clip (cached). */
async function extractRows(
  run: Run,
  paths: string[],
  models: ModelName[],
  common: FeatureOptions,
): Promise<{ mel?: Rows; embedding?: Rows }> {
  const { options } = run
  const mel: Rows | undefined = models.some((m) => uses(m, 'mel'))
    ? await run.stage('features', 'log-mel spectrograms', () =>
        extractMel(paths, { ...common, mel: options.mel, onProgress: (e) => run.emit({ type: 'features', done: e.done, total: e.total }) }),
      )
    : undefined
  const embedding: Rows | undefined = models.some((m) => uses(m, 'embedding'))
    ? await run.stage('embeddings', `${options.encoder ?? DEFAULT_ENCODER} encoder states`, () =>
        extractEmbeddings(paths, {
          ...common,
          encoder: options.encoder,
          input: options.encoderInput,
          pooling: options.encoderPooling,
          precision: options.encoderPrecision,
          onProgress: (e) =>
            run.emit(
              e.stage === 'download'
                ? { type: 'download', file: e.file ?? '', done: e.done, total: e.total }
                : { type: 'features', done: e.done, total: e.total },
            ),
        }),
      )
    : undefined
  return { mel, embedding }
}

/**
 * Says which clips were cut to a model's window and which could not be decoded (events and report
 * notes, never silent); returns the undecodable ones by row.
 */
function reportCutAndSkipped(
  run: Run,
  paths: string[],
  mel?: Rows,
  embedding?: Rows,
): Map<number, { path: string; code: string; message: string }> {
  const { options } = run
  for (const [rows, window] of [
    [mel, `the ${options.mel?.durationSeconds ?? DEFAULTS.MelConfig.durationSeconds} s mel window`],
    [embedding, "Whisper's 30 s window"],
  ] as const) {
    const cut = rows?.cut ?? []
    if (cut.length === 0) continue
    const message = `${cut.length} of ${paths.length} clip(s) are longer than ${window} and were cut to it: ${cut
      .slice(0, 5)
      .map((i) => paths[i])
      .join(', ')}${cut.length > 5 ? ', …' : ''}`
    run.emit({ type: 'warning', model: rows === mel ? 'audio' : 'encoder', message })
    run.notes.push(`${message}.`)
  }
  const failures = new Map<number, { path: string; code: string; message: string }>()
  for (const rows of [mel, embedding])
    for (const f of rows?.failed ?? []) failures.set(f.index, { path: f.path, code: f.code, message: f.message })
  const skipped = [...failures.values()]
  run.skipped.push(...skipped)
  for (const s of skipped) run.emit({ type: 'skipped', ...s })
  if (skipped.length > 0)
    run.notes.push(`Skipped ${skipped.length} clip(s) that could not be decoded: ${skipped.map((s) => s.path).join(', ')}.`)
  return failures
}

/** What a model on these encoder states records of its encoder. */
async function encoderIdentity(options: PipelineOptions, embedding: Rows): Promise<EncoderIdentity> {
  const location = await encoderLocation(options.encoder ?? DEFAULT_ENCODER, { signal: options.signal })
  const states = embedding as Rows & Pick<Embeddings, 'modelSha256' | 'precision' | 'heads'>
  return identityOf(location, states, { input: options.encoderInput, pooling: options.encoderPooling, speakerNorm: options.speakerNorm })
}

/** `speakerNorm`: each speaker's states standardised by all of that speaker's clips (said in the report). */
function speakerNormalise(run: Run, all: DatasetItem[], parts: Part[]): void {
  const unnamed = all.filter((i) => i.speaker === '').length
  if (unnamed > 0) {
    const message = `speakerNorm: ${unnamed} clip(s) name no speaker and are standardised together, as one speaker`
    run.emit({ type: 'warning', model: 'encoder', message })
    run.notes.push(`${message}.`)
  }
  normaliseBySpeaker(parts)
  run.notes.push(
    "Per-speaker normalisation: each speaker's encoder states were standardised with the mean and deviation of all of that speaker's clips, test speakers included (their unlabelled audio is used).",
  )
}

/** Encoder states of the training clips at each speed of `speedPerturb` (cached like the others). */
async function perturbed(
  run: Run,
  items: DatasetItem[],
  speeds: number[],
  common: { device: DeviceSpec; cacheDir?: string; strict: boolean; signal?: AbortSignal; maxDuration?: number; world?: World },
): Promise<Part['perturbed']> {
  const { options } = run
  const rows: Float32Array[] = []
  const kept: DatasetItem[] = []
  let shape = [0, 0, 0]
  await run.stage('speed-perturb', `encoder states of ${items.length} training clips at speeds ${speeds.join(', ')}`, async () => {
    for (const speed of speeds) {
      const e = await extractEmbeddings(
        items.map((i) => i.path),
        {
          ...common,
          encoder: options.encoder,
          input: options.encoderInput,
          pooling: options.encoderPooling,
          precision: options.encoderPrecision,
          speed,
        },
      )
      const copy = { items: e.indices.map((k) => items[k]), embedding: { data: e.data, shape: e.shape as [number, number, number] } }
      // A speed changes the voice: each (speaker, speed) is standardised with its own statistics.
      if (options.speakerNorm) normaliseBySpeaker([copy])
      rows.push(copy.embedding.data)
      kept.push(...copy.items)
      shape = e.shape
    }
  })
  const data = new Float32Array(rows.reduce((n, r) => n + r.length, 0))
  let offset = 0
  for (const r of rows) {
    data.set(r, offset)
    offset += r.length
  }
  run.notes.push(`Speed perturbation: the encoder model also trained on its training clips at speeds ${speeds.join(', ')}.`)
  return { items: kept, embedding: { data, shape: [kept.length, shape[1], shape[2]] } }
}

/** The rows of `inputs` (input indices, ascending): a view when they are consecutive, else a copy. */
function rowsOf(rows: Rows, inputs: number[]): { data: Float32Array; shape: number[] } {
  const per = rows.shape[1] * rows.shape[2]
  const rowOf = new Map(rows.indices.map((input, row) => [input, row]))
  const at = inputs.map((i) => rowOf.get(i)!)
  const shape = [at.length, rows.shape[1], rows.shape[2]]
  if (at.every((r, k) => r === at[0] + k)) return { data: rows.data.subarray((at[0] ?? 0) * per, ((at[0] ?? 0) + at.length) * per), shape }
  const data = new Float32Array(at.length * per)
  for (const [k, r] of at.entries()) data.set(rows.data.subarray(r * per, (r + 1) * per), k * per)
  return { data, shape }
}

type Parts = { train: Part; val: Part; test: Part; encoderSource?: EncoderIdentity }

async function textInputs(run: Run, parts: Parts): Promise<TextInputs> {
  const { options, runDir } = run
  const allItems = [...parts.train.items, ...parts.val.items, ...parts.test.items]
  const textOf = await run.timed('transcripts', () => transcriptsFor(run, allItems))
  const choice = options.transcripts ?? 'whisper'
  const source =
    typeof choice === 'object'
      ? 'provided'
      : choice === 'whisper'
        ? 'Whisper tiny.en (transformers.js)'
        : 'RAVDESS statements from the file names'
  const tokenizer = Tokenizer.fit(
    parts.train.items.map((i) => textOf(i)),
    options.maxTokens,
  )
  const paths = runPaths(runDir)
  if (run.writes) {
    if (options.resume) checkSameVocabulary(paths.vocabulary, tokenizer.vocabulary)
    writeFileAtomic(paths.vocabulary, JSON.stringify(tokenizer.toJSON(), null, 1))
    writeFileAtomic(paths.transcripts, JSON.stringify(Object.fromEntries(allItems.map((i) => [i.path, textOf(i)])), null, 1))
  }
  run.notes.push(
    `Text: ${source}; vocabulary of ${tokenizer.vocabulary.length} tokens from the training split, max ${tokenizer.maxLength} tokens.`,
  )
  return { tokenizer, textOf, source }
}

function trainingSets(parts: Parts, labels: string[], text: TextInputs | undefined) {
  // The training rows' speakers, for a speaker adversary (`encoderHead.speakerAdversary`).
  const speakers = [...new Set(parts.train.items.map((i) => i.speaker))]
  const speakerIdsOf = (part: Part, items: DatasetItem[]) =>
    part === parts.train ? Int32Array.from(items.map((i) => speakers.indexOf(i.speaker))) : undefined
  const set = (part: Part): (TrainSet & { perturbed?: PerturbedRows }) | undefined => {
    if (part.items.length === 0) return undefined
    return {
      perturbed: part.perturbed && {
        embedding: part.perturbed.embedding,
        labels: Int32Array.from(part.perturbed.items.map((i) => labels.indexOf(i.label))),
        speakerIds: speakerIdsOf(part, part.perturbed.items),
      },
      mel: part.mel,
      embedding: part.embedding,
      tokens: text
        ? {
            data: text.tokenizer.encodeAll(part.items.map((i) => text.textOf(i))),
            shape: [part.items.length, text.tokenizer.maxLength],
          }
        : undefined,
      labels: Int32Array.from(part.items.map((i) => labels.indexOf(i.label))),
      speakerIds: speakerIdsOf(part, part.items),
    }
  }
  return { train: set(parts.train)!, val: set(parts.val), test: set(parts.test) }
}

/** Trains one model into `models/<model>`; each model sees only the inputs it uses. */
function trainModel(
  run: Run,
  model: ModelName,
  labels: string[],
  sets: ReturnType<typeof trainingSets>,
  text: TextInputs | undefined,
  encoderSource: EncoderIdentity | undefined,
  speakerAdversary: number,
): Promise<TrainResult> {
  const { options } = run
  // Each model sees the inputs its kind reads (the core's MODEL_INPUTS); states also at the perturbed speeds.
  const inputs = (set: TrainSet & { perturbed?: PerturbedRows }): TrainSet =>
    uses(model, 'embedding') && set.perturbed
      ? withPerturbed(set, set.perturbed)
      : {
          labels: set.labels,
          speakerIds: set.speakerIds,
          mel: uses(model, 'mel') ? set.mel : undefined,
          tokens: uses(model, 'tokens') ? set.tokens : undefined,
          embedding: uses(model, 'embedding') ? set.embedding : undefined,
        }
  return train({
    ...trainSettings(options, model, run.seed),
    labels,
    device: options.device ?? 'auto',
    vocabulary: uses(model, 'tokens') ? text?.tokenizer.vocabulary : undefined,
    mel: uses(model, 'mel') ? (options.mel ?? {}) : undefined,
    encoderSource: uses(model, 'embedding') ? encoderSource : undefined,
    checkpointDir: runPaths(run.runDir).model(model),
    resume: options.resume,
    ...options.train?.[model],
    // The adversary weight decided for this split; shape, speakers and groups come from the data in the core.
    encoderHead: model === 'encoder' ? { ...options.train?.encoder?.encoderHead, speakerAdversary } : undefined,
    train: inputs(sets.train),
    val: sets.val && inputs(sets.val),
    test: sets.test && inputs(sets.test),
    onProgress: (e) => run.emit(e),
    signal: options.signal,
    distributed: run.world,
  })
}

type PerturbedRows = { embedding: NonNullable<TrainSet['embedding']>; labels: Int32Array; speakerIds?: Int32Array }

/** The encoder model's training set: its clips, then their speed-perturbed copies. */
function withPerturbed(set: TrainSet, extra: PerturbedRows): TrainSet {
  const e = set.embedding!
  const data = new Float32Array(e.data.length + extra.embedding.data.length)
  data.set(e.data)
  data.set(extra.embedding.data, e.data.length)
  const labels = new Int32Array(set.labels.length + extra.labels.length)
  labels.set(set.labels)
  labels.set(extra.labels, set.labels.length)
  const speakerIds = set.speakerIds && extra.speakerIds ? Int32Array.from([...set.speakerIds, ...extra.speakerIds]) : undefined
  return { labels, speakerIds, embedding: { data, shape: [labels.length, e.shape[1], e.shape[2]] } }
}

/**
 * The encoder head's speaker-adversary weight for this split: as set under
 * `train.encoder.encoderHead.speakerAdversary`, else the preset's; the preset's is switched off (with a
 * warning and a line in the report) when the training part has fewer than two known speakers, and a weight
 * the user set is then refused by name.
 */
function speakerAdversaryFor(run: Run, split: Split): number {
  const { options } = run
  const set = options.train?.encoder?.encoderHead?.speakerAdversary
  const speakers = new Set(split.train.map((i) => i.speaker).filter((s) => s !== ''))
  // The rule is the core's (`train::preset::speaker_adversary`); the messages name this run's data.
  const { weight, off } = JSON.parse(
    callNative(() => native.resolveSpeakerAdversary(options.preset ?? 'recommended', set, speakers.size)),
  ) as { weight: number; off: boolean }
  const why =
    speakers.size === 0
      ? `the training clips of ${options.data} name no speaker (RAVDESS file names or a manifest's speaker column say who speaks)`
      : `the training clips of ${options.data} come from one speaker (${[...speakers][0]})`
  if (off) {
    const message = `speaker adversary off: ${why}; the recommended recipe's adversary (weight ${defaultSpeakerAdversary(options.preset)}) needs at least 2 training speakers`
    run.emit({ type: 'warning', model: 'encoder', message })
    run.notes.push(`Speaker adversary off: ${why}.`)
    return 0
  }
  const unnamed = split.train.filter((i) => i.speaker === '').length
  if (weight > 0 && unnamed > 0) {
    const message = `${unnamed} training clip(s) name no speaker: the speaker adversary treats them as one more speaker`
    run.emit({ type: 'warning', model: 'encoder', message })
    run.notes.push(`${message}.`)
  }
  return weight
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

async function transcriptsFor(run: Run, items: DatasetItem[]): Promise<(item: DatasetItem) => string> {
  const { options, emit } = run
  const source = options.transcripts ?? 'whisper'
  if (source === 'whisper') {
    const bundled = whisperModelDir()
    const modelDir = options.whisper?.modelDir ?? process.env.EMOTION_PIPELINE_WHISPER_DIR ?? (existsSync(bundled) ? bundled : undefined)
    emit({
      type: 'stage',
      stage: 'transcripts',
      message: `Whisper on ${items.length} clips (${modelDir ?? options.whisper?.model ?? 'hub model'})`,
    })
    const whisper = (paths: string[]) =>
      transcribe(paths, {
        ...options.whisper,
        modelDir,
        signal: options.signal,
        onProgress: (e) => emit({ type: 'transcribe', done: e.done, total: e.total, cached: e.cached }),
      })
    const paths = items.map((i) => i.path)
    // In a world each rank transcribes its share into the (shared) transcript cache, then reads all.
    const cacheDir = options.whisper?.cacheDir === null ? null : (options.whisper?.cacheDir ?? join(cacheRoot(), 'transcripts'))
    const out = run.world ? await shardedPass(run.world, cacheDir, paths, whisper) : await whisper(paths)
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
