// The files a run leaves beside its models: history.csv, plots, metrics.json, config.json and report.md.
import { cpus } from 'node:os'
import { basename } from 'node:path'
import type { DatasetIndex, Split } from './dataset.js'
import { deviceInfo } from './device.js'
import { callNative, optionsJson } from './errors.js'
import { DEFAULT_ENCODER } from './encoder.js'
import { DEFAULTS } from './generated/options.js'
import type { TrainConfig } from './generated/options.js'
import { native } from './native.js'
import { defaultSpeedPerturb, uses } from './presets.js'
import { trainSettings } from './pipeline-types.js'
import type { ModelName, PipelineOptions, Run, TextInputs } from './pipeline-types.js'
import { REFERENCE_ACCURACY, reportMarkdown, trainingSeconds, writeHistoryCsv, writePlots } from './report.js'
import { writeFileAtomic } from './run-dir.js'
import { configFile, metricsFile, RUN_FILES, runPaths } from './run-layout.js'
import type { TrainResult } from './train.js'

/** history.csv, plots, metrics.json, config.json (what the run used, defaults filled in) and report.md. */
export function writeRunFiles(
  run: Run,
  r: {
    index: DatasetIndex
    labels: string[]
    split: Split
    results: Partial<Record<ModelName, TrainResult>>
    text: TextInputs | undefined
    models: ModelName[]
  },
): void {
  const { options, runDir, seed, stageSeconds, notes, files } = run
  const { index, split } = r
  const trained = r.results as Record<string, TrainResult>
  const info = deviceInfo()
  const device = options.device ?? 'auto'
  const deviceName = device === 'auto' ? (info.cudaAvailable ? 'cuda:0' : 'cpu') : device
  const transcriptSource = r.text?.source ?? 'none'
  const splitSummary = { strategy: split.options.strategy, train: split.train.length, val: split.val.length, test: split.test.length }
  const paths = runPaths(runDir)
  writeHistoryCsv(paths.history, trained)
  for (const [model, result] of Object.entries(trained)) files.push(...writePlots(runDir, model, result, result.test))
  const metrics = metricsFile({
    reference: REFERENCE_ACCURACY,
    split: { ...splitSummary, seed },
    skipped: run.skipped,
    models: modelMetrics(trained),
    stageSeconds,
  })
  writeFileAtomic(paths.metrics, JSON.stringify(metrics, null, 1))
  const config = configFile({
    options: { ...options, onProgress: undefined, signal: undefined, transcripts: transcriptSource },
    // What the run used, defaults filled in, so a run can be repeated from this file alone.
    effective: {
      models: r.models,
      split: split.options,
      // The pipeline-level settings as the core resolves them (no default restated here)…
      ...pipelineLevel(options, seed, r.models[0]),
      encoder: r.models.some((m) => uses(m, 'embedding')) ? encoderSettings(options, trained) : null,
      // …and per model, as each job ran (defaults filled in); data-derived fields left out.
      trainConfig: Object.fromEntries(
        Object.entries(trained).map(([m, result]) => [
          m,
          { ...result.config, labels: undefined, vocabulary: undefined, checkpointDir: undefined },
        ]),
      ),
      precision: Object.fromEntries(Object.entries(trained).map(([m, result]) => [m, result.precision])),
      mel: options.mel ?? 'defaults',
      maxTokens: r.text?.tokenizer.maxLength ?? null,
      maxItems: options.maxItems ?? null,
      train: options.train ?? {},
    },
    labels: r.labels,
    device: deviceName,
    torch: info.torchVersion,
    cpus: cpus().length,
    node: process.version,
    dataset: { root: index.root, items: index.items.length, duplicates: index.duplicates.length, problems: index.problems.length },
  })
  writeFileAtomic(paths.config, JSON.stringify(config, null, 1))
  notes.push(...indexNotes(index))
  writeFileAtomic(
    paths.report,
    reportMarkdown({
      results: trained,
      split: { ...splitSummary, seed },
      device: deviceName,
      machine: `${cpus().length} CPU cores${info.devices[0] ? `, ${info.devices[0].name}` : ''}`,
      stageSeconds,
      transcripts: transcriptSource,
      notes,
      ravdess: index.layout === 'ravdess',
    }),
  )
  files.push(RUN_FILES.history, RUN_FILES.metrics, RUN_FILES.config, RUN_FILES.report)
}

/** metrics.json's per-model figures. */
function modelMetrics(trained: Record<string, TrainResult>) {
  return Object.fromEntries(
    Object.entries(trained).map(([m, result]) => [
      m,
      {
        test: result.test,
        val: result.val,
        bestEpoch: result.bestEpoch,
        epochs: result.history.length,
        trainSeconds: trainingSeconds(result),
        seconds: result.seconds,
        precision: result.precision,
        device: result.device,
      },
    ]),
  )
}

/** The encoder settings a run's states were computed with, defaults filled in. */
function encoderSettings(options: Run['options'], trained: Record<string, TrainResult>) {
  return {
    encoder: options.encoder ?? DEFAULT_ENCODER,
    input: options.encoderInput ?? DEFAULTS.EmbedOptions.input,
    pooling: options.encoderPooling ?? DEFAULTS.EmbedOptions.pooling,
    // The precision the states were computed in (`auto` resolved on this machine).
    precision:
      Object.values(trained).find((t) => t?.spec.inputs.embedding)?.spec.inputs.embedding?.encoder?.precision ??
      options.encoderPrecision ??
      'auto',
    speedPerturb: options.speedPerturb ?? defaultSpeedPerturb(options.preset),
    speakerNorm: options.speakerNorm ?? false,
  }
}

/** The report's notes on clips indexing left out. */
function indexNotes(index: DatasetIndex): string[] {
  const notes: string[] = []
  if (index.duplicates.length)
    notes.push(`${index.duplicates.length} duplicate clip(s) left out: ${index.duplicates.map((d) => basename(d.path)).join(', ')}.`)
  if (index.problems.length)
    notes.push(
      `${index.problems.length} file(s) left out by indexing: ${index.problems.map((p) => `${basename(p.path)} (${p.kind}: ${p.message})`).join('; ')}.`,
    )
  return notes
}

/**
 * `preset`, `epochs`, `batchSize`, `accumulation`, `lr` and `amp` after the core filled in its defaults
 * (for `model`, the first trained: epochs differ by model; `trainConfig` has each model's own).
 */
function pipelineLevel(o: PipelineOptions, seed: number, model: ModelName) {
  const resolved = JSON.parse(
    callNative(() => native.resolveTrainConfig(optionsJson(trainSettings(o, model, seed)))),
  ) as Required<TrainConfig>
  return {
    preset: resolved.preset,
    epochs: resolved.epochs,
    batchSize: resolved.batchSize,
    accumulation: resolved.accumulation,
    lr: resolved.optim.lr,
    amp: resolved.amp,
  }
}
