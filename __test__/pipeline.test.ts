import test from 'ava'
import { execFileSync, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { deviceInfo, EmotionPipelineError, extractEmbeddings, installedEncoderDir, loadModel, trainPipeline } from '../src/index.js'
import type { ModelName, PipelineEvent } from '../src/index.js'
import { decodePng, haveRavdess, NO_DATA, ravdessDir, runAsync, skip, tempDir } from './helpers.js'

const SMALL = { audio: { channels: [8, 16, 32], hidden: [32, 16] } }
const quick = (out: string) => ({
  data: ravdessDir,
  out,
  maxItems: 48,
  epochs: 2,
  device: 'cpu' as const,
  models: ['audio', 'text', 'fusion', 'encoder'] as ModelName[],
  train: { audio: SMALL, fusion: SMALL, text: { epochs: 3 } },
})

let run: ReturnType<typeof trainPipeline> | undefined
const runDir = tempDir('ep-run-')
const events: PipelineEvent[] = []
function quickRun() {
  run ??= trainPipeline({ ...quick(runDir), onProgress: (e) => events.push(e) })
  return run
}

test('trainPipeline writes a complete run directory with metrics in range', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const result = await quickRun()
  t.deepEqual(Object.keys(result.models), ['audio', 'text', 'fusion', 'encoder'])
  t.deepEqual(result.split, { strategy: 'stratified', train: 38, val: 0, test: 10 })
  for (const f of [
    'config.json',
    'split.json',
    'metrics.json',
    'history.csv',
    'report.md',
    'vocabulary.json',
    'models/audio/best.safetensors',
    'models/fusion/last.state.json',
  ]) {
    t.true(existsSync(join(runDir, f)), f)
  }
  const metrics = JSON.parse(readFileSync(join(runDir, 'metrics.json'), 'utf8'))
  for (const m of ['audio', 'text', 'fusion', 'encoder']) {
    const test = metrics.models[m].test
    t.is(test.count, 10)
    for (const k of ['accuracy', 'weightedF1', 'weightedPrecision', 'weightedRecall', 'macroF1', 'uar'])
      t.true(test[k] >= 0 && test[k] <= 1, `${m}.${k} = ${test[k]}`)
    t.is(
      test.confusion.flat().reduce((a: number, b: number) => a + b, 0),
      10,
    )
  }
  const csv = readFileSync(join(runDir, 'history.csv'), 'utf8').trim().split('\n')
  t.is(csv[0], 'model,epoch,trainLoss,trainAccuracy,valLoss,valAccuracy,valF1,lr,seconds,skippedSteps')
  t.is(csv.length, 1 + 2 + 3 + 2 + 2)
  const config = JSON.parse(readFileSync(join(runDir, 'config.json'), 'utf8'))
  t.like(config.effective, {
    epochs: 2,
    batchSize: 16,
    accumulation: 2,
    lr: 1e-3,
    maxTokens: 6,
    maxItems: 48,
    preset: 'recommended',
    // amp 'auto' with the recommended preset on the CPU: bf16 where it is native, else fp32.
    precision: { audio: deviceInfo().cpuNativeBf16 ? 'bf16' : 'fp32' },
  })
  // What the preset filled in is recorded, resolved, per model.
  t.like(config.effective.trainConfig.audio, {
    preset: 'recommended',
    lrSchedule: 'cosine',
    labelSmoothing: 0.1,
    augment: { specAugment: null, mixup: null },
  })
  t.is(config.effective.split.seed, 42)
  const report = readFileSync(join(runDir, 'report.md'), 'utf8')
  t.regex(report, /\| audio \| .* \| 69\.28 % \|/)
  t.regex(report, /CC BY-NC-SA 4\.0/)
  // RAVDESS clips run 3.3–5 s: the reference CNN's 3 s window cuts them, and the report says so.
  t.regex(report, /\d+ of \d+ clip\(s\) are longer than the 3 s mel window and were cut to it/)
  t.true(events.some((e) => e.type === 'warning' && /longer than the 3 s mel window/.test(e.message)))
  t.true(events.some((e) => e.type === 'stage' && e.stage === 'features'))
  t.true(events.some((e) => e.type === 'stage' && e.stage === 'embeddings'))
  // The encoder head's input shape came from the embeddings: Whisper-base's 6 layers + 1, 512 wide.
  t.like(config.effective.trainConfig.encoder, { model: 'encoder', encoderHead: { inputLayers: 7, inputWidth: 512 } })
  t.true(events.some((e) => e.type === 'epochEnd'))
})

test('plots are SVG and PNG files that decode', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  await quickRun()
  for (const m of ['audio', 'text', 'fusion', 'encoder']) {
    for (const kind of ['confusion', 'loss']) {
      const svg = readFileSync(join(runDir, `${kind}-${m}.svg`), 'utf8')
      t.regex(svg, /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/)
      const { width, height } = decodePng(join(runDir, `${kind}-${m}.png`))
      t.true(width > 400 && height > 300, `${kind}-${m}.png is ${width}×${height}`)
    }
  }
  t.regex(readFileSync(join(runDir, 'confusion-audio.svg'), 'utf8'), />surprised</)
})

for (const name of ['audio', 'encoder'] as const) {
  test(`predict on a saved run with the ${name} model: API and CLI${name === 'encoder' ? ' (its default)' : ''}`, async (t) => {
    if (!haveRavdess) return skip(t, NO_DATA)
    await quickRun()
    const split = JSON.parse(readFileSync(join(runDir, 'split.json'), 'utf8'))
    const files: string[] = split.test.slice(0, 3).map((i: { path: string }) => i.path)
    const model = await loadModel(join(runDir, 'models', name), { device: 'cpu' })
    const predictions = await model.predictFiles(files)
    t.is(predictions.length, 3)
    t.true(predictions.every((p) => model.labels.includes(p.label) && p.probabilities.length === 8))
    const cli = resolve(import.meta.dirname, '..', 'dist', 'cli.js')
    const args = ['predict', '--run', runDir, '--json', ...(name === 'audio' ? ['--model', 'audio'] : []), ...files]
    const out = execFileSync(process.execPath, [cli, ...args], { encoding: 'utf8' })
    const lines = out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    t.deepEqual(
      lines.map((l) => l.label),
      predictions.map((p) => p.label),
    )
    if (name === 'encoder') {
      // The states' precision is recorded resolved (never 'auto') and predictFiles encodes in it.
      const source = model.meta.spec.inputs.embedding!.encoder!
      const resolved = deviceInfo().cpuNativeBf16 ? 'bf16' : 'fp32'
      t.is(source.precision, resolved)
      t.is(JSON.parse(readFileSync(join(runDir, 'config.json'), 'utf8')).effective.encoder.precision, resolved)
      const e = await extractEmbeddings(files, { encoder: source.name, precision: source.precision, device: 'cpu' })
      t.deepEqual(
        (await model.predictFeatures({ embedding: { data: e.data, shape: e.shape as [number, number, number] } })).map(
          (p) => p.probabilities,
        ),
        predictions.map((p) => p.probabilities),
      )
    }
  })
}

test('predict and export refuse text and fusion models by name (they read transcripts)', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  await quickRun()
  for (const name of ['text', 'fusion']) {
    const model = await loadModel(join(runDir, 'models', name), { device: 'cpu' })
    await t.throwsAsync(model.predict([join(ravdessDir, 'Actor_01', '03-01-01-01-01-01-01.flac')]), {
      instanceOf: EmotionPipelineError,
      message: /invalid option `model`: the (text|fusion) model reads Whisper transcripts.*predictFeatures/,
    })
    const out = join(tempDir('ep-export-refused-'), 'm.onnx')
    await t.throwsAsync(model.export({ out }), {
      code: 'INVALID_OPTION',
      message: new RegExp(`the ${name} model cannot be exported to ONNX: it reads Whisper transcripts`),
    } as never)
    t.false(existsSync(out))
  }
})

test('per-speaker normalisation: the report says so, and predicting needs calibration clips of the speaker', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const out = tempDir('ep-run-spknorm-')
  await trainPipeline({ ...quick(out), models: ['encoder'], speakerNorm: true })
  t.regex(readFileSync(join(out, 'report.md'), 'utf8'), /Per-speaker normalisation: .*test speakers included/)
  const model = await loadModel(join(out, 'models', 'encoder'), { device: 'cpu' })
  t.true(model.meta.spec.inputs.embedding?.encoder?.speakerNorm)
  const split = JSON.parse(readFileSync(join(out, 'split.json'), 'utf8'))
  const speaker = split.test[0].speaker
  const files: string[] = split.test.filter((i: { speaker: string }) => i.speaker === speaker).map((i: { path: string }) => i.path)
  const err = await t.throwsAsync(model.predictFiles(files))
  t.is((err as EmotionPipelineError).code, 'INVALID_OPTION')
  t.regex(err!.message, /calibration/)
  const predictions = await model.predictFiles(files, { calibration: files })
  t.is(predictions.length, files.length)
  t.true(predictions.every((p) => p.probabilities.every(Number.isFinite)))
  const cli = resolve(import.meta.dirname, '..', 'dist', 'cli.js')
  const viaCli = execFileSync(process.execPath, [cli, 'predict', '--run', out, '--json', '--calibration', files[0], ...files], {
    encoding: 'utf8',
  })
  t.is(viaCli.trim().split('\n').length, files.length)
})

test('the linear probe trains and predicts through the public API; a model on an encoder folder keeps only its name and finds its encoder by SHA-256', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  if (!existsSync(join(installedEncoderDir('whisper-base'), 'model.bin'))) return skip(t, 'whisper-base is not installed')
  const out = tempDir('ep-run-probe-')
  // The installed encoder under another folder name: a user's own encoder folder.
  const folder = join(tempDir('ep-encoder-folder-'), 'my-whisper')
  symlinkSync(installedEncoderDir('whisper-base'), folder)
  const r = await trainPipeline({ ...quick(out), models: ['probe'], encoder: folder })
  t.true(r.models.probe!.test!.accuracy >= 0 && r.models.probe!.history.length === 2)
  const dir = join(out, 'models', 'probe')
  t.false(readFileSync(join(dir, 'best.json'), 'utf8').includes(folder), 'no absolute path in the model folder')
  // Found among the installed encoders by its SHA-256, whatever the folder was called.
  const model = await loadModel(dir, { device: 'cpu' })
  t.is(model.meta.spec.kind, 'probe')
  t.like(model.meta.spec.inputs.embedding, { layers: 7, width: 512, groups: 1 })
  t.like(model.meta.spec.inputs.embedding?.encoder, { source: 'folder', name: 'my-whisper' })
  t.is(model.encoderDir, installedEncoderDir('whisper-base'))
  const split = JSON.parse(readFileSync(join(out, 'split.json'), 'utf8'))
  const files: string[] = split.test.slice(0, 3).map((i: { path: string }) => i.path)
  const predictions = await model.predictFiles(files)
  t.is(predictions.length, 3)
  t.true(predictions.every((p) => p.probabilities.length === 8 && p.probabilities.every(Number.isFinite)))
  t.deepEqual(
    (await (await loadModel(dir, { device: 'cpu', encoder: folder })).predictFiles(files)).map((p) => p.probabilities),
    predictions.map((p) => p.probabilities),
  )
  if (existsSync(join(installedEncoderDir('whisper-tiny.en'), 'model.bin'))) {
    const other = await t.throwsAsync(loadModel(dir, { device: 'cpu', encoder: 'whisper-tiny.en' }))
    t.is((other as EmotionPipelineError).code, 'MODEL_NOT_FOUND')
    t.regex(other!.message, /SHA-256/)
  }
  // Another HOME's cache without the encoder: refused naming the SHA-256 and the override; --encoder works.
  const cli = resolve(import.meta.dirname, '..', 'dist', 'cli.js')
  const torch = dirname(deviceInfo().libtorch!.path) // the libtorch this process uses, which the empty cache lacks
  const env = { ...process.env, EMOTION_PIPELINE_CACHE: tempDir('ep-empty-cache-'), EMOTION_PIPELINE_LIBTORCH: torch }
  const refused = spawnSync(process.execPath, [cli, 'predict', '--run', out, '--model', 'probe', files[0]], { encoding: 'utf8', env })
  t.is(refused.status, 1)
  t.regex(refused.stderr, /MODEL_NOT_FOUND.*SHA-256 [0-9a-f]{64}.*install-models --encoder whisper-base.*--encoder DIR/)
  const given = spawnSync(process.execPath, [cli, 'predict', '--run', out, '--model', 'probe', '--encoder', folder, '--json', files[0]], {
    encoding: 'utf8',
    env,
  })
  t.is(given.status, 0, given.stderr)
  t.is(JSON.parse(given.stdout).label, predictions[0].label)
})

test('an aborted pipeline rejects with CANCELLED', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const controller = new AbortController()
  const err = await t.throwsAsync(
    trainPipeline({
      ...quick(tempDir('ep-run-cancel-')),
      signal: controller.signal,
      onProgress: (e) => {
        if (e.type === 'start') controller.abort()
      },
    }),
    { instanceOf: EmotionPipelineError },
  )
  t.is(err!.code, 'CANCELLED')
})

test('a cancelled pipeline resumes: finished models are kept, the interrupted one goes on', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const out = tempDir('ep-run-resume-')
  // Fusion gets 40 short epochs so the abort (sent when its first epoch ends) lands mid-run even on a busy machine.
  const options = {
    ...quick(out),
    models: ['audio', 'fusion'] as ('audio' | 'fusion')[],
    transcripts: 'ravdess-names' as const,
    train: { audio: SMALL, fusion: { ...SMALL, epochs: 40 } },
  }
  const controller = new AbortController()
  const cancelled = await t.throwsAsync(
    trainPipeline({
      ...options,
      signal: controller.signal,
      onProgress: (e) => {
        if (e.type === 'epochEnd' && e.model === 'fusion') controller.abort()
      },
    }),
  )
  t.is((cancelled as EmotionPipelineError).code, 'CANCELLED')
  const audioWeights = readFileSync(join(out, 'models', 'audio', 'best.safetensors'))

  const wrongSplit = await t.throwsAsync(trainPipeline({ ...options, seed: 7, resume: true }))
  t.is((wrongSplit as EmotionPipelineError).code, 'INVALID_OPTION')
  t.regex(wrongSplit!.message, /`resume`.*split\.json/)

  const events: PipelineEvent[] = []
  const resumed = await trainPipeline({ ...options, resume: true, onProgress: (e) => events.push(e) })
  t.false(
    events.some((e) => e.type === 'epochEnd' && e.model === 'audio'),
    'the finished audio model is not retrained',
  )
  t.deepEqual(readFileSync(join(out, 'models', 'audio', 'best.safetensors')), audioWeights)
  t.deepEqual(
    resumed.models.audio!.history.map((h) => h.epoch),
    [1, 2],
  )
  const start = events.find((e) => e.type === 'start' && e.model === 'fusion')
  const from = start?.type === 'start' ? start.resumedFromEpoch : null
  t.true(from !== null && from >= 1 && from < 40, `fusion resumed from epoch ${from}`)
  t.false(
    events.some((e) => e.type === 'epochEnd' && e.model === 'fusion' && e.record.epoch <= from!),
    'finished fusion epochs are not rerun',
  )
  t.deepEqual(
    resumed.models.fusion!.history.map((h) => h.epoch),
    Array.from({ length: 40 }, (_, k) => k + 1),
  )
  const metrics = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8'))
  t.is(
    metrics.models.audio.trainSeconds,
    resumed.models.audio!.history.reduce((s, h) => s + h.seconds, 0),
  )
})

test('transcripts from a file keyed by file name give the same vocabulary as the RAVDESS statements', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const base = { data: ravdessDir, maxItems: 48, epochs: 1, device: 'cpu' as const, models: ['text'] as 'text'[] }
  const byNames = await trainPipeline({ ...base, out: tempDir('ep-run-names-'), transcripts: 'ravdess-names' })
  const texts = JSON.parse(readFileSync(join(byNames.runDir, 'transcripts.json'), 'utf8')) as Record<string, string>
  const byStem = Object.fromEntries(
    Object.entries(texts).map(([path, text]) => [
      path
        .split('/')
        .pop()!
        .replace(/\.flac$/, ''),
      text,
    ]),
  )
  const file = join(tempDir('ep-transcripts-file-'), 'transcripts.json')
  writeFileSync(file, JSON.stringify(byStem))
  const out = tempDir('ep-run-file-')
  const cli = resolve(import.meta.dirname, '..', 'dist', 'cli.js')
  execFileSync(
    process.execPath,
    [
      cli,
      'train',
      '--data',
      ravdessDir,
      '--out',
      out,
      '--max-items',
      '48',
      '--epochs',
      '1',
      '--device',
      'cpu',
      '--models',
      'text',
      '--transcripts',
      file,
      '--quiet',
    ],
    { stdio: 'pipe' },
  )
  t.deepEqual(
    JSON.parse(readFileSync(join(out, 'vocabulary.json'), 'utf8')),
    JSON.parse(readFileSync(join(byNames.runDir, 'vocabulary.json'), 'utf8')),
  )
  delete byStem[Object.keys(byStem)[0]]
  writeFileSync(file, JSON.stringify(byStem))
  const err = t.throws(() =>
    execFileSync(
      process.execPath,
      [cli, 'train', '--data', ravdessDir, '--out', out, '--overwrite', '--max-items', '48', '--models', 'text', '--transcripts', file],
      { encoding: 'utf8', stdio: 'pipe' },
    ),
  )
  t.regex(String((err as { stderr?: string }).stderr), /INVALID_OPTION.*`transcripts`: no transcript for /)
})

test('invalid pipeline options are INVALID_OPTION naming the field', async (t) => {
  const cases: [object, RegExp][] = [
    [{ data: '' }, /`data`/],
    [{ models: ['video'] }, /`models`.*video/],
    [{ epochs: 0 }, /`epochs`/],
    [{ split: 'random' }, /`split`/],
    [{ lr: -1 }, /`lr`/],
    [{ resume: 'yes' }, /`resume`/],
    [{ transcripts: 'gpt' }, /`transcripts`/],
    // Mistyped keys at every level, and values the core refuses, named as the user wrote them.
    [{ epoch: 1 }, /`epoch`: unknown option/],
    [{ lr: Number.POSITIVE_INFINITY }, /`lr`: must be a finite number/],
    [{ amp: 'fp8' }, /`amp`: unknown variant `fp8`/],
    [{ train: { audoi: {} } }, /`train\.audoi`: unknown model/],
    [{ train: { audio: { epoch: 3 } } }, /`train\.audio\.epoch`: unknown field/],
    [{ train: { audio: { labelSmoothing: 2 } } }, /`train\.audio\.labelSmoothing`/],
    [{ train: { fusion: { optim: { lr: -1 } } } }, /`train\.fusion\.optim\.lr`/],
    [{ encoderInput: 'full' }, /`encoderInput`/],
    [{ encoderPooling: 'max' }, /`encoderPooling`/],
    [{ encoderPrecision: 'fp8' }, /`encoderPrecision`/],
    [{ speedPerturb: [3] }, /`speedPerturb`/],
    [{ train: { encoder: { encoderHead: { dropout: 1.5 } } } }, /`train\.encoder\.encoderHead\.dropout`/],
  ]
  for (const [options, pattern] of cases) {
    const err = await t.throwsAsync(trainPipeline({ data: ravdessDir, out: tempDir(), ...options } as never))
    t.is((err as EmotionPipelineError).code, 'INVALID_OPTION', JSON.stringify(options))
    t.regex(err!.message, pattern)
  }
  const missing = await t.throwsAsync(trainPipeline({ data: '/no/such/folder', out: tempDir() }))
  t.is((missing as EmotionPipelineError).code, 'DATASET')
  const noEncoder = await t.throwsAsync(
    trainPipeline({ data: ravdessDir, out: tempDir(), models: ['encoder'], encoder: '/no/such/encoder' }),
  )
  t.is((noEncoder as EmotionPipelineError).code, 'MODEL_NOT_FOUND')
  t.regex(noEncoder!.message, /\/no\/such\/encoder/)
})

test('CLI train --help and unknown commands', (t) => {
  const cli = resolve(import.meta.dirname, '..', 'dist', 'cli.js')
  t.regex(execFileSync(process.execPath, [cli, 'train', '--help'], { encoding: 'utf8' }), /--split KIND/)
  t.regex(execFileSync(process.execPath, [cli, '--help'], { encoding: 'utf8' }), /predict/)
  const err = t.throws(() => execFileSync(process.execPath, [cli, 'fly'], { encoding: 'utf8', stdio: 'pipe' }))
  t.regex(String((err as { stderr?: string }).stderr), /unknown command 'fly'/)
  const near = spawnSync(process.execPath, [cli, 'trian'], { encoding: 'utf8' })
  t.is(near.status, 2)
  t.regex(near.stderr, /unknown command 'trian' \(did you mean train\?\)/)
  const flag = spawnSync(process.execPath, [cli, 'train', '--epoch', '2'], { encoding: 'utf8' })
  t.is(flag.status, 2)
  t.regex(flag.stderr, /error \[INVALID_OPTION\]: unknown option --epoch \(did you mean --epochs\?\); --help lists the options/)
  const dataset = spawnSync(process.execPath, [cli, 'download', 'ravdes'], { encoding: 'utf8' })
  t.is(dataset.status, 2)
  t.regex(dataset.stderr, /unknown dataset 'ravdes' \(did you mean ravdess\?\)/)
  const badJson = t.throws(() =>
    execFileSync(process.execPath, [cli, 'train', '--data', ravdessDir, '--out', tempDir(), '--mel', '{align'], {
      encoding: 'utf8',
      stdio: 'pipe',
    }),
  )
  t.regex(String((badJson as { stderr?: string }).stderr), /error \[INVALID_OPTION\]: invalid option `--mel`: not JSON/)
})

test('two runs into one out: the second is refused while the first holds the run-directory lock', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const out = tempDir()
  const options = { data: ravdessDir, out, models: ['audio'] as ModelName[], epochs: 1, maxItems: 24, device: 'cpu' as const }
  const [a, b] = await Promise.allSettled([trainPipeline(options), trainPipeline(options)])
  const outcomes = [a, b].map((r) => r.status)
  t.deepEqual(outcomes.sort(), ['fulfilled', 'rejected'])
  const refused = [a, b].find((r) => r.status === 'rejected') as PromiseRejectedResult
  t.is(refused.reason.code, 'IO')
  t.regex(refused.reason.message, new RegExp(`\`out\`: .* is in use by another run \\(pid ${process.pid}`))
  t.false(existsSync(join(out, '.lock')), 'the lock is released when the run ends')
})

test('a stale lock (dead pid on this host) is taken over; an out that cannot be created is IO naming out, without hanging', async (t) => {
  const out = tempDir()
  writeFileSync(join(out, '.lock'), JSON.stringify({ host: hostname(), pid: 2 ** 22 + 7, startedAt: '2026-01-01T00:00:00Z' }))
  // Past the lock, the run fails on the data: proof the stale lock did not block it, and it is released.
  const err = await t.throwsAsync(trainPipeline({ data: '/no/such/folder', out }))
  t.is((err as EmotionPipelineError).code, 'DATASET')
  t.false(existsSync(join(out, '.lock')))
  const file = join(tempDir(), 'a-file')
  writeFileSync(file, 'x')
  const script = `
    const m = await import(${JSON.stringify(resolve(import.meta.dirname, '..', 'dist', 'index.js'))})
    for (const out of [${JSON.stringify(join(file, 'run'))}, '/proc/emotion-pipeline-run']) {
      try { await m.trainPipeline({ data: '.', out }) } catch (e) { console.log(e.code + ' ' + e.message) }
    }`
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 })
  t.is(r.status, 0, r.stderr)
  const [underFile, underProc] = r.stdout.trim().split('\n')
  t.regex(underFile, /^IO option `out`: .*a-file is a file, not a folder/)
  t.regex(underProc, /^IO option `out`: cannot use \/proc\/emotion-pipeline-run/)
})

test('a clip that cannot be decoded is skipped with an event and counted in metrics.json; strict: true stops on it', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const data = tempDir('ep-bad-clip-')
  const actor = join(ravdessDir, 'Actor_01')
  const clips = readdirSync(actor).sort().slice(0, 24)
  mkdirSync(join(data, 'Actor_01'))
  for (const f of clips.slice(1)) copyFileSync(join(actor, f), join(data, 'Actor_01', f))
  // Its header is intact (indexing accepts it), its audio is cut short: only decoding finds out.
  const bad = join(data, 'Actor_01', clips[0])
  const whole = readFileSync(join(actor, clips[0]))
  writeFileSync(bad, whole.subarray(0, whole.length >> 1))
  // Files indexing itself leaves out: an empty one and one of random bytes.
  const empty = join(data, 'Actor_01', 'empty.flac')
  const noise = join(data, 'Actor_01', 'noise.wav')
  writeFileSync(empty, '')
  writeFileSync(noise, randomBytes(4096))
  const events: PipelineEvent[] = []
  const out = tempDir()
  const run = await trainPipeline({ data, out, models: ['audio'], epochs: 1, device: 'cpu', onProgress: (e) => events.push(e) })
  const skipped = (list: { path: string; code: string }[]) => list.map((s) => [s.path, s.code]).sort()
  const expected = [
    [bad, 'AUDIO_DECODE'],
    [empty, 'DATASET'],
    [noise, 'DATASET'],
  ]
  t.deepEqual(skipped(events.filter((e) => e.type === 'skipped') as { path: string; code: string }[]), expected)
  const metrics = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8'))
  t.deepEqual(skipped(metrics.skipped), expected)
  t.regex(readFileSync(join(out, 'report.md'), 'utf8'), /Skipped 1 clip/)
  // The CLI prints each on the console (not only in report.md).
  const printed = await runAsync(process.execPath, [
    resolve(import.meta.dirname, '..', 'dist', 'cli.js'),
    ...['train', '--data', data, '--out', join(tempDir(), 'run'), '--models', 'audio', '--epochs', '1'],
  ])
  t.is(printed.status, 0, printed.stderr)
  for (const [path] of expected) t.true(printed.stderr.includes(`warning: skipped ${path}`), path)
  t.is(run.split.train + run.split.test + run.split.val, 24, 'the split still lists every indexed clip')
  const err = await t.throwsAsync(trainPipeline({ data, out: tempDir(), models: ['audio'], epochs: 1, device: 'cpu', strict: true }))
  t.is((err as EmotionPipelineError).code, 'AUDIO_DECODE')
  t.true(err!.message.includes(bad))
})

test('links planted in out at the names earlier versions wrote through are never followed: a victim file outside is untouched', (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const victim = join(tempDir('ep-victim-'), 'victim.txt')
  writeFileSync(victim, 'precious')
  const out = tempDir('ep-planted-')
  // In a fresh process, which plants links at the old predictable names of its own pid (the write
  // probe's, and the first atomic writes' `.<pid>-<n>.tmp.<file>`) and at report.md, then trains.
  const script = `
    import { symlinkSync } from 'node:fs'
    import { join } from 'node:path'
    const m = await import(${JSON.stringify(resolve(import.meta.dirname, '..', 'dist', 'index.js'))})
    const out = ${JSON.stringify(out)}, victim = ${JSON.stringify(victim)}
    symlinkSync(victim, join(out, '.write-test-' + process.pid))
    for (let k = 0; k < 64; k++)
      for (const name of ['split.json', 'report.md', 'metrics.json', 'config.json', 'history.csv'])
        symlinkSync(victim, join(out, '.' + process.pid + '-' + k + '.tmp.' + name))
    symlinkSync(victim, join(out, 'report.md'))
    await m.trainPipeline({ data: ${JSON.stringify(ravdessDir)}, out, maxItems: 24, epochs: 1, device: 'cpu', models: ['probe'], overwrite: true })`
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 240_000 })
  t.is(r.status, 0, r.stderr.slice(-2000))
  t.is(readFileSync(victim, 'utf8'), 'precious')
  t.true(lstatSync(join(out, 'report.md')).isFile(), 'the planted link was replaced by the real report')
})

test('labels with a bar, a comma or a line break (folder names) keep report.md tables whole', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const data = tempDir('ep-odd-labels-')
  const clips = readdirSync(join(ravdessDir, 'Actor_01')).sort()
  for (const [k, label] of ['very|angry', 'calm, quiet', 'sad\nblue'].entries()) {
    mkdirSync(join(data, label))
    // Names that are not RAVDESS names: the folder is the label.
    for (const [i, f] of clips.slice(k * 6, k * 6 + 6).entries())
      symlinkSync(join(ravdessDir, 'Actor_01', f), join(data, label, `clip-${i}.flac`))
  }
  const out = tempDir('ep-odd-run-')
  await trainPipeline({
    data,
    out,
    epochs: 1,
    device: 'cpu',
    models: ['probe'],
    split: { strategy: 'stratified', testFraction: 0.5, seed: 1 },
  })
  const report = readFileSync(join(out, 'report.md'), 'utf8').split('\n')
  const classRows = report.filter((l) => /^\| (very|calm|sad)/.test(l))
  t.is(classRows.length, 3, report.join('\n'))
  for (const row of classRows) t.is(row.replace(/\\\|/g, '').split('|').length - 1, 6, row)
})

test('a label with too few clips for the split is said in the split line and the report', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const data = tempDir('ep-thin-')
  const clips = readdirSync(join(ravdessDir, 'Actor_02')).sort()
  for (const [label, files] of [
    ['a', clips.slice(0, 6)],
    ['b', clips.slice(6, 12)],
    ['c', clips.slice(12, 13)],
  ] as const) {
    mkdirSync(join(data, label))
    for (const f of files) copyFileSync(join(ravdessDir, 'Actor_02', f), join(data, label, f.replace(/^03/, 'x')))
  }
  const events: PipelineEvent[] = []
  const out = tempDir()
  await trainPipeline({ data, out, models: ['audio'], epochs: 1, device: 'cpu', onProgress: (e) => events.push(e) })
  const line = events.find((e) => e.type === 'stage' && e.stage === 'split') as { message: string }
  t.regex(line.message, /no (training|test) clip for c/)
  t.regex(readFileSync(join(out, 'report.md'), 'utf8'), /no (training|test) clip for c/)
})
