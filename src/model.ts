// A trained model at work: `loadModel(dir)` / `loadRun(runDir)`, then `predict` on any inputs,
// `timeline` over a recording and `stream` for live audio. The core does the work (featurising as the
// model was trained, windows, the voice gate); this file checks options and shapes results.
import { existsSync, readFileSync } from 'node:fs'
import { basename, join, resolve } from 'node:path'
import { awaitNative, checkKnownOptions, EmotionPipelineError, invalidOption } from './errors.js'
import { native } from './native.js'
import { withCancel } from './cancel.js'
import { checkAudioInputs } from './audio.js'
import type { AudioInput } from './audio.js'
import { findEncoder } from './encoder.js'
import type { DeviceSpec } from './device.js'
import type { ModelMeta, OnnxSidecar, Prediction, Timeline } from './generated/results.js'
import { checkExportOptions, exportBrowser } from './export.js'
import type { BrowserExport, BrowserExportOptions, ExportModelOptions, ExportResult } from './export.js'
import type { PredictRow } from './generated/results.js'
import { toNativeSet } from './train.js'
import type { TrainSet } from './train.js'
import { checkTopK, inferOptions, PREDICT_KEYS, toNativeInputs, toResults, WINDOW_KEYS } from './predict.js'
import type { PredictInput, PredictOptions, PredictResult, PredictRowResult } from './predict.js'
import { EmotionStream, STREAM_KEYS } from './stream.js'
import type { StreamOptions } from './stream.js'
import { defaultModels, MODEL_NAMES, uses } from './presets.js'
import type { ModelName } from './presets.js'
import type { Preset } from './generated/options.js'
import { RUN_FILES, runPaths } from './run-layout.js'
import type { RunConfig, RunMetrics } from './run-layout.js'

export interface LoadModelOptions {
  /** @default 'auto' */
  device?: DeviceSpec
  /**
   * The encoder of a model on encoder states, as a name or a folder, checked by SHA-256. Unset: the
   * installed encoder with the SHA-256 the model recorded (found whatever it was called when training).
   */
  encoder?: string
}

export interface LoadRunOptions extends LoadModelOptions {
  /** The run's model to load. Default: the best by validation UAR (the test split is never used). */
  model?: string
}

/** Which model of a run `loadRun` loaded, and why. */
export interface RunChoice {
  dir: string
  model: string
  /** `'validation UAR'`, `'named'`, or `"the preset's first model (the run has no validation split)"`. */
  by: string
  valUar: number | null
}

export interface TimelineOptions extends Omit<PredictOptions, 'topK' | 'strict' | 'longInput' | 'batchSize'> {
  onProgress?: (seconds: number) => void
}

/** The keys `timeline` takes (complete by the compiler, as `PREDICT_KEYS`). */
const TIMELINE_KEYS = Object.keys({ signal: true, calibration: true, onProgress: true, ...WINDOW_KEYS } satisfies Record<
  keyof TimelineOptions,
  true
>)

/** A trained model: `loadModel(dir)` or `loadRun(runDir)`. */
export class EmotionModel {
  /** Set by `loadRun`: which model of the run this is and why. */
  run?: RunChoice

  private constructor(
    private readonly inner: InstanceType<typeof native.NativeModel>,
    readonly meta: ModelMeta,
    /** Where the encoder of a model on encoder states was found (looked for again when not). */
    private readonly encoder: { dir?: string },
    /** The device it was loaded on: where predictions featurise unless told otherwise. */
    readonly device: DeviceSpec,
    /** The model folder it was loaded from. */
    readonly dir: string,
  ) {}

  static async load(dir: string, options: LoadModelOptions = {}): Promise<EmotionModel> {
    const inner = await awaitNative(native.loadModel(dir, options.device ?? 'auto'))
    const meta = JSON.parse(inner.metaJson) as ModelMeta
    const identity = meta.spec.inputs.embedding?.encoder
    // An override is checked now; a missing encoder only matters to audio predictions (predictFeatures
    // on states needs none), which throw the reason.
    let encoder: { dir?: string } = {}
    if (identity) {
      if (options.encoder !== undefined) encoder = { dir: await findEncoder(identity, options.encoder) }
      else
        encoder = await findEncoder(identity).then(
          (dir) => ({ dir }),
          () => ({}),
        )
    }
    return new EmotionModel(inner, meta, encoder, options.device ?? 'auto', resolve(dir))
  }

  /** The folder of the encoder the model was trained on (models on encoder states, when found). */
  get encoderDir(): string | undefined {
    return this.encoder.dir
  }

  get labels(): string[] {
    return this.meta.spec.labels
  }

  /** The encoder folder for audio predictions (MODEL_NOT_FOUND says how to get it). */
  private async encoderFor(): Promise<string | undefined> {
    const identity = this.meta.spec.inputs.embedding?.encoder
    if (identity && !this.encoder.dir) this.encoder.dir = await findEncoder(identity)
    return this.encoder.dir
  }

  /** Predicts from features (mel from `extractMel` made with `meta.spec.inputs.mel.config`, tokens, or states). */
  async predictFeatures(inputs: Omit<TrainSet, 'labels'>): Promise<Prediction[]> {
    const set = toNativeSet({ ...inputs, labels: [] }, 'inputs')!
    return JSON.parse(await awaitNative(this.inner.predict(set))) as Prediction[]
  }

  /**
   * Labels audio: file paths, encoded files in memory (`Buffer`/`Uint8Array`) and `{ samples, sampleRate }`,
   * any mix, featurised as the model was trained. One result per input, in order; a bad input is an
   * error in its row (unless `strict`). An input longer than the model's window is scored as the mean
   * of its speech windows (`longInput: 'aggregate'`, the default) or refused (`'refuse'`), never cut.
   */
  async predict(inputs: PredictInput[], options: PredictOptions = {}): Promise<PredictRowResult[]> {
    checkKnownOptions(options, PREDICT_KEYS, 'predict')
    const native_ = toNativeInputs(inputs)
    checkTopK(options.topK, this.labels.length)
    if (options.calibration) checkAudioInputs(options.calibration)
    const { topK: _, strict: __, signal, calibration, ...core } = options
    const json = inferOptions({ ...core, device: core.device ?? this.device }, await this.encoderFor())
    const rows = await withCancel(signal, (token) => awaitNative(this.inner.predictInputs(native_, calibration, json, token)))
    return toResults(JSON.parse(rows) as PredictRow[], inputs, this.labels, options)
  }

  /** @deprecated since 0.3: `predict(inputs, { strict: true })`. Kept with its 0.2 result shape. */
  async predictFiles(
    inputs: AudioInput[],
    options: { device?: DeviceSpec; calibration?: AudioInput[]; signal?: AbortSignal } = {},
  ): Promise<(Prediction & { path: string })[]> {
    checkAudioInputs(inputs)
    const rows = (await this.predict(inputs, { ...options, strict: true })) as PredictResult[]
    return rows.map((r, i) => ({
      label: r.label,
      index: r.labelIndex,
      probabilities: r.probabilities,
      path: typeof inputs[i] === 'string' ? inputs[i] : `<samples #${i}>`,
    }))
  }

  /**
   * Slides the model over a recording (a path, an encoded file in memory or samples): windows of
   * `window` seconds every `hop` (defaults: the model's window, half of it), each gated by voice
   * activity (`vad`), speech windows labelled. The file is decoded as it is read: memory does not
   * grow with its length.
   */
  async timeline(input: PredictInput, options: TimelineOptions = {}): Promise<Timeline> {
    checkKnownOptions(options, TIMELINE_KEYS, 'timeline')
    const [native_] = toNativeInputs([input], 'input')
    if (options.calibration) checkAudioInputs(options.calibration)
    const { signal, calibration, onProgress, ...core } = options
    const json = inferOptions({ ...core, device: core.device ?? this.device }, await this.encoderFor())
    const progress = onProgress
      ? (text: string) => {
          onProgress((JSON.parse(text) as { seconds: number }).seconds)
        }
      : undefined
    const out = await withCancel(signal, (token) => awaitNative(this.inner.timeline(native_, calibration, json, token, progress)))
    return JSON.parse(out) as Timeline
  }

  /**
   * Writes the model as one ONNX graph with its front end inside (`samples` `[batch, n]` mono float32 at
   * `sidecar.sampleRate` → `scores` `[batch, labels]`), and a JSON sidecar beside it (`<out>.json`).
   * Runs in onnxruntime (Node, Python, C++, browsers) without libtorch. docs/EXPORT.md.
   */
  async export(options: ExportModelOptions): Promise<ExportResult> {
    return this.writeOnnx(checkExportOptions(options), this.dir, options.featuresOutput ?? false)
  }

  /** The ONNX file and its sidecar, which names the model as `source`. */
  private async writeOnnx(out: string, source: string, featuresOutput: boolean): Promise<ExportResult> {
    const json = JSON.stringify({ featuresOutput, encoderDir: await this.encoderFor() })
    const sidecar = JSON.parse(await awaitNative(this.inner.exportOnnx(out, source, json))) as OnnxSidecar
    return { ...sidecar, path: out, sidecarPath: `${out}.json` }
  }

  /**
   * A static folder to serve as is: a page that runs this model in the browser (onnxruntime-web, no
   * CDN) on a dropped file or the microphone and shows the emotion over time. docs/EXPORT.md.
   */
  exportBrowser(options: BrowserExportOptions): Promise<BrowserExport> {
    // A page is for serving: its sidecar names the model folder, not the path it had on this machine.
    return exportBrowser(options, (out) => this.writeOnnx(out, basename(this.dir), false))
  }

  /**
   * A live stream: `push(chunk)` mono samples at `sampleRate` in any sizes; it resolves to the
   * segments the chunk completes (one hop of latency). `end()` scores the rest. Same windows, gate
   * and labels as `timeline` on the same samples.
   */
  async stream(options: StreamOptions): Promise<EmotionStream> {
    checkKnownOptions(options, STREAM_KEYS, 'stream')
    const { sampleRate, ...rest } = options
    if (!(Number.isInteger(sampleRate) && sampleRate > 0 && sampleRate < 2 ** 32)) {
      throw invalidOption('sampleRate', `must be a whole number of Hz, got ${sampleRate}`)
    }
    const json = inferOptions({ ...rest, device: rest.device ?? this.device }, await this.encoderFor())
    return new EmotionStream(this.inner.stream(sampleRate, json), this.labels)
  }
}

/**
 * Loads a trained model folder (`models/<model>` of a run, or a `checkpointDir`). Asynchronous since 0.2:
 * the checkpoint is read and checked on a thread of its own, and a damaged one rejects.
 */
export function loadModel(dir: string, options: LoadModelOptions = {}): Promise<EmotionModel> {
  return EmotionModel.load(dir, options)
}

/**
 * Which model of a run to load: `model`, else the model on audio with the best validation UAR, else (no
 * validation split) the preset's first model the run trained.
 */
export function chooseRunModel(runDir: string, model?: string): RunChoice {
  if (existsSync(join(runDir, RUN_FILES.cv)) || existsSync(join(runDir, 'fold-0'))) {
    throw invalidOption('run', `${runDir} is a cross-validation: load one of its folds (${join(runDir, 'fold-k')}/)`)
  }
  const paths = runPaths(runDir)
  if (!existsSync(runDir)) throw new EmotionPipelineError('MODEL_NOT_FOUND', `run folder ${runDir} not found`)
  if (!existsSync(paths.metrics)) {
    throw new EmotionPipelineError(
      'MODEL_NOT_FOUND',
      `${runDir} holds no finished run (no ${RUN_FILES.metrics}): finish it with --resume, or load a model folder with loadModel`,
    )
  }
  const metrics = JSON.parse(readFileSync(paths.metrics, 'utf8')) as RunMetrics
  const config = existsSync(paths.config) ? (JSON.parse(readFileSync(paths.config, 'utf8')) as RunConfig) : undefined
  const effective = config?.effective as { models?: string[]; preset?: Preset } | undefined
  // The preset's own models first (the best measured), then the run's; only models that read audio:
  // text and fusion read transcripts, which predict does not make (they can still be named).
  const order = [...new Set([...defaultModels(effective?.preset), ...(effective?.models ?? Object.keys(metrics.models))])].filter(
    (name) => !(MODEL_NAMES as string[]).includes(name) || !uses(name as ModelName, 'tokens'),
  )
  const uar = (name: string) => metrics.models[name]?.val?.uar ?? null
  if (model !== undefined) {
    if (!metrics.models[model]) {
      throw invalidOption('model', `${runDir} has no ${model} model; it has ${Object.keys(metrics.models).join(', ')}`)
    }
    return { dir: paths.model(model), model, by: 'named', valUar: uar(model) }
  }
  const trained = order.filter((name) => metrics.models[name] && existsSync(join(paths.model(name), 'best.json')))
  if (trained.length === 0) {
    // What the run trained that `order` left out: the models that read transcripts.
    const onTranscripts = Object.keys(metrics.models).filter(
      (name) => !order.includes(name) && existsSync(join(paths.model(name), 'best.json')),
    )
    if (onTranscripts.length)
      throw invalidOption(
        'model',
        `${runDir} holds only ${onTranscripts.join(' and ')}, which read Whisper transcripts: predict, timeline and export take a model on audio (train audio, encoder or probe)`,
      )
    throw new EmotionPipelineError('MODEL_NOT_FOUND', `${runDir} holds no trained model (models/*/best.json)`)
  }
  const scored = trained.filter((name) => uar(name) !== null)
  if (scored.length === 0)
    return {
      dir: paths.model(trained[0]),
      model: trained[0],
      by: "the preset's first model (the run has no validation split)",
      valUar: null,
    }
  const best = scored.reduce((a, b) => ((uar(b) as number) > (uar(a) as number) ? b : a))
  return { dir: paths.model(best), model: best, by: 'validation UAR', valUar: uar(best) }
}

/**
 * Loads a run's model: the one named by `model`, else the best by validation UAR (never the test
 * split), else the run's first model when it had no validation split (`model.run.by` says which).
 */
export async function loadRun(runDir: string, options: LoadRunOptions = {}): Promise<EmotionModel> {
  const choice = chooseRunModel(runDir, options.model)
  const model = await loadModel(choice.dir, options)
  model.run = choice
  return model
}
