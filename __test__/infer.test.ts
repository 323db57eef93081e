// Using a trained model: predict on every input kind with one error per bad input, long inputs never
// cut, timeline with a voice gate over real held-out clips with noise between them, streams equal to
// the timeline, cancellation, concurrency, loadRun's choice, the CLI. One encoder model trained with a
// speaker split (actors 1–6 train, 7 validation, 19–20 held out) serves every test.
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { cpSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { decodeAudio, EmotionPipelineError, loadRun, train, trainPipeline } from '../src/index.js'
import type { EmotionModel, PredictResult, PredictRowResult, Timeline } from '../src/index.js'
import { concatenate, scoreTimeline } from '../benches/recording.mjs'
import { decodePng, haveRavdess, listAudio, NO_DATA, ravdessDir, skip, tempDir, writeWav } from './helpers.js'

const cli = resolve(import.meta.dirname, '..', 'dist', 'cli.js')
const RATE = 16000
const actor = (n: number) => `actor_${String(n).padStart(2, '0')}`
const runDir = tempDir('ep-infer-run-')

/** Clips of actors 1–7 and 19–20 as a manifest (path,label,speaker); RAVDESS names carry the label. */
function manifest(): string {
  const labels = ['neutral', 'calm', 'happy', 'sad', 'angry', 'fearful', 'disgust', 'surprised']
  const rows = ['path,label,speaker']
  for (const n of [1, 2, 3, 4, 5, 6, 7, 19, 20]) {
    for (const f of listAudio(join(ravdessDir, `Actor_${String(n).padStart(2, '0')}`))) {
      const emotion = Number(f.split('/').pop()!.split('-')[2])
      rows.push(`${f},${labels[emotion - 1]},${actor(n)}`)
    }
  }
  const path = join(tempDir('ep-infer-data-'), 'clips.csv')
  writeFileSync(path, `${rows.join('\n')}\n`)
  return path
}

let trained: Promise<EmotionModel> | undefined
function model(): Promise<EmotionModel> {
  trained ??= trainPipeline({
    data: manifest(),
    out: runDir,
    models: ['encoder'],
    device: 'cpu',
    split: { strategy: 'speaker', testSpeakers: [actor(19), actor(20)], valSpeakers: [actor(7)] },
  }).then(() => loadRun(runDir, { device: 'cpu' }))
  return trained
}

/** Held-out clips (actors 19–20), every k-th, decoded at 16 kHz. */
async function heldOut(count: number): Promise<{ paths: string[]; labels: string[]; clips: Float32Array[] }> {
  const split = JSON.parse(readFileSync(join(runDir, 'split.json'), 'utf8'))
  const items = Array.from({ length: count }, (_, i) => split.test[Math.floor((i * split.test.length) / count)])
  const clips: Float32Array[] = []
  for (const item of items) clips.push((await decodeAudio(item.path, { sampleRate: RATE })).samples)
  return { paths: items.map((i) => i.path), labels: items.map((i) => i.label), clips }
}

const ok = (rows: PredictRowResult[]) => rows.map((r) => (r.error ? undefined : (r as PredictResult)))

test.serial('loadRun picks the best model by validation UAR; a CV root and an unknown model are refused by name', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const m = await model()
  t.like(m.run, { model: 'encoder', by: 'validation UAR' })
  t.true(m.run!.valUar! > 0 && m.run!.valUar! <= 1)
  const cv = tempDir('ep-infer-cv-')
  writeFileSync(join(cv, 'cv.json'), '{}')
  await t.throwsAsync(loadRun(cv), { code: 'INVALID_OPTION', message: /cross-validation.*fold-k\// } as never)
  await t.throwsAsync(loadRun(runDir, { model: 'audio' }), { code: 'INVALID_OPTION', message: /no audio model; it has encoder/ } as never)
  // A run without a validation part: its first model, and the result says so.
  const copy = tempDir('ep-infer-noval-')
  cpSync(runDir, copy, { recursive: true })
  const metrics = JSON.parse(readFileSync(join(copy, 'metrics.json'), 'utf8'))
  metrics.models.encoder.val = null
  writeFileSync(join(copy, 'metrics.json'), JSON.stringify(metrics))
  t.like((await loadRun(copy)).run, { model: 'encoder', by: "the preset's first model (the run has no validation split)", valUar: null })
})

test.serial('every input kind gives the same result for the same audio: path, Buffer, samples', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const m = await model()
  const { paths } = await heldOut(4)
  const buffers = paths.map((p) => readFileSync(p))
  const samples = await Promise.all(paths.map(async (p) => decodeAudio(p)))
  const rows = await m.predict([...paths, ...buffers, ...samples.map((d) => ({ samples: d.samples, sampleRate: d.sampleRate }))], {
    topK: 3,
  })
  const results = ok(rows)
  t.true(results.every((r) => r !== undefined))
  for (let i = 0; i < 4; i++) {
    t.deepEqual(results[i + 4]!.probabilities, results[i]!.probabilities, `Buffer ${i}`)
    t.deepEqual(results[i + 8]!.probabilities, results[i]!.probabilities, `samples ${i}`)
    t.is(results[i]!.path, paths[i])
    t.is(results[i + 4]!.path, undefined)
  }
  const r = results[0]!
  t.is(r.scores.length, 3)
  t.true(r.scores[0].score >= r.scores[1].score && r.scores[1].score >= r.scores[2].score)
  t.is(r.scores[0].label, r.label)
  t.is(r.label, m.labels[r.labelIndex])
  t.is(r.probabilities.length, 8)
  t.is(r.windows, 1)
  t.true(r.speech)
  // Digital silence is still scored (one window), but the voice gate says it is not speech.
  const [silence] = ok(await m.predict([{ samples: new Float32Array(3 * 16000), sampleRate: 16000 }]))
  t.false(silence!.speech)
  // A misspelt option is refused by the call, naming the nearest one and the options it takes.
  await t.throwsAsync(m.predict(paths.slice(0, 1), { topk: 3 } as never), {
    code: 'INVALID_OPTION',
    message: /`topk`: predict has no such option \(did you mean `topK`\?\); it takes (?=.*\bmaxDuration\b)(?=.*\bstrict\b)/,
  } as never)
  await t.throwsAsync(m.timeline(paths[0], { windw: 2 } as never), { code: 'INVALID_OPTION', message: /did you mean `window`/ } as never)
  await t.throwsAsync(m.timeline(paths[0], { topK: 2 } as never), {
    code: 'INVALID_OPTION',
    message: /timeline has no such option;/,
  } as never)
})

test.serial('a batch with bad inputs returns the good predictions and one named error per bad input; strict throws', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const m = await model()
  const { paths } = await heldOut(2)
  const notAudio = join(tempDir('ep-infer-bad-'), 'notes.wav')
  writeFileSync(notAudio, 'this is not audio')
  const nan = new Float32Array(16000).fill(Number.NaN)
  const rows = await m.predict([
    paths[0],
    '/nonexistent/clip.wav',
    Buffer.from('junk bytes'),
    { samples: nan, sampleRate: 16000 },
    notAudio,
    paths[1],
  ])
  t.deepEqual(
    rows.map((r) => (r.error ? r.error.code : 'ok')),
    ['ok', 'AUDIO_DECODE', 'AUDIO_DECODE', 'AUDIO_DECODE', 'AUDIO_DECODE', 'ok'],
  )
  t.regex(rows[1].error!.message, /\/nonexistent\/clip\.wav.*not found/)
  t.regex(rows[2].error!.message, /<buffer #2>/)
  t.regex(rows[3].error!.message, /<samples #3>.*non-finite/)
  t.regex(rows[4].error!.message, /notes\.wav/)
  t.deepEqual(rows[0].input, 0)
  t.deepEqual(rows[5].input, 5)
  await t.throwsAsync(m.predict([paths[0], '/nonexistent/clip.wav'], { strict: true }), {
    instanceOf: EmotionPipelineError,
    message: /nonexistent/,
  })
  await t.throwsAsync(m.predict([42 as never]), { message: /inputs\[0\]/ })
})

test.serial('a 60 s input is scored over its windows, not as its first 30 s; longInput refuse names it', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const m = await model()
  const { clips } = await heldOut(24)
  const { samples } = concatenate(clips, { rate: RATE, gapSeconds: 0.5, snrDb: 30, noise: 'room' })
  const long = samples.subarray(0, 60 * RATE)
  const first = samples.subarray(0, 30 * RATE)
  const [whole, head] = ok(
    await m.predict([
      { samples: long, sampleRate: RATE },
      { samples: first, sampleRate: RATE },
    ]),
  )
  t.true(whole!.windows > 10, `${whole!.windows} windows`)
  t.is(head!.windows, 1)
  t.is(Math.round(whole!.seconds), 60)
  t.notDeepEqual(whole!.probabilities, head!.probabilities)
  // The documented aggregate: the mean of the timeline's speech windows.
  const timeline = await m.timeline({ samples: long, sampleRate: RATE })
  const speech = timeline.segments.filter((s) => s.speech)
  const mean = m.labels.map((_, i) => speech.reduce((a, s) => a + s.probabilities![i], 0) / speech.length)
  t.is(whole!.windows, speech.length)
  mean.forEach((p, i) => {
    t.true(Math.abs(p - whole!.probabilities[i]) < 1e-4, `label ${i}: ${p} vs ${whole!.probabilities[i]}`)
  })
  const [refused] = await m.predict([{ samples: long, sampleRate: RATE }], { longInput: 'refuse' })
  t.is(refused.error?.code, 'INVALID_OPTION')
  t.regex(refused.error!.message, /longInput.*<samples #0>.*longer than the model's window of 30 s/)
})

test.serial('timeline over held-out clips with noise between them labels the clips and little of the gaps', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const m = await model()
  const { clips, labels } = await heldOut(24)
  const alone = ok(await m.predict(clips.map((samples) => ({ samples, sampleRate: RATE })))).map((r) => r!.label)
  const recording = concatenate(clips, { rate: RATE, gapSeconds: 2.5, snrDb: 20, noise: 'white', seed: 3 })
  const timeline = await m.timeline({ samples: recording.samples, sampleRate: RATE })
  const scored = scoreTimeline(timeline, recording.spans, recording.gaps)
  const share = (xs: boolean[]) => xs.filter(Boolean).length / xs.length
  const predictAccuracy = share(alone.map((l, i) => l === labels[i]))
  const timelineAccuracy = share(scored.clipLabels.map((l: string | null, i: number) => l === labels[i]))
  const gapShare = scored.gapLabelledSeconds / scored.gapSeconds
  t.log(
    `24 held-out clips, 2.5 s gaps of white noise at 20 dB SNR: predict ${(predictAccuracy * 100).toFixed(1)} %, timeline ${(timelineAccuracy * 100).toFixed(1)} %; ` +
      `gaps labelled ${scored.gapLabelledSeconds.toFixed(1)} of ${scored.gapSeconds.toFixed(1)} s (${(gapShare * 100).toFixed(1)} %)`,
  )
  t.true(timelineAccuracy >= predictAccuracy - 0.1)
  t.true(gapShare < 0.35, `${(gapShare * 100).toFixed(1)} % of the gaps labelled`)
  t.is(timeline.window, 4)
  t.is(timeline.hop, 2)
})

test.serial('a stream fed random chunk sizes gives the timeline’s segments and labels, scores within 1e-4', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const m = await model()
  const { clips } = await heldOut(8)
  const { samples } = concatenate(clips, { rate: RATE, gapSeconds: 2, snrDb: 20, noise: 'room' })
  const timeline: Timeline = await m.timeline({ samples, sampleRate: RATE })
  const stream = await m.stream({ sampleRate: RATE })
  let seed = 9
  const chunks: Float32Array[] = []
  for (let at = 0; at < samples.length; ) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31
    const n = 1 + (seed % 20000)
    chunks.push(samples.slice(at, at + n))
    at += n
  }
  const segments = []
  for await (const s of stream.segments(chunks)) segments.push(s)
  // The same chunks pushed without waiting: the stream keeps their order.
  const unawaited = await m.stream({ sampleRate: RATE })
  const pushed = await Promise.all([...chunks.map((c) => unawaited.push(c)), unawaited.end()])
  t.deepEqual(
    pushed.flat().map((s) => [s.start, s.end, s.label]),
    segments.map((s) => [s.start, s.end, s.label]),
  )
  t.is(segments.length, timeline.segments.length)
  segments.forEach((s, i) => {
    const e = timeline.segments[i]
    t.deepEqual([s.start, s.end, s.speech], [e.start, e.end, e.speech])
    s.probabilities?.forEach((p, k) => {
      t.true(Math.abs(p - e.probabilities![k]) < 1e-4)
    })
    // Labels agree wherever the top two scores are further apart than the tolerance.
    const top = [...(e.probabilities ?? [])].sort((a, b) => b - a)
    if (top.length < 2 || top[0] - top[1] > 2e-4) t.is(s.label, e.label)
  })
  await t.throwsAsync(stream.push(new Float32Array(10)), { message: /ended/ })
  const other = await m.stream({ sampleRate: RATE })
  await t.throwsAsync(other.push(new Float32Array([0, Number.NaN])), {
    code: 'INVALID_OPTION',
    message: /samples.*non-finite.*at 1/,
  } as never)
  await t.throwsAsync(m.stream({ sampleRate: 10 }), { code: 'INVALID_OPTION', message: /sampleRate/ } as never)
})

test.serial('cancelling a long timeline stops it', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const m = await model()
  const { clips } = await heldOut(8)
  const { samples } = concatenate(clips, { rate: RATE, gapSeconds: 1, snrDb: 20, noise: 'room' })
  const long = new Float32Array(480 * RATE)
  for (let at = 0; at < long.length; at += samples.length) long.set(samples.subarray(0, Math.min(samples.length, long.length - at)), at)
  const controller = new AbortController()
  let progressed = 0
  const started = Date.now()
  await t.throwsAsync(
    m.timeline(
      { samples: long, sampleRate: RATE },
      {
        signal: controller.signal,
        onProgress: (s) => {
          progressed = s
          controller.abort()
        },
      },
    ),
    { code: 'CANCELLED' } as never,
  )
  t.true(progressed > 0 && progressed < 480, `stopped after ${progressed} s of 480`)
  t.log(`cancelled after ${progressed.toFixed(0)} s of 480 s, ${Date.now() - started} ms`)
})

test.serial('20 concurrent predict calls give the serial results, bit for bit (calls take turns)', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const m = await model()
  const { paths } = await heldOut(20)
  const serial = []
  for (const p of paths) serial.push((await m.predict([p]))[0])
  const concurrent = await Promise.all(paths.map(async (p) => (await m.predict([p]))[0]))
  t.deepEqual(concurrent, serial)
})

/** A training job of a few seconds on synthetic features (its losses are what must not change). */
function trainJob() {
  const n = 64
  const data = new Float32Array(n * 32 * 64)
  let seed = 5
  for (let i = 0; i < data.length; i++) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31
    data[i] = seed / 2 ** 31 + (Math.floor(i / (32 * 64)) % 2) * 0.3
  }
  const labels = Array.from({ length: n }, (_, i) => i % 2)
  return train({
    train: { mel: { data, shape: [n, 32, 64] }, labels },
    labels: ['a', 'b'],
    epochs: 6,
    batchSize: 8,
    accumulation: 1,
    audio: { channels: [8, 16], hidden: [16] },
    device: 'cpu',
  }).then((r) => r.history.map((h) => h.trainLoss))
}

test.serial(
  "predict beside a training job waits its turn (results within 1e-5, the job's losses unchanged) and is cancellable while waiting",
  async (t) => {
    if (!haveRavdess) return skip(t, NO_DATA)
    const m = await model()
    const { paths } = await heldOut(20)
    const alone = await m.predict(paths)
    const reference = await trainJob()
    const job = trainJob()
    // Queued behind the job, then cancelled before its turn.
    let jobDone = false
    void job.then(() => {
      jobDone = true
    })
    const controller = new AbortController()
    const queued = m.predict(paths, { signal: controller.signal })
    setTimeout(() => controller.abort(), 50)
    await t.throwsAsync(queued, { code: 'CANCELLED' } as never)
    t.false(jobDone, 'given up while the job still ran, not after it')
    const beside = await Promise.all(paths.map(async (p) => (await m.predict([p]))[0]))
    t.deepEqual(await job, reference, 'the training job is not disturbed')
    // Bit-identical among themselves (the concurrency test); against calls made before the job, within
    // 1e-5 (measured: 1e-7; the job leaves other memory to reuse).
    beside.forEach((r, i) => {
      const before = (alone[i] as PredictResult).probabilities
      ;(r as PredictResult).probabilities.forEach((p, k) => {
        t.true(Math.abs(p - before[k]) < 1e-5, `${p} vs ${before[k]}`)
      })
      t.is((r as PredictResult).label, (alone[i] as PredictResult).label)
    })
  },
)

test.serial('CLI predict: one line per file, a bad file named with exit 1; --timeline writes CSV, JSON, SVG and PNG', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  await model()
  const { paths, clips } = await heldOut(3)
  const r = spawnSync(
    process.execPath,
    [cli, 'predict', '--run', runDir, '--json', '--top-k', '2', paths[0], '/nonexistent.wav', paths[1]],
    { encoding: 'utf8' },
  )
  t.is(r.status, 1, r.stderr)
  const rows = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
  t.deepEqual(
    rows.map((x) => x.input),
    [0, 1, 2],
  )
  t.is(rows[0].scores.length, 2)
  t.is(rows[1].error.code, 'AUDIO_DECODE')
  t.regex(r.stderr, /model: encoder, best by validation UAR \(\d+\.\d\d %\)/)
  t.regex(r.stderr, /\/nonexistent\.wav\tAUDIO_DECODE/)
  // A 20 s recording written as a WAV, then its timeline files.
  const { samples } = concatenate(clips, { rate: RATE, gapSeconds: 3, snrDb: 20, noise: 'white' })
  const dir = tempDir('ep-infer-tl-')
  const wav = join(dir, 'talk.wav')
  writeWav(wav, [samples], RATE, 'i16')
  const out = join(dir, 'out')
  mkdirSync(out)
  const tl = spawnSync(process.execPath, [cli, 'predict', '--run', runDir, '--timeline', '--out', out, wav], { encoding: 'utf8' })
  t.is(tl.status, 0, tl.stderr)
  const csv = readFileSync(join(out, 'talk.wav.timeline.csv'), 'utf8').trim().split('\n')
  t.is(csv[0], `start,end,speech,voiced,label,${(await model()).labels.join(',')}`)
  t.true(csv.length > 5)
  t.true(
    csv.slice(1).some((l) => l.split(',')[2] === 'false'),
    'some windows are gaps',
  )
  const json = JSON.parse(readFileSync(join(out, 'talk.wav.timeline.json'), 'utf8'))
  t.is(json.segments.length, csv.length - 1)
  t.regex(readFileSync(join(out, 'talk.wav.timeline.svg'), 'utf8'), /^<svg [^>]*xmlns/)
  const { width } = decodePng(join(out, 'talk.wav.timeline.png'))
  t.true(width > 800)
})
