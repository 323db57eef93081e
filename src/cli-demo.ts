// `emotion-pipeline demo`: the recommended recipe on RAVDESS actors 1–20, scored on a stratified split,
// with the cross-validated figure for unseen speakers beside it. Without data it offers the download.
import { createInterface } from 'node:readline/promises'
import { join, resolve } from 'node:path'
import { parseCommandArgs } from './cli-args.js'
import { fetchRavdess } from './cli-setup.js'
import { DEFAULT_SPLIT_SHARES, JSON_HELP, runPipeline } from './cli-pipeline.js'
import { findRavdess } from './data.js'
import { deviceInfo } from './device.js'
import { DEFAULT_ENCODER } from './encoder-install.js'
import { DEFAULTS } from './generated/options.js'
import type { PipelineOptions } from './pipeline.js'
import { defaultModels } from './presets.js'
import { downloadedRavdess, RAVDESS } from './ravdess-download.js'
import { RECOMMENDED_SPEAKER_CV } from './report.js'

const cv = RECOMMENDED_SPEAKER_CV

/** Where the demo writes when --out is not given (it replaces its own run there). */
const DEMO_OUT = { quick: join('runs', 'demo'), full: join('runs', 'demo-full') }

const DEMO_HELP = `emotion-pipeline demo [--data DIR] [--encoder NAME|DIR] [--full] [--out DIR] [--json]

Trains the recommended recipe on RAVDESS and scores it. Data: --data DIR, else ${'$'}RAVDESS_DIR, else the
actors 1–${RAVDESS.developmentActors} that \`emotion-pipeline download ravdess\` fetched (offered here on a terminal).
Quick (the default on a CPU): the recommended model (${defaultModels('recommended').join(', ')}: a head on frozen ${DEFAULT_ENCODER} states),
stratified ${DEFAULT_SPLIT_SHARES} split (seed ${DEFAULTS.TrainConfig.seed}) of all clips, about 2 minutes on 2 cores once the encoder states are
cached. --full, or when CUDA is present: also the published audio, text and fusion models (50 epochs).

  --data DIR            RAVDESS (Actor_NN/ folders of the original names)
  --out DIR             the run directory (default ${DEMO_OUT.quick}, ${DEMO_OUT.full} with --full; the demo
                        replaces its own default folder, a folder given here follows train's rule)
  --full                also the published audio, text and fusion models
  --encoder NAME|DIR    the encoder model's frozen speech encoder (default ${DEFAULT_ENCODER})
  ${JSON_HELP}`

/** The demo's data: the flag, the environment or a checkout's data, else the download (asked for on a TTY). */
async function demoData(flag: string | undefined, json: boolean): Promise<string | null> {
  if (flag) return resolve(flag)
  const found = findRavdess()
  if (found) return found
  const command = 'npx emotion-pipeline download ravdess'
  if (!process.stdin.isTTY || !process.stderr.isTTY || json) {
    console.error(
      `RAVDESS not found: download it with \`${command}\` (the speech archive, ${RAVDESS.licence.split(' (')[0]}), or pass --data DIR.`,
    )
    return null
  }
  const rl = createInterface({ input: process.stdin, output: process.stderr })
  const answer = await rl.question(
    `RAVDESS not found. Download its speech archive now from Zenodo (record ${RAVDESS.record}, ${RAVDESS.licence.split(' (')[0]})? [y/N] `,
  )
  rl.close()
  if (!/^y(es)?$/i.test(answer.trim())) {
    console.error(`Not downloading. Later: \`${command}\`, or pass --data DIR.`)
    return null
  }
  return (await fetchRavdess(undefined, false)).dir
}

export async function demoCommand(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs({
    args: argv,
    options: {
      full: { type: 'boolean' },
      json: { type: 'boolean' },
      help: { type: 'boolean' },
      out: { type: 'string' },
      data: { type: 'string' },
      encoder: { type: 'string' },
    },
  })
  if (values.help) {
    console.log(DEMO_HELP)
    return 0
  }
  const json = values.json === true
  const data = await demoData(values.data, json)
  if (!data) return 1
  const full = values.full || deviceInfo().cudaAvailable
  const out = values.out ?? join(process.cwd(), full ? DEMO_OUT.full : DEMO_OUT.quick)
  const say = (line: string) => (json ? process.stderr.write(`${JSON.stringify({ type: 'log', message: line })}\n`) : console.log(line))
  say(
    full
      ? `Recommended recipe on ${data}: the encoder model, then the published audio, text and fusion models.`
      : `Quick demo on ${data}: the recommended recipe (the ${cv.model} model, ${cv.epochs} epochs), stratified ${DEFAULT_SPLIT_SHARES} split (use --full for the published models too).`,
  )
  // The demo replaces its own runs/demo; a folder given with --out follows the usual rule.
  const options: PipelineOptions = {
    data,
    out,
    overwrite: values.out === undefined ? true : undefined,
    encoder: values.encoder,
    models: full ? ['encoder', 'audio', 'text', 'fusion'] : undefined,
  }
  if (data === downloadedRavdess())
    say(
      `The data: RAVDESS actors 1–${RAVDESS.developmentActors} of the download, as every figure in the README (actors 21–24 are held out in ${join(data, '..', 'ravdess-heldout')}).`,
    )
  const code = await runPipeline(options, json ? 'json' : 'human')
  if (!json) {
    // The precision `encoderPrecision: 'auto'` resolves to on this CPU (CUDA's fp16 was not cross-validated).
    const precision = deviceInfo().cpuNativeBf16 && !deviceInfo().cudaAvailable ? 'bf16' : 'fp32'
    const { mean, std } = cv.accuracy[precision]
    console.log(
      `\nThis split has the test speakers in training too. On speakers the model never heard, the same recipe scores ` +
        `${(mean * 100).toFixed(1)} ± ${(std * 100).toFixed(1)} % (${cv.folds}-fold speaker cross-validation, ${precision} encoder states, ${cv.source}).`,
    )
    console.log(`Data: RAVDESS, ${RAVDESS.citation} Licence: ${RAVDESS.licence}.`)
  }
  return code
}
