// ONNX export: a trained log-mel CNN written as one graph with its front end, run in onnxruntime-node
// on the 16 original RAVDESS WAVs against the library's own features and predictions; the same for a
// front end with other settings; a fresh process without libtorch; the onnx checker; the CLI; refusals.
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join, resolve } from 'node:path'
import * as ort from 'onnxruntime-node'
import { decodeAudio, extractEmbeddings, extractMel, installedEncoderDir, loadModel, train } from '../src/index.js'
import type { EmotionModel, EncoderName, ExportResult, MelOptions } from '../src/index.js'
import { haveWavs, listAudio, NO_WAVS, referencePython, skip, tempDir, wavDir } from './helpers.js'

const cli = resolve(import.meta.dirname, '..', 'dist', 'cli.js')
const LABELS = ['neutral', 'calm', 'happy', 'sad', 'angry', 'fearful', 'disgust', 'surprised']
/** Six conv blocks as the reference CNN (so pooling runs as deep), narrower so it trains in seconds. */
const SMALL_CNN = { channels: [8, 8, 16, 16, 16, 16], hidden: [16, 8] }

/** A CNN trained for two epochs on the 16 WAVs with front end `mel`, saved in a temp folder. */
async function trainedCnn(mel: MelOptions): Promise<{ model: EmotionModel; files: string[] }> {
  const files = listAudio(wavDir)
  const features = await extractMel(files, { mel })
  const labels = files.map((f) => Number(f.split('/').pop()!.split('-')[2]) - 1)
  const dir = tempDir('ep-export-model-')
  await train({
    model: 'audio',
    mel,
    labels: LABELS,
    train: { mel: features, labels },
    epochs: 2,
    batchSize: 8,
    accumulation: 1,
    audio: SMALL_CNN,
    device: 'cpu',
    checkpointDir: dir,
  })
  return { model: await loadModel(dir, { device: 'cpu' }), files }
}

interface Parity {
  /** Largest |ONNX − core| log-mel difference over every bin, and over bins within 60 dB of the clip's peak. */
  maxDb: number
  maxDbAbovePeakMinus60: number
  maxProbability: number
  sameLabels: number
}

/** Runs the exported graph on each file and compares with the core's features and predictions. */
async function parity(model: EmotionModel, exported: ExportResult, files: string[], mel: MelOptions): Promise<Parity> {
  const session = await ort.InferenceSession.create(exported.path)
  const native = await extractMel(files, { mel })
  const predictions = await model.predictFeatures({ mel: native })
  const [, bands, frames] = native.shape
  const per = bands * frames
  const [mean, std] = exported.normalisation
  const out: Parity = { maxDb: 0, maxDbAbovePeakMinus60: 0, maxProbability: 0, sameLabels: 0 }
  for (let i = 0; i < files.length; i++) {
    const { samples } = await decodeAudio(files[i], { sampleRate: exported.sampleRate })
    const result = await session.run({ samples: new ort.Tensor('float32', samples, [1, samples.length]) })
    const features = result.features.data as Float32Array
    const reference = native.data.subarray(i * per, (i + 1) * per)
    const peak = reference.reduce((a, b) => Math.max(a, b), -Infinity)
    for (let j = 0; j < per; j++) {
      const d = Math.abs(features[j] * std + mean - reference[j])
      out.maxDb = Math.max(out.maxDb, d)
      if (reference[j] >= peak - 60) out.maxDbAbovePeakMinus60 = Math.max(out.maxDbAbovePeakMinus60, d)
    }
    const scores = result.scores.data as Float32Array
    predictions[i].probabilities.forEach((p, k) => {
      out.maxProbability = Math.max(out.maxProbability, Math.abs(p - scores[k]))
    })
    if (scores.indexOf(Math.max(...scores)) === predictions[i].index) out.sameLabels++
  }
  return out
}

test.serial('the exported CNN equals the library on the 16 original WAVs: log-mel, probabilities and labels', async (t) => {
  if (!haveWavs) return skip(t, NO_WAVS)
  const mel = {}
  const { model, files } = await trainedCnn(mel)
  const out = join(tempDir('ep-export-'), 'nested', 'cnn.onnx')
  const exported = await model.export({ out, featuresOutput: true })
  t.is(exported.path, out)
  t.true(existsSync(out) && existsSync(`${out}.json`))
  const bytes = readFileSync(out)
  t.is(exported.sha256, createHash('sha256').update(bytes).digest('hex'))
  t.is(exported.bytes, bytes.length)
  t.deepEqual(
    JSON.parse(readFileSync(`${out}.json`, 'utf8')),
    JSON.parse(JSON.stringify({ ...exported, path: undefined, sidecarPath: undefined })),
  )
  t.like(exported, { format: 'onnx', opset: 17, modelKind: 'audio', sampleRate: 48000, clipSamples: 144000, minSamples: 1, labels: LABELS })
  t.deepEqual(exported.inputs, [{ name: 'samples', dtype: 'float32', shape: ['batch', 'samples'] }])
  t.deepEqual(exported.outputs[0], { name: 'scores', dtype: 'float32', shape: ['batch', 8] })
  t.is(
    exported.weightsSha256,
    createHash('sha256')
      .update(readFileSync(join(model.dir, 'best.safetensors')))
      .digest('hex'),
  )

  const p = await parity(model, exported, files, mel)
  t.log(
    `default front end, 16 clips: log-mel within ${p.maxDb.toExponential(2)} dB (${p.maxDbAbovePeakMinus60.toExponential(2)} dB within 60 dB of each clip's peak), probabilities within ${p.maxProbability.toExponential(2)}, ${p.sameLabels}/16 labels equal`,
  )
  t.true(p.maxDbAbovePeakMinus60 < 1e-3, `${p.maxDbAbovePeakMinus60}`)
  // Bins at the top_db floor (80 dB under the peak) carry float32 FFT rounding of both libraries.
  t.true(p.maxDb < 1e-2, `${p.maxDb}`)
  t.true(p.maxProbability < 1e-4, `${p.maxProbability}`)
  t.is(p.sameLabels, 16)

  // A batch of clips of different lengths, zero-padded by the caller: the graph cuts each to 3 s as the core does.
  const session = await ort.InferenceSession.create(out)
  const a = (await decodeAudio(files[0], { sampleRate: 48000 })).samples
  const b = (await decodeAudio(files[1], { sampleRate: 48000 })).samples
  const n = Math.max(a.length, b.length, 144000)
  const batch = new Float32Array(2 * n)
  batch.set(a, 0)
  batch.set(b, n)
  const both = await session.run({ samples: new ort.Tensor('float32', batch, [2, n]) })
  const one = await session.run({ samples: new ort.Tensor('float32', b, [1, b.length]) })
  const second = (both.scores.data as Float32Array).slice(8)
  const alone = one.scores.data as Float32Array
  t.true(
    second.every((v, k) => Math.abs(v - alone[k]) < 1e-6),
    `${second} vs ${alone}`,
  )
})

test.serial(
  'another front end (centre alignment, Slaney mels, window shorter than the FFT, amplitude, no top_db, 16 kHz) exports alike',
  async (t) => {
    if (!haveWavs) return skip(t, NO_WAVS)
    const mel: MelOptions = {
      sampleRate: 16000,
      nFft: 512,
      winLength: 400,
      hopLength: 160,
      nMels: 64,
      fMin: 50,
      fMax: 7600,
      power: 1,
      norm: 'slaney',
      melScale: 'slaney',
      topDb: null,
      durationSeconds: 2.5,
      align: 'center',
      frames: null,
      padMode: 'constant',
    }
    const { model, files } = await trainedCnn(mel)
    const exported = await model.export({ out: join(tempDir('ep-export-'), 'cnn.onnx'), featuresOutput: true })
    t.is(exported.sampleRate, 16000)
    t.is(exported.clipSamples, 40000)
    const p = await parity(model, exported, files, mel)
    t.log(
      `other front end: log-mel within ${p.maxDb.toExponential(2)} dB (${p.maxDbAbovePeakMinus60.toExponential(2)} within 60 dB of the peak), probabilities within ${p.maxProbability.toExponential(2)}`,
    )
    t.true(p.maxDbAbovePeakMinus60 < 1e-3)
    t.true(p.maxProbability < 1e-4)
    t.is(p.sameLabels, 16)
  },
)

/** An encoder model or probe trained for a few epochs on the 16 WAVs' states from an installed encoder. */
async function trainedOnStates(
  kind: 'encoder' | 'probe',
  name: EncoderName,
  pooling: 'mean' | 'meanStd',
  source: { input?: 'clip' | 'padded'; speakerNorm?: boolean } = {},
) {
  const files = listAudio(wavDir)
  const embedding = await extractEmbeddings(files, { encoder: name, pooling, precision: 'fp32', device: 'cpu' })
  const labels = files.map((f) => Number(f.split('/').pop()!.split('-')[2]) - 1)
  const dir = tempDir(`ep-export-${kind}-`)
  await train({
    model: kind,
    labels: LABELS,
    train: { embedding, labels },
    epochs: 5,
    batchSize: 8,
    accumulation: 1,
    device: 'cpu',
    checkpointDir: dir,
    ...(pooling === 'meanStd' ? { encoderHead: { groups: 2 } } : {}),
    encoderSource: {
      source: 'installed',
      name,
      sha256: embedding.modelSha256,
      input: source.input ?? 'clip',
      pooling,
      precision: 'fp32',
      speakerNorm: source.speakerNorm ?? false,
    },
  })
  return { model: await loadModel(dir, { device: 'cpu' }), files, embedding }
}

for (const [kind, name, pooling] of [
  ['encoder', 'whisper-base', 'mean'],
  ['probe', 'whisper-tiny.en', 'meanStd'],
] as const) {
  test.serial(
    `the exported ${kind} model (${name}, ${pooling} pooling) equals the library on the 16 WAVs: states, probabilities, labels`,
    async (t) => {
      if (!haveWavs) return skip(t, NO_WAVS)
      if (!installedEncoderDir(name)) return skip(t, `${name} is not installed (npm run setup installs it): skipped`)
      const { model, files, embedding } = await trainedOnStates(kind, name, pooling)
      const exported = await model.export({ out: join(tempDir('ep-export-'), `${kind}.onnx`), featuresOutput: true })
      t.like(exported, { modelKind: kind, sampleRate: 16000, clipSamples: null, maxSamples: 480000, minSamples: 400, normalisation: null })
      t.like(exported.encoder, { name, sha256: embedding.modelSha256, pooling })
      t.deepEqual(
        exported.licences.map((l) => l.licence),
        ['MIT'],
      )
      t.true(exported.frontEnd.whisperLog)
      const session = await ort.InferenceSession.create(exported.path)
      const predictions = await model.predictFeatures({ embedding })
      const [, rows, width] = embedding.shape
      let maxState = 0
      let maxProbability = 0
      let same = 0
      for (let i = 0; i < files.length; i++) {
        const { samples } = await decodeAudio(files[i], { sampleRate: 16000 })
        const out = await session.run({ samples: new ort.Tensor('float32', samples, [1, samples.length]) })
        const states = out.features.data as Float32Array
        for (let j = 0; j < rows * width; j++) maxState = Math.max(maxState, Math.abs(states[j] - embedding.data[i * rows * width + j]))
        const scores = out.scores.data as Float32Array
        predictions[i].probabilities.forEach((p, k) => {
          maxProbability = Math.max(maxProbability, Math.abs(p - scores[k]))
        })
        if (scores.indexOf(Math.max(...scores)) === predictions[i].index) same++
      }
      t.log(
        `${kind} on ${name}: pooled states within ${maxState.toExponential(2)}, probabilities within ${maxProbability.toExponential(2)}, ${same}/16 labels equal`,
      )
      t.true(maxState < 1e-3, `${maxState}`)
      t.true(maxProbability < 1e-4, `${maxProbability}`)
      t.is(same, 16)
    },
  )
}

test.serial(
  'a head trained on bf16 encoder states, exported in fp32: the deviation from the library is measured and printed',
  async (t) => {
    if (!haveWavs) return skip(t, NO_WAVS)
    if (!installedEncoderDir('whisper-tiny.en')) return skip(t, 'whisper-tiny.en is not installed: skipped')
    const files = listAudio(wavDir)
    // bf16 states (emulated where the CPU has no native bf16: slower, the same numbers).
    const embedding = await extractEmbeddings(files, { encoder: 'whisper-tiny.en', precision: 'bf16', device: 'cpu' })
    const dir = tempDir('ep-export-bf16-')
    await train({
      model: 'encoder',
      labels: LABELS,
      train: { embedding, labels: files.map((f) => Number(f.split('/').pop()!.split('-')[2]) - 1) },
      epochs: 20,
      batchSize: 8,
      accumulation: 1,
      device: 'cpu',
      checkpointDir: dir,
      encoderSource: {
        source: 'installed',
        name: 'whisper-tiny.en',
        sha256: embedding.modelSha256,
        input: 'clip',
        pooling: 'mean',
        precision: 'bf16',
        speakerNorm: false,
      },
    })
    const model = await loadModel(dir, { device: 'cpu' })
    const exported = await model.export({ out: join(tempDir('ep-export-'), 'bf16.onnx') })
    t.is(exported.encoder?.precision, 'bf16', 'the sidecar says what the head trained on')
    const session = await ort.InferenceSession.create(exported.path)
    const native = await model.predict(files, { strict: true })
    let largest = 0
    let same = 0
    for (const [i, file] of files.entries()) {
      const { samples } = await decodeAudio(file, { sampleRate: 16000 })
      const scores = (await session.run({ samples: new ort.Tensor('float32', samples, [1, samples.length]) })).scores.data as Float32Array
      const ours = native[i] as { labelIndex: number; probabilities: number[] }
      ours.probabilities.forEach((p, k) => {
        largest = Math.max(largest, Math.abs(p - scores[k]))
      })
      if (scores.indexOf(Math.max(...scores)) === ours.labelIndex) same++
    }
    t.log(
      `head on bf16 whisper-tiny.en states: the fp32 graph's probabilities within ${largest.toExponential(2)} of the library's bf16 predictions, ${same}/16 labels equal`,
    )
    t.true(largest < 0.05 && same >= 15, `${largest}, ${same}/16`)
  },
)

test.serial('an exported model runs in a fresh process with no libtorch on the search path, and passes the onnx checker', async (t) => {
  if (!haveWavs) return skip(t, NO_WAVS)
  const { model, files } = await trainedCnn({})
  const out = join(tempDir('ep-export-'), 'cnn.onnx')
  const exported = await model.export({ out })
  t.deepEqual(
    exported.outputs.map((o) => o.name),
    ['scores'],
  )
  const [expected] = await model.predictFeatures({ mel: await extractMel([files[3]], {}) })
  const script = join(tempDir('ep-export-run-'), 'run.mjs')
  writeFileSync(
    script,
    `import * as ort from ${JSON.stringify(import.meta.resolve('onnxruntime-node'))}
import { readFileSync } from 'node:fs'
const raw = readFileSync(process.argv[2])
const samples = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length))
const s = await ort.InferenceSession.create(process.argv[3])
const r = await s.run({ samples: new ort.Tensor('float32', samples, [1, samples.length]) })
const maps = readFileSync('/proc/self/maps', 'utf8')
console.log(JSON.stringify({ scores: Array.from(r.scores.data), libtorch: /libtorch/.test(maps) }))
`,
  )
  const env = { ...process.env }
  for (const k of ['LD_LIBRARY_PATH', 'LIBTORCH', 'EMOTION_PIPELINE_LIBTORCH']) delete env[k]
  // The clip as raw float32 samples at 48 kHz, decoded here: the child has nothing but onnxruntime.
  const raw = join(tempDir('ep-export-raw-'), 'clip.f32')
  const { samples } = await decodeAudio(files[3], { sampleRate: 48000 })
  writeFileSync(raw, Buffer.from(samples.buffer, samples.byteOffset, samples.byteLength))
  const run = spawnSync(process.execPath, [script, raw, out], { env, encoding: 'utf8' })
  t.is(run.status, 0, run.stderr)
  const got = JSON.parse(run.stdout) as { scores: number[]; libtorch: boolean }
  t.false(got.libtorch, 'libtorch was loaded')
  const top = got.scores.indexOf(Math.max(...got.scores))
  t.is(top, expected.index)
  t.true(
    got.scores.every((v, k) => Math.abs(v - expected.probabilities[k]) < 1e-4),
    `${got.scores} vs ${expected.probabilities}`,
  )

  const python = referencePython()
  if (!python) return t.log('no contributor venv: the onnx checker was not run')
  const check = spawnSync(
    python,
    ['-c', 'import onnx, sys; onnx.checker.check_model(sys.argv[1], full_check=True); print(onnx.__version__)', out],
    {
      encoding: 'utf8',
    },
  )
  if (check.status !== 0 && /No module named 'onnx'/.test(check.stderr))
    return t.log('onnx is not installed in the contributor venv: checker not run')
  t.is(check.status, 0, check.stderr)
  t.log(`onnx ${check.stdout.trim()} checker (full_check): clean`)
})

test.serial('export from the CLI; refusals name the option', async (t) => {
  if (!haveWavs) return skip(t, NO_WAVS)
  const { model } = await trainedCnn({})
  const out = join(tempDir('ep-export-cli-'), 'model.onnx')
  const r = spawnSync(process.execPath, [cli, 'export', '--model-dir', model.dir, '--out', out, '--json'], { encoding: 'utf8' })
  t.is(r.status, 0, r.stderr)
  const sidecar = JSON.parse(r.stdout) as ExportResult
  t.is(sidecar.path, out)
  t.true(existsSync(out))
  // An existing file is replaced only when asked; a folder that is not empty likewise.
  const again = spawnSync(process.execPath, [cli, 'export', '--model-dir', model.dir, '--out', out], { encoding: 'utf8' })
  t.is(again.status, 1)
  t.regex(again.stderr, /INVALID_OPTION.*out.*exists.*--overwrite/)
  const replaced = spawnSync(process.execPath, [cli, 'export', '--model-dir', model.dir, '--out', out, '--overwrite'], { encoding: 'utf8' })
  t.is(replaced.status, 0, replaced.stderr)
  const site = tempDir('ep-export-site-')
  writeFileSync(join(site, 'index.html'), 'mine')
  await t.throwsAsync(model.exportBrowser({ dir: site }), { code: 'INVALID_OPTION', message: /not empty.*overwrite/ } as never)
  t.is(readFileSync(join(site, 'index.html'), 'utf8'), 'mine')
  await t.throwsAsync(model.exportBrowser({ dir: site, overwite: true } as never), {
    code: 'INVALID_OPTION',
    message: /did you mean `overwrite`/,
  } as never)
  // A folder that cannot be made (its parent is a file): IO naming the option and the file in the way
  // (onnxruntime-web, an optional dependency, is looked for first).
  if (resolvable('onnxruntime-web'))
    await t.throwsAsync(model.exportBrowser({ dir: join(out, 'site') }), {
      code: 'IO',
      message: /option `dir`: cannot use .* \(.*model\.onnx is a file, not a folder\)/,
    } as never)
  else t.log('onnxruntime-web is not installed: the IO refusal of exportBrowser was not checked')
  await t.throwsAsync(model.export({ out: '/tmp/x.txt' }), { code: 'INVALID_OPTION', message: /out.*\.onnx/ } as never)
  await t.throwsAsync(model.export({ out: '/tmp/x.onnx', format: 'tflite' as never }), {
    code: 'INVALID_OPTION',
    message: /format/,
  } as never)
  const bad = spawnSync(process.execPath, [cli, 'export', '--model-dir', model.dir, '--out', out, '--format', 'pb'], { encoding: 'utf8' })
  t.is(bad.status, 1, bad.stderr)
  t.regex(bad.stderr, /INVALID_OPTION.*format/)
  // Models on states the graph cannot make are refused by name, and nothing is written.
  if (installedEncoderDir('whisper-tiny.en')) {
    const refusedOut = join(tempDir('ep-export-refused-'), 'm.onnx')
    const padded = (await trainedOnStates('probe', 'whisper-tiny.en', 'mean', { input: 'padded' })).model
    await t.throwsAsync(padded.export({ out: refusedOut }), { code: 'INVALID_OPTION', message: /encoderInput: 'padded'/ } as never)
    const normalised = (await trainedOnStates('probe', 'whisper-tiny.en', 'mean', { speakerNorm: true })).model
    await t.throwsAsync(normalised.export({ out: refusedOut }), { code: 'INVALID_OPTION', message: /speakerNorm/ } as never)
    t.false(existsSync(refusedOut))
  }
  const none = spawnSync(process.execPath, [cli, 'export', '--model-dir', '/nowhere', '--out', out], { encoding: 'utf8' })
  t.not(none.status, 0)
  t.regex(none.stderr, /MODEL_NOT_FOUND.*\/nowhere/)
})

function resolvable(name: string): boolean {
  try {
    createRequire(import.meta.url).resolve(name)
    return true
  } catch {
    return false
  }
}
