#!/usr/bin/env node
// The `emotion-pipeline` command: dispatches to the command modules; errors become one line with their
// code (exit 2 for flags that do not parse and unknown commands, 130 for Ctrl-C and 143 for SIGTERM, 1 otherwise, invalid
// option values included).
import { cacheCommand } from './cli-cache.js'
import { cancelledExitCode } from './cli-signals.js'
import { demoCommand } from './cli-demo.js'
import { exportCommand } from './cli-export.js'
import { cvCommand, trainCommand } from './cli-pipeline.js'
import { predictCommand } from './cli-predict.js'
import { benchCommand, doctorCommand, downloadCommand, installModelsCommand, installTorchCommand } from './cli-setup.js'
import { closest, EmotionPipelineError } from './errors.js'
import { REQUIRED_TORCH } from './libtorch.js'
import { packageVersion } from './version.js'

const HELP = `emotion-pipeline <command> [options]

Commands:
  train          train models on a dataset folder (default: the recommended encoder model) into a run directory
  cv             speaker cross-validation: k folds with disjoint test speakers, and their summary
  predict        label audio files with a trained run
  export         write a trained model as ONNX with its front end (runs in onnxruntime without libtorch)
  doctor         what libtorch, CUDA and models this machine offers, and how to fix what is missing
  install-torch  put libtorch ${REQUIRED_TORCH} in the per-user cache (--cpu | --cuda, --from FILE, --dir DIR)
  install-models --encoder NAME installs a speech encoder (the default model needs whisper-base); without
                 it, builds the offline Whisper tiny.en the text branch uses (no Python needed)
  download       download a dataset: ravdess (the RAVDESS speech archive from Zenodo)
  bench          native benchmarks against Python PyTorch/torchaudio (mel front end, training, encoder)
  cache          list the per-user cache's parts and sizes, or clean some (cache list | cache clean --what …)
  demo           the recommended recipe on RAVDESS actors 1–20, scored

Options of every command: --help; --json (progress events as JSON lines on stderr, the result as JSON
on stdout). emotion-pipeline --version prints the version.

Run \`emotion-pipeline <command> --help\` for a command's options.`

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  train: trainCommand,
  cv: cvCommand,
  predict: predictCommand,
  export: exportCommand,
  doctor: doctorCommand,
  bench: benchCommand,
  demo: demoCommand,
  cache: cacheCommand,
  download: downloadCommand,
  'install-torch': installTorchCommand,
  'install-models': installModelsCommand,
}

async function main(): Promise<number> {
  const [command, ...rest] = process.argv.slice(2)
  if (command === '--version' || command === '-v' || command === 'version') {
    console.log(packageVersion())
    return 0
  }
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    console.log(HELP)
    return command ? 0 : 1
  }
  const run = COMMANDS[command]
  if (!run) {
    const near = closest(command, Object.keys(COMMANDS))
    console.error(`unknown command '${command}'${near ? ` (did you mean ${near}?)` : ''}\n\n${HELP}`)
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
    const message = err instanceof Error ? err.message : String(err)
    if (process.argv.includes('--json')) console.log(JSON.stringify({ type: 'error', code, message }))
    console.error(`error [${code}]: ${message}`)
    process.exit(code === 'CANCELLED' ? cancelledExitCode() : usage ? 2 : 1)
  },
)
