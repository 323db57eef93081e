#!/usr/bin/env node
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { deviceInfo, doctorChecks, formatDoctor } from './device.js'
import { extractMel } from './audio.js'
import { EmotionPipelineError } from './errors.js'
import { tensorRoundTrip } from './tensor.js'
import { findRavdess } from './data.js'

const HELP = `emotion-pipeline <command> [options]

Commands:
  doctor [--json]     what libtorch and CUDA this machine offers, and how to fix what is missing
  demo                a short end-to-end run on RAVDESS ($RAVDESS_DIR or ../shared/data/ravdess)

Run \`emotion-pipeline <command> --help\` for a command's options.`

async function doctor(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { json: { type: 'boolean' }, help: { type: 'boolean' } } })
  if (values.help) {
    console.log('emotion-pipeline doctor [--json]\n\nPrints the libtorch, CUDA and cuDNN this process loads, and fixes for what is missing.')
    return 0
  }
  const info = deviceInfo()
  const checks = doctorChecks(info)
  if (values.json) console.log(JSON.stringify({ ...info, checks }, null, 2))
  else console.log(formatDoctor(info, checks))
  return checks.find((c) => c.name === 'libtorch')?.ok ? 0 : 1
}

async function demo(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { help: { type: 'boolean' } } })
  if (values.help) {
    console.log('emotion-pipeline demo\n\nDoctor report, a tensor round trip through libtorch and log-mel features of one RAVDESS actor.')
    return 0
  }
  const info = deviceInfo()
  console.log(formatDoctor(info, doctorChecks(info)))
  const trip = tensorRoundTrip(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3])
  console.log(`\ntensor round trip on ${trip.device}: shape [${trip.shape}] sum ${trip.sum}`)
  const ravdess = findRavdess()
  if (!ravdess) {
    console.log('\nRAVDESS not found: set RAVDESS_DIR to run the audio part of the demo.')
    return 0
  }
  const actor = join(ravdess, 'Actor_01')
  const files = readdirSync(actor).filter((f) => /\.(wav|flac|ogg|mp3)$/i.test(f)).map((f) => join(actor, f))
  const started = performance.now()
  const mel = await extractMel(files, {
    onProgress: (e) => process.stderr.write(`\rlog-mel ${e.done}/${e.total}`),
  })
  const seconds = (performance.now() - started) / 1000
  process.stderr.write('\n')
  console.log(
    `log-mel of ${mel.shape[0]} clips from ${actor} on ${mel.device}: shape [${mel.shape}] in ${seconds.toFixed(2)} s ` +
      `(${(mel.shape[0] / seconds).toFixed(1)} clips/s); ${mel.failed.length} failed`,
  )
  console.log('\nData: RAVDESS, Livingstone & Russo (2018), CC BY-NC-SA 4.0.')
  return 0
}

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = { doctor, demo }

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
    const code = err instanceof EmotionPipelineError ? err.code : 'INTERNAL'
    console.error(`error [${code}]: ${err instanceof Error ? err.message : String(err)}`)
    process.exit(1)
  },
)
