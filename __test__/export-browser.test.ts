// The exported browser folder in a real headless Chromium (Debian's, driven by puppeteer-core): the
// page labels 5 real clips as the library does, and the microphone path (Chromium's fake capture
// device playing a RAVDESS clip) records, resamples and labels what it heard as the library labels
// the same samples. The model is the recommended kind: a head on whisper-base states.
import test, { type ExecutionContext } from 'ava'
import { join, resolve } from 'node:path'
import { spawnSync } from 'node:child_process'
import puppeteer, { type Page } from 'puppeteer-core'
import { extractEmbeddings, installedEncoderDir, loadModel, train } from '../src/index.js'
import { findChromium } from '../scripts/browser.mjs'
import { haveWavs, listAudio, NO_WAVS, skip, tempDir, wavDir } from './helpers.js'
import { serveFolder } from './static-server.js'

const cli = resolve(import.meta.dirname, '..', 'dist', 'cli.js')
const LABELS = ['neutral', 'calm', 'happy', 'sad', 'angry', 'fearful', 'disgust', 'surprised']
/** The browser resamples 48 kHz → 16 kHz with its own filter: labels are compared where ours lead by this much. */
const MARGIN = 0.1

interface PageResult {
  source: string
  name: string
  label: string
  scores: number[]
  timeline: { start: number; end: number; label: string }[]
}

/** An encoder head trained on `files` (RAVDESS names carry the label), saved to a new folder. */
async function trainEncoderHead(files: string[], embedding: Awaited<ReturnType<typeof extractEmbeddings>>): Promise<string> {
  const modelDir = tempDir('ep-browser-model-')
  await train({
    model: 'encoder',
    labels: LABELS,
    train: { embedding, labels: files.map((f) => Number(f.split('/').pop()!.split('-')[2]) - 1) },
    epochs: 60,
    encoderHead: { dropout: 0 },
    batchSize: 8,
    accumulation: 1,
    device: 'cpu',
    checkpointDir: modelDir,
    encoderSource: {
      source: 'installed',
      name: 'whisper-base',
      sha256: embedding.modelSha256,
      input: 'clip',
      pooling: 'mean',
      precision: 'fp32',
      speakerNorm: false,
    },
  })
  return modelDir
}

test('the browser folder labels real clips and the microphone in headless Chromium as the library does', async (t) => {
  if (!haveWavs) return skip(t, NO_WAVS)
  const chromium = findChromium()
  if (!chromium) return skip(t, 'no chromium (setup installs it where apt-get can; or set CHROMIUM_PATH): skipped')
  if (!installedEncoderDir('whisper-base')) return skip(t, 'whisper-base is not installed (npm run setup installs it): skipped')
  const files = listAudio(wavDir)
  const embedding = await extractEmbeddings(files, { encoder: 'whisper-base', precision: 'fp32', device: 'cpu' })
  const modelDir = await trainEncoderHead(files, embedding)
  const model = await loadModel(modelDir, { device: 'cpu' })
  const dir = join(tempDir('ep-browser-'), 'site')
  // From the CLI, as the README shows it.
  const made = spawnSync(process.execPath, [cli, 'export', '--model-dir', modelDir, '--browser', dir, '--json'], { encoding: 'utf8' })
  t.is(made.status, 0, made.stderr)
  const page = JSON.parse(made.stdout) as { files: string[]; bytes: number }
  t.deepEqual(page.files.sort(), [
    'app.js',
    'index.html',
    'model.onnx',
    'model.onnx.json',
    'ort/ort-wasm-simd-threaded.mjs',
    'ort/ort-wasm-simd-threaded.wasm',
    'ort/ort.wasm.min.mjs',
    'recorder-worklet.js',
  ])
  t.log(`browser folder: ${(page.bytes / 1e6).toFixed(1)} MB`)

  // Five clips where the library's top label leads by MARGIN (the resamplers differ).
  const native = await model.predictFeatures({ embedding })
  const margin = (p: number[]) => {
    const [a, b] = [...p].sort((x, y) => y - x)
    return a - b
  }
  const chosen = files.map((f, i) => ({ f, p: native[i] })).filter(({ p }) => margin(p.probabilities) >= MARGIN)
  t.true(chosen.length >= 5, `only ${chosen.length} clips lead by ${MARGIN}`)
  const clips = chosen.slice(0, 5)

  const { url, server } = await serveFolder(dir)
  const micClip = clips[0].f
  const browser = await puppeteer.launch({
    executablePath: chromium,
    args: [
      '--no-sandbox',
      '--use-fake-ui-for-media-stream',
      '--use-fake-device-for-media-stream',
      `--use-file-for-fake-audio-capture=${micClip}`,
    ],
  })
  try {
    const tab = await browser.newPage()
    const errors: string[] = []
    tab.on('pageerror', (e) => errors.push((e as Error).message))
    await tab.goto(url)
    await tab.waitForFunction(() => (window as unknown as { emotion?: { ready?: boolean } }).emotion?.ready === true, { timeout: 60_000 })
    const input = await tab.$('#file')
    await input!.uploadFile(...clips.map((c) => c.f))
    await tab.waitForFunction(
      (n: number) => (window as unknown as { emotion: { results: unknown[]; error: string | null } }).emotion.results.length >= n,
      { timeout: 120_000 },
      clips.length,
    )
    const results = (await tab.evaluate(
      () => (window as unknown as { emotion: { results: PageResult[] } }).emotion.results,
    )) as PageResult[]
    let largest = 0
    results.forEach((r, i) => {
      t.is(r.label, clips[i].p.label, r.name)
      r.scores.forEach((s, k) => {
        largest = Math.max(largest, Math.abs(s - clips[i].p.probabilities[k]))
      })
      t.true(r.timeline.length >= 1)
    })
    t.log(`5 files in Chromium: labels equal; probabilities within ${largest.toExponential(2)} of the library's (browser resampling)`)

    await checkMicrophone(t, tab, model, micClip)
    t.deepEqual(errors, [])
  } finally {
    await browser.close()
    server.close()
  }
})

/** The page's Record button on Chromium's fake capture of `micClip`: the page and the library agree on its samples. */
async function checkMicrophone(t: ExecutionContext, tab: Page, model: Awaited<ReturnType<typeof loadModel>>, micClip: string) {
  await tab.click('#record')
  await tab.waitForFunction(
    () => {
      const e = (window as unknown as { emotion: { results: PageResult[]; error: string | null } }).emotion
      return e.error !== null || e.results.some((r) => r.source === 'microphone')
    },
    { timeout: 60_000 },
  )
  const mic = (await tab.evaluate(() => {
    const e = (window as unknown as { emotion: { results: PageResult[]; error: string | null; lastRecording: Float32Array } }).emotion
    return { error: e.error, result: e.results.find((r) => r.source === 'microphone'), samples: Array.from(e.lastRecording ?? []) }
  })) as { error: string | null; result?: PageResult; samples: number[] }
  t.is(mic.error, null)
  const samples = Float32Array.from(mic.samples)
  const rms = Math.sqrt(samples.reduce((a, b) => a + b * b, 0) / samples.length)
  t.true(samples.length === 4 * 16000 && rms > 1e-3, `recorded ${samples.length} samples, RMS ${rms}`)
  // The library on the very samples the page recorded: the same label and probabilities.
  const [ours] = await model.predict([{ samples, sampleRate: 16000 }], { strict: true })
  const theirs = mic.result!
  t.is(theirs.label, (ours as { label: string }).label)
  const diff = Math.max(...theirs.scores.map((s, k) => Math.abs(s - (ours as { probabilities: number[] }).probabilities[k])))
  t.true(diff < 1e-3, `${diff}`)
  t.log(
    `microphone (fake capture of ${micClip.split('/').pop()}): RMS ${rms.toFixed(4)}, label ${theirs.label}, within ${diff.toExponential(2)} of the library on the same samples`,
  )
}
