// `emotion-pipeline export`: writes a run's model (or a model folder) as one ONNX graph with its front
// end, and the JSON sidecar beside it.
import { parseCommandArgs } from './cli-args.js'
import { invalidOption } from './errors.js'
import { EXPORT_FORMATS } from './export.js'
import type { ExportFormat } from './export.js'
import { loadModel, loadRun } from './model.js'

const HELP = `emotion-pipeline export (--run DIR [--model NAME] | --model-dir DIR) --out FILE.onnx [options]

  --run DIR          a train run; its best model by validation UAR unless --model names one
  --model NAME       the run's model to export (audio, encoder, probe; text and fusion read transcripts)
  --model-dir DIR    a model folder instead (train()'s checkpointDir, or a run's models/<name>/)
  --encoder NAME|DIR the encoder of a model on encoder states (found by SHA-256 when not given)
  --out FILE         the .onnx file to write; the sidecar goes to FILE.json
  --format F         ${EXPORT_FORMATS.join(' | ')} (default onnx)
  --browser DIR      instead of --out: a static folder to serve as is (the page, model.onnx, onnxruntime-web's
                     WebAssembly): drop a file or use the microphone, see the emotion over time
  --overwrite        replace an existing FILE.onnx, or write into a --browser folder that is not empty
  --json             the sidecar as JSON on stdout

The graph reads mono float32 samples at the model's sample rate ([batch, samples]) and outputs label
probabilities ([batch, labels]); onnxruntime runs it without libtorch. docs/EXPORT.md.`

export async function exportCommand(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs({
    args: argv,
    options: {
      run: { type: 'string' },
      model: { type: 'string' },
      'model-dir': { type: 'string' },
      encoder: { type: 'string' },
      out: { type: 'string' },
      format: { type: 'string' },
      browser: { type: 'string' },
      overwrite: { type: 'boolean' },
      json: { type: 'boolean' },
      help: { type: 'boolean' },
    },
  })
  if (values.help) {
    console.log(HELP)
    return 0
  }
  if ((values.run === undefined) === (values['model-dir'] === undefined)) {
    throw invalidOption('--run', 'give exactly one of --run DIR and --model-dir DIR')
  }
  if ((values.out === undefined) === (values.browser === undefined)) {
    throw invalidOption('--out', 'give exactly one of --out FILE.onnx and --browser DIR')
  }
  const model =
    values.run !== undefined
      ? await loadRun(values.run, { model: values.model, device: 'cpu', encoder: values.encoder })
      : await loadModel(values['model-dir'] as string, { device: 'cpu', encoder: values.encoder })
  const from = model.run ? `${model.run.model} model of ${model.run.dir}` : model.dir
  if (values.browser !== undefined) {
    if (values.format !== undefined && values.format !== 'onnx')
      throw invalidOption('--format', 'the browser page runs ONNX: leave --format out')
    const page = await model.exportBrowser({ dir: values.browser, overwrite: values.overwrite })
    if (values.json) console.log(JSON.stringify(page))
    else {
      console.error(`[export] ${from} → ${page.dir}: ${page.files.length} files, ${(page.bytes / 1e6).toFixed(1)} MB`)
      console.error(`[export] serve it as is (e.g. python3 -m http.server -d ${page.dir}) and open it in a browser`)
    }
    return 0
  }
  const result = await model.export({
    out: values.out as string,
    format: values.format as ExportFormat | undefined,
    overwrite: values.overwrite,
  })
  if (values.json) console.log(JSON.stringify(result))
  else {
    const from = model.run ? `${model.run.model} model of ${model.run.dir}` : model.dir
    console.error(
      `[export] ${from} → ${result.path} (${(result.bytes / 1e6).toFixed(1)} MB, opset ${result.opset}) and ${result.sidecarPath}`,
    )
    console.error(
      `[export] input \`samples\` [batch, samples] at ${result.sampleRate} Hz → \`scores\` [batch, ${result.labels.length}]: ${result.labels.join(', ')}`,
    )
  }
  return 0
}
