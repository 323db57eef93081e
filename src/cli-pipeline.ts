// The `train` and `cv` commands: flags → PipelineOptions, progress, results. Help texts are
// rendered from the defaults the library uses (presets.ts, the generated core defaults), never restated.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseCommandArgs } from './cli-args.js'
import { crossValidate } from './cross-validate.js'
import { launchLocal, worldFromEnv } from './distributed.js'
import type { DeviceSpec } from './device.js'
import { DEFAULT_ENCODER, ENCODER_NAMES } from './encoder-install.js'
import { invalidOption } from './errors.js'
import { DEFAULTS } from './generated/options.js'
import { trainPipeline } from './pipeline.js'
import type { PipelineOptions, PipelineResult } from './pipeline.js'
import { stopOnSignals } from './cli-signals.js'
import { defaultModels, defaultSpeedPerturb, MODEL_NAMES, PRESET_EPOCHS } from './presets.js'
import type { ModelName } from './presets.js'
import { progressPrinter } from './progress.js'
import type { ProgressMode } from './progress.js'
import { REFERENCE_ACCURACY } from './report.js'
import { RUN_FILES } from './run-layout.js'

const list = (xs: readonly (string | number)[]) => (xs.length ? xs.join(',') : 'none')

/** The default split's train/test shares as the help says them, e.g. "80/20". */
const test = DEFAULTS.SplitOptions.testFraction
export const DEFAULT_SPLIT_SHARES = `${Math.round((1 - test) * 100)}/${Math.round(test * 100)}`

export const JSON_HELP = '--json                progress events as JSON lines on stderr, the result as JSON on stdout'

/** `train --help`, from the presets and the core's defaults. */
export function trainHelp(): string {
  const t = DEFAULTS.TrainConfig
  const e = DEFAULTS.EmbedOptions
  return `emotion-pipeline train --data DIR --out DIR [options]

  --data DIR|FILE       dataset folder (RAVDESS names, or <label>/ folders), or a manifest FILE.csv|.jsonl
                        (path,label[,speaker]; paths relative to it); speakers are optional
  --data-root DIR       every manifest entry must lie in DIR (links resolved); others are refused by name
  --out DIR             run directory to write
  --models LIST         comma-separated: ${MODEL_NAMES.join(',')} (default: ${list(defaultModels('recommended'))};
                        with --preset reference: ${list(defaultModels('reference'))})
  --encoder NAME|DIR    frozen speech encoder of the encoder model: ${DEFAULT_ENCODER} (default) | ${ENCODER_NAMES.filter((n) => n !== DEFAULT_ENCODER).join(' | ')} |
                        a Hugging Face Hub repository (org/name[@revision], e.g. openai/whisper-small;
                        HF_TOKEN, HF_ENDPOINT and HF_HUB_OFFLINE apply) | a folder with config.json and
                        model.safetensors, or with a CTranslate2 Whisper model.bin
  --encoder-input KIND  clip (each clip at its own length) | padded (to Whisper's 30 s); default ${e.input}
  --encoder-pooling P   mean | meanStd (mean and standard deviation of each layer's states); default ${e.pooling}
  --encoder-precision P auto (fp16 on CUDA, bf16 on CPUs with native bf16, else fp32) | fp32 | fp16 | bf16;
                        default ${e.precision}
  --speed-perturb LIST  encoder model: extra training copies at these speeds (default: ${list(defaultSpeedPerturb('recommended'))};
                        with --preset reference: ${list(defaultSpeedPerturb('reference'))}); 'none' for no copies
  --speaker-norm        standardise encoder states per speaker, test speakers included (uses their
                        unlabelled audio: not for predicting on a new speaker without calibration clips)
  --preset NAME         recommended (default: the best recipe measured on unseen speakers) | reference
                        (the published pipeline: constant lr, no label smoothing or augmentation)
  --split KIND          stratified (default, ${DEFAULT_SPLIT_SHARES} train/test: no validation part, so the last epoch is
                        kept) | speaker (${Math.round(test * 100)} % of the speakers to test, no speaker in both parts; needs
                        speakers). trainPipeline's split option takes valFraction / valSpeakers too
  --epochs N            default ${PRESET_EPOCHS.default} (the encoder model with the recommended preset: ${PRESET_EPOCHS.recommendedEncoder})
  --batch-size N        default ${t.batchSize}
  --accumulation N      default ${t.accumulation}
  --lr X                default ${DEFAULTS.AdamConfig.lr}
  --device D            auto (default) | cpu | cuda | cuda:N
  --amp MODE            auto (default: fp16 on CUDA; on the CPU bf16 with the recommended preset where
                        the CPU has native bf16, else fp32) | fp16 | bf16 | off
  --seed N              default ${t.seed}
  --max-items N         train on a stratified sample of N clips (quick runs)
  --max-duration S      longest clip in seconds (default ${DEFAULTS.ExtractOptions.maxDuration}): longer ones are skipped as undecodable
  --cache-dir DIR|none  the feature cache (default: the per-user cache's features/); none: no cache
  --transcripts KIND    whisper (default) | ravdess-names (the statement in each RAVDESS file name) |
                        FILE.json: { "<clip path or file name without extension>": "text", … }
  --mel JSON            front-end options, e.g. '{"align":"center"}' (MelOptions, torchaudio names)
  --train JSON          per-model training options, e.g. '{"encoder":{"encoderHead":{"speakerAdversary":0}}}'
  --resume              continue the run in --out (finished models are kept, interrupted ones go on)
  --overwrite           replace the run in --out (a non-empty --out is refused without --resume or this)
  --nproc-per-node N    data-parallel over N processes on this machine (each its share of the cores;
                        --batch-size is per process; rank 0 writes --out). Under torchrun (RANK,
                        WORLD_SIZE, MASTER_ADDR, MASTER_PORT set) the command joins that world instead:
                        torchrun --no-python --nnodes M --nproc-per-node N emotion-pipeline train …
  ${JSON_HELP}
  --quiet               no progress, only the result

The recommended recipe's speaker adversary needs at least 2 training speakers; without them it is
switched off with a warning (and a line in the report).`
}

function summary(result: PipelineResult): string {
  const lines = ['', 'model    test acc   weighted F1   reference acc', '-------  ---------  ------------  -------------']
  for (const [m, r] of Object.entries(result.models)) {
    const t = r!.test
    const ref: number | undefined = REFERENCE_ACCURACY[m as keyof typeof REFERENCE_ACCURACY]
    lines.push(
      `${m.padEnd(7)}  ${t ? (t.accuracy * 100).toFixed(2).padStart(7) + ' %' : '      —  '}  ${t ? (t.weightedF1 * 100).toFixed(2).padStart(10) + ' %' : '—'}  ${ref === undefined ? '          —  ' : `${(ref * 100).toFixed(2).padStart(11)} %`}`,
    )
  }
  lines.push('', `Run directory: ${result.runDir} (report.md, metrics.json, history.csv, plots)`)
  return lines.join('\n')
}

/** Runs the pipeline with Ctrl-C as a clean stop; prints the result (JSON on stdout with --json). */
export async function runPipeline(options: PipelineOptions, mode: ProgressMode): Promise<number> {
  const controller = new AbortController()
  const stopWatching = stopOnSignals(
    controller,
    'stopping at the next step (a checkpoint is written); continue with the same command and --resume…',
  )
  const result = await trainPipeline({ ...options, onProgress: progressPrinter(mode), signal: controller.signal })
  stopWatching()
  // In a world, rank 0 prints the result.
  if ((worldFromEnv()?.rank ?? 0) !== 0) return 0
  if (mode === 'json') console.log(JSON.stringify({ type: 'result', ...result }))
  else console.log(summary(result))
  return 0
}

function jsonOption<T>(name: string, text: string | undefined): T | undefined {
  if (text === undefined) return undefined
  try {
    return JSON.parse(text) as T
  } catch (err) {
    throw invalidOption(name, `not JSON (${(err as Error).message})`)
  }
}

function transcriptsOption(value: string | undefined): PipelineOptions['transcripts'] {
  if (value === undefined || value === 'whisper' || value === 'ravdess-names') return value
  let text: string
  try {
    text = readFileSync(value, 'utf8')
  } catch {
    throw invalidOption('--transcripts', `'${value}' is neither whisper, ravdess-names nor a readable JSON file`)
  }
  const map = jsonOption<Record<string, string>>('--transcripts', text)
  if (!map || typeof map !== 'object' || Array.isArray(map))
    throw invalidOption('--transcripts', `${value} must hold a JSON object of clip → text`)
  return map
}

/** The options `train` and `cv` share. */
export const PIPELINE_FLAGS = {
  data: { type: 'string' },
  out: { type: 'string' },
  models: { type: 'string' },
  preset: { type: 'string' },
  epochs: { type: 'string' },
  'batch-size': { type: 'string' },
  accumulation: { type: 'string' },
  lr: { type: 'string' },
  device: { type: 'string' },
  amp: { type: 'string' },
  seed: { type: 'string' },
  'max-items': { type: 'string' },
  'max-duration': { type: 'string' },
  'cache-dir': { type: 'string' },
  'data-root': { type: 'string' },
  transcripts: { type: 'string' },
  mel: { type: 'string' },
  encoder: { type: 'string' },
  'encoder-input': { type: 'string' },
  'speaker-norm': { type: 'boolean' },
  'speed-perturb': { type: 'string' },
  'encoder-pooling': { type: 'string' },
  'encoder-precision': { type: 'string' },
  train: { type: 'string' },
  resume: { type: 'boolean' },
  overwrite: { type: 'boolean' },
  json: { type: 'boolean' },
  quiet: { type: 'boolean' },
  help: { type: 'boolean' },
} as const

export type PipelineFlags = Partial<Record<keyof typeof PIPELINE_FLAGS, string | boolean>>

const num = (v: string | boolean | undefined) => (v === undefined ? undefined : Number(v))
const speedsOption = (v: string | undefined) => (v === undefined ? undefined : v === 'none' ? [] : v.split(',').map(Number))

export function pipelineOptions(values: PipelineFlags): PipelineOptions {
  const text = (v: string | boolean | undefined) => (typeof v === 'string' ? v : undefined)
  return {
    data: text(values.data)!,
    out: text(values.out)!,
    models: text(values.models)
      ?.split(',')
      .map((m) => m.trim()) as ModelName[] | undefined,
    preset: text(values.preset) as PipelineOptions['preset'],
    epochs: num(values.epochs),
    batchSize: num(values['batch-size']),
    accumulation: num(values.accumulation),
    lr: num(values.lr),
    device: text(values.device) as DeviceSpec | undefined,
    amp: text(values.amp) as PipelineOptions['amp'],
    seed: num(values.seed),
    maxItems: num(values['max-items']),
    maxDuration: num(values['max-duration']),
    cacheDir: values['cache-dir'] === 'none' ? null : text(values['cache-dir']),
    index: values['data-root'] === undefined ? undefined : { dataRoot: text(values['data-root']) },
    resume: values.resume === true ? true : undefined,
    overwrite: values.overwrite === true ? true : undefined,
    transcripts: transcriptsOption(text(values.transcripts)),
    mel: jsonOption('--mel', text(values.mel)),
    encoder: text(values.encoder),
    encoderInput: text(values['encoder-input']) as PipelineOptions['encoderInput'],
    speakerNorm: values['speaker-norm'] === true ? true : undefined,
    speedPerturb: speedsOption(text(values['speed-perturb'])),
    encoderPooling: text(values['encoder-pooling']) as PipelineOptions['encoderPooling'],
    encoderPrecision: text(values['encoder-precision']) as PipelineOptions['encoderPrecision'],
    train: jsonOption('--train', text(values.train)),
  }
}

export async function trainCommand(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs({
    args: argv,
    options: { ...PIPELINE_FLAGS, split: { type: 'string' }, 'nproc-per-node': { type: 'string' } },
  })
  if (values.help) {
    console.log(trainHelp())
    return 0
  }
  const nproc = nprocOption(values['nproc-per-node'])
  // The launcher: N copies of this command (without the flag), each a rank of one data-parallel job.
  if (nproc > 1 && !worldFromEnv()) return launchLocal(nproc, ['train', ...argv.filter((_, i) => !isNprocArg(argv, i))])
  if (!values.data || !values.out) {
    console.error(`--data and --out are required\n\n${trainHelp()}`)
    return 2
  }
  return runPipeline(
    { ...pipelineOptions(values), split: values.split as PipelineOptions['split'], distributed: 'env' },
    values.json ? 'json' : values.quiet ? 'quiet' : 'human',
  )
}

function nprocOption(value: string | undefined): number {
  const nproc = value === undefined ? 1 : Number(value)
  if (!Number.isInteger(nproc) || nproc < 1) throw invalidOption('--nproc-per-node', `must be a whole number ≥ 1, got ${value}`)
  return nproc
}

const CV_HELP = `emotion-pipeline cv --data DIR --out DIR [--folds 5] [options]

Speaker cross-validation: each fold tests on speakers that neither its training nor its validation set
contains (RAVDESS actors 1–20, 5 folds: 4 test actors per fold). Each fold is a run directory
(DIR/fold-<k>); the summary (mean ± std of accuracy, UAR and weighted F1 per model, per-class recall,
pooled confusion matrix) is DIR/cv.json and DIR/report.md. Stopped runs go on where they stopped: run
the same command again.

  --folds N             folds (default 5)
  --only LIST           run only these folds, e.g. 0,1 (0-based); the summary covers finished folds
  --val-fraction X      share of each fold's training speakers used for validation (default 0.125)
  --nproc-per-node N    run the folds in N processes on this machine (each rank every N-th fold, its
                        share of the cores; rank 0 writes the summary). Under torchrun (RANK, WORLD_SIZE,
                        MASTER_ADDR, MASTER_PORT set) the command joins that world instead:
                        torchrun --no-python --nproc-per-node N emotion-pipeline cv …
  and every option of \`train\` except --split (see emotion-pipeline train --help); with --json each
  event (fold events included) is a JSON line on stderr and the summary is JSON on stdout`

/** Whether `argv[i]` is `--nproc-per-node`, its value, or `--nproc-per-node=N`. */
function isNprocArg(argv: string[], i: number): boolean {
  return argv[i].startsWith('--nproc-per-node') || (i > 0 && argv[i - 1] === '--nproc-per-node')
}

export async function cvCommand(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs({
    args: argv,
    options: {
      ...PIPELINE_FLAGS,
      folds: { type: 'string' },
      only: { type: 'string' },
      'val-fraction': { type: 'string' },
      'nproc-per-node': { type: 'string' },
    },
  })
  if (values.help) {
    console.log(CV_HELP)
    return 0
  }
  const nproc = nprocOption(values['nproc-per-node'])
  // The launcher: N copies of this command (without the flag), each a rank of one world.
  if (nproc > 1 && !worldFromEnv()) return launchLocal(nproc, ['cv', ...argv.filter((_, i) => !isNprocArg(argv, i))])
  if (!values.data || !values.out) {
    console.error(`--data and --out are required\n\n${CV_HELP}`)
    return 2
  }
  const mode: ProgressMode = values.json ? 'json' : values.quiet ? 'quiet' : 'human'
  const controller = new AbortController()
  const stopWatching = stopOnSignals(
    controller,
    'stopping at the next step (a checkpoint is written); run the same command again to go on…',
  )
  const print = progressPrinter(mode)
  const result = await crossValidate({
    ...pipelineOptions(values),
    folds: num(values.folds),
    only: values.only?.split(',').map((k) => Number(k.trim())),
    valFraction: num(values['val-fraction']),
    distributed: 'env',
    signal: controller.signal,
    onProgress: (e) => {
      if (e.type === 'fold') {
        if (mode === 'human') console.error(`\n== ${e.message} ==`)
        else if (mode === 'json') process.stderr.write(`${JSON.stringify(e)}\n`)
      } else print(e)
    },
  })
  stopWatching()
  // In a world, rank 0 prints the result.
  if ((worldFromEnv()?.rank ?? 0) !== 0) return 0
  if (mode === 'json') console.log(JSON.stringify({ type: 'result', ...result }))
  else {
    const pm = (x: { mean: number; std: number }) => `${(x.mean * 100).toFixed(2)} ± ${(x.std * 100).toFixed(2)} %`
    console.log(`\n${result.finished.length} of ${result.folds} folds; mean ± std over folds:`)
    for (const [m, s] of Object.entries(result.models))
      console.log(`${m.padEnd(7)} accuracy ${pm(s.accuracy)}   UAR ${pm(s.uar)}   weighted F1 ${pm(s.weightedF1)}`)
    console.log(`\nSummary: ${join(result.out, RUN_FILES.report)}`)
  }
  return 0
}
