// The run directory's typed files: metrics.json and config.json carry a format tag and the package
// version, and their readers (used by the cross-validation summary, the CLI and scripts) refuse a file
// whose fields were renamed or retyped by hand, naming the field.
import test from 'ava'
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { EmotionPipelineError } from '../src/errors.js'
import { trainPipeline } from '../src/index.js'
import { chooseRunModel } from '../src/model.js'
import { CONFIG_FORMAT, METRICS_FORMAT, readRunConfig, readRunMetrics, readRunSplit, runPaths } from '../src/run-layout.js'
import { packageVersion } from '../src/version.js'
import { haveRavdess, NO_DATA, ravdessDir, skip, tempDir } from './helpers.js'

test('a run is read back through the typed readers; a field renamed by hand is refused by name', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const data = tempDir('ep-layout-data-')
  for (const a of ['Actor_03', 'Actor_04']) symlinkSync(join(ravdessDir, a), join(data, a))
  const out = join(tempDir('ep-layout-'), 'run')
  await trainPipeline({ data, out, models: ['encoder'], epochs: 1, maxItems: 32, speedPerturb: [], device: 'cpu' })
  const metrics = readRunMetrics(out)
  t.is(metrics.format, METRICS_FORMAT)
  t.is(metrics.version, packageVersion())
  t.true(metrics.models.encoder.epochs === 1 && metrics.models.encoder.test !== null)
  const config = readRunConfig(out)
  t.is(config.format, CONFIG_FORMAT)
  t.deepEqual(new Set(config.labels).size, config.labels.length)
  t.true(readRunSplit(out).test.length > 0)

  const file = runPaths(out).metrics
  const text = readFileSync(file, 'utf8')
  writeFileSync(file, text.replace('"bestEpoch"', '"best_epoch"'))
  const renamed = t.throws(() => readRunMetrics(out)) as EmotionPipelineError
  t.is(renamed.code, 'IO')
  t.regex(renamed.message, /metrics\.json: field `models\.encoder\.bestEpoch` is missing or of the wrong type/)
  writeFileSync(file, text.replace(METRICS_FORMAT, 'emotion-pipeline/metrics@9'))
  t.regex(
    (t.throws(() => readRunMetrics(out)) as Error).message,
    /has format "emotion-pipeline\/metrics@9", expected emotion-pipeline\/metrics@1/,
  )
  const configFile = runPaths(out).config
  writeFileSync(configFile, readFileSync(configFile, 'utf8').replace('"labels"', '"classes"'))
  t.regex((t.throws(() => readRunConfig(out)) as Error).message, /config\.json: field `labels`/)
})

test('loading a run: a missing folder is not found; a run of transcript models is refused naming them', (t) => {
  const missing = join(tempDir('ep-layout-none-'), 'nope')
  t.throws(() => chooseRunModel(missing), { code: 'MODEL_NOT_FOUND', message: /run folder .*nope not found/ } as never)
  // A run that trained only the text model (the files chooseRunModel reads).
  const run = tempDir('ep-layout-text-')
  const paths = runPaths(run)
  writeFileSync(paths.metrics, JSON.stringify({ models: { text: { val: { uar: 0.2 } } } }))
  mkdirSync(paths.model('text'), { recursive: true })
  writeFileSync(join(paths.model('text'), 'best.json'), '{}')
  t.throws(() => chooseRunModel(run), { code: 'INVALID_OPTION', message: /holds only text, which read Whisper transcripts/ } as never)
})
