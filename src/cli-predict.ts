// `emotion-pipeline predict`: label audio files with a run's model (the best by validation UAR unless
// --model names one), one line per file and one named error per bad file; `--timeline` labels
// recordings over time and writes CSV, JSON and an SVG plot.
import { existsSync, readdirSync, statSync } from 'node:fs'
import { basename, join, resolve } from 'node:path'
import { parseCommandArgs } from './cli-args.js'
import type { DeviceSpec } from './device.js'
import { EmotionPipelineError, invalidOption } from './errors.js'
import { DEFAULTS } from './generated/options.js'
import type { LongInput, Vad } from './generated/options.js'
import type { Timeline } from './generated/results.js'
import { loadRun } from './model.js'
import type { EmotionModel } from './model.js'
import type { PredictOptions, PredictRowResult } from './predict.js'
import { ensureWritableDir, writeFileAtomic } from './run-dir.js'
import { timelineCsv, timelineSvg } from './timeline-output.js'
import { svgToPng } from './plots.js'

const AUDIO = /\.(wav|flac|ogg|mp3)$/i

function help(): string {
  const d = DEFAULTS.InferOptions
  return `emotion-pipeline predict --run DIR [options] FILE...

  --run DIR             a train run (not a cross-validation root: give one of its fold-k/ folders)
  --model NAME          the run's model to use (default: the best by validation UAR; the test split is never used)
  --device DEV          cpu | cuda | cuda:N | auto (default cpu)
  --json                one JSON object per input on stdout (the objects model.predict returns)
  --top-k K             the K best labels with their scores (default: text shows the best, --json all)
  --strict              stop at the first input that cannot be scored (default: report it and go on)
  --long-input MODE     inputs longer than the model's window: aggregate (mean of its speech windows) | refuse (default ${d.longInput})
  --max-duration S      longest input in seconds (default ${DEFAULTS.ExtractOptions.maxDuration}; with --timeline 24 h, read as it streams)
  --calibration PATH    unlabelled clips (files or folders) of the speaker, for a model trained with --speaker-norm
  --encoder NAME|DIR    the encoder of a model on encoder states (found by SHA-256 when not given)

  --timeline            label each FILE over time instead (windows with a voice gate)
  --window S            window in seconds (default: the model's)      --hop S   (default: half the window)
  --vad KIND            earshot | energy | off (default ${d.vad})       --min-voiced F   (default ${d.minVoiced})
  --out DIR             write <file>.timeline.csv, .json, .svg and .png there (default: print)

Exit status: 0 when every input was scored, 1 when some could not be (each named on stderr).`
}

function num(value: string | undefined, option: string): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isFinite(n)) throw invalidOption(option, `must be a number, got ${value}`)
  return n
}

function calibrationClips(paths: string[] | undefined): string[] | undefined {
  return paths?.flatMap((p) => {
    if (!existsSync(p)) throw invalidOption('--calibration', `${p} does not exist`)
    return statSync(p).isDirectory()
      ? readdirSync(p)
          .filter((f) => AUDIO.test(f))
          .map((f) => resolve(p, f))
      : [resolve(p)]
  })
}

export async function predictCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs({
    args: argv,
    allowPositionals: true,
    options: {
      run: { type: 'string' },
      model: { type: 'string' },
      device: { type: 'string' },
      calibration: { type: 'string', multiple: true },
      encoder: { type: 'string' },
      json: { type: 'boolean' },
      'top-k': { type: 'string' },
      strict: { type: 'boolean' },
      'long-input': { type: 'string' },
      'max-duration': { type: 'string' },
      timeline: { type: 'boolean' },
      window: { type: 'string' },
      hop: { type: 'string' },
      vad: { type: 'string' },
      'min-voiced': { type: 'string' },
      out: { type: 'string' },
      help: { type: 'boolean' },
    },
  })
  if (values.help || !values.run || positionals.length === 0) {
    // The usage goes to stdout when asked for, to stderr as the answer to a wrong call.
    ;(values.help ? console.log : console.error)(help())
    return values.help ? 0 : 2
  }
  const device = (values.device as DeviceSpec) ?? 'cpu'
  const model = await loadRun(values.run, { model: values.model, device, encoder: values.encoder })
  const run = model.run!
  const why = run.by === 'named' ? 'as named' : run.by === 'validation UAR' ? 'best by validation UAR' : run.by
  console.error(`model: ${run.model}, ${why}${run.valUar === null ? '' : ` (${(run.valUar * 100).toFixed(2)} %)`}, from ${run.dir}`)
  const options: PredictOptions = {
    device,
    calibration: calibrationClips(values.calibration),
    maxDuration: num(values['max-duration'], '--max-duration'),
    window: num(values.window, '--window'),
    hop: num(values.hop, '--hop'),
    vad: values.vad as Vad | undefined,
    minVoiced: num(values['min-voiced'], '--min-voiced'),
  }
  const files = positionals.map((p) => resolve(p))
  if (values.timeline) return timelines(model, files, options, { json: values.json, out: values.out })
  const topK = num(values['top-k'], '--top-k')
  const rows = await model.predict(files, {
    ...options,
    topK,
    strict: values.strict,
    longInput: values['long-input'] as LongInput | undefined,
  })
  return printRows(rows, values.json ?? false, topK)
}

function printRows(rows: PredictRowResult[], json: boolean, topK: number | undefined): number {
  let failed = 0
  for (const row of rows) {
    if (row.error) {
      failed++
      console.error(`${row.path}\t${row.error.code}: ${row.error.message}`)
      if (json) console.log(JSON.stringify(row))
    } else if (json) console.log(JSON.stringify(row))
    else {
      const windows = row.windows > 1 ? `\t(mean of ${row.windows} windows over ${row.seconds.toFixed(1)} s)` : ''
      // The best label, or with --top-k the K best, each with its score.
      const shown = row.scores.slice(0, topK ?? 1).map((s) => `${topK ? `${s.label} ` : ''}${(s.score * 100).toFixed(1)} %`)
      console.log(`${row.path}\t${row.label}\t${shown.join(', ')}${windows}`)
    }
  }
  if (failed) console.error(`${failed} of ${rows.length} inputs could not be scored`)
  return failed ? 1 : 0
}

async function timelines(
  model: EmotionModel,
  files: string[],
  options: PredictOptions,
  how: { json?: boolean; out?: string },
): Promise<number> {
  if (how.out) ensureWritableDir(how.out, '--out')
  // Output names from the file's name; files of the same name get their position in front.
  const names = files.map((f) => basename(f))
  const stems = names.map((n, i) => (names.indexOf(n) === names.lastIndexOf(n) ? n : `${i + 1}-${n}`))
  let failed = 0
  for (const [i, file] of files.entries()) {
    let timeline: Timeline
    try {
      timeline = await model.timeline(file, {
        ...options,
        onProgress: (s) => {
          if (process.stderr.isTTY) process.stderr.write(`\r${names[i]}: ${s.toFixed(0)} s`)
        },
      })
    } catch (e) {
      if (!(e instanceof EmotionPipelineError) || e.code === 'CANCELLED') throw e
      failed++
      console.error(`${file}\t${e.code}: ${e.message}`)
      continue
    } finally {
      if (process.stderr.isTTY) process.stderr.write('\n')
    }
    if (how.out) {
      const stem = join(how.out, `${stems[i]}.timeline`)
      const svg = timelineSvg(timeline, names[i])
      writeFileAtomic(`${stem}.csv`, timelineCsv(timeline))
      writeFileAtomic(`${stem}.json`, `${JSON.stringify(timeline, null, 1)}\n`)
      writeFileAtomic(`${stem}.svg`, svg)
      writeFileAtomic(`${stem}.png`, svgToPng(svg))
      console.error(`${file}: ${timeline.segments.length} windows → ${stem}.{csv,json,svg,png}`)
    } else if (how.json) console.log(JSON.stringify({ path: file, ...timeline }))
    else {
      console.log(`${file} (${timeline.seconds.toFixed(1)} s, windows of ${timeline.window} s every ${timeline.hop} s):`)
      for (const s of timeline.segments) {
        const what = s.speech && s.probabilities ? `${s.label}\t${(s.probabilities[s.labelIndex!] * 100).toFixed(1)} %` : '(no speech)'
        console.log(`  ${s.start.toFixed(2)}–${s.end.toFixed(2)} s\t${what}`)
      }
    }
  }
  if (failed) console.error(`${failed} of ${files.length} recordings could not be read`)
  return failed ? 1 : 0
}
