// The page of `emotion-pipeline export --browser`: loads model.onnx with onnxruntime-web (the files in
// ./ort, no CDN), decodes a dropped file or records the microphone at the model's sample rate, and
// shows the clip's label and the emotion over time (windows of the model's length, half overlapping).
// window.emotion exposes the results for scripts and tests.
import * as ort from './ort/ort.wasm.min.mjs'

ort.env.wasm.wasmPaths = new URL('./ort/', import.meta.url).href
// Threads need a cross-origin isolated page (COOP/COEP headers); a plain static server gets one.
ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1

const $ = (id) => document.getElementById(id)
const COLOURS = ['#888', '#6ab', '#eb3', '#36c', '#d33', '#a4c', '#7a3', '#f80', '#c69', '#396']
const RECORD_SECONDS = 4

const state = { results: [], lastRecording: null, error: null }
window.emotion = state

let sidecar
let session
try {
  sidecar = await (await fetch('model.onnx.json')).json()
  session = await ort.InferenceSession.create('model.onnx', { executionProviders: ['wasm'] })
} catch (err) {
  state.error = `the model could not be loaded: ${err.message ?? err}`
  $('about').textContent = `${state.error} (serve this folder over HTTP, e.g. python3 -m http.server, and open it from there)`
  throw err
}
const rate = sidecar.sampleRate
// The timeline's window: the CNN's clip length, else 4 s for an encoder model (as the library's timeline).
const windowSamples = sidecar.clipSamples ?? 4 * rate
// What the library scores as one clip: up to the CNN's clip length, or up to 30 s for an encoder model;
// a longer recording gets the mean of windows of that length (the library also gates them by voice).
const clipWindow = sidecar.clipSamples ?? sidecar.maxSamples
$('about').textContent =
  `${sidecar.modelKind} model, ${sidecar.labels.length} labels (${sidecar.labels.join(', ')}), ${rate} Hz. Model: ${sidecar.source}, epoch ${sidecar.epoch}.`
$('record').disabled = false
state.ready = true

/** Label probabilities of one clip (the graph cuts or pads it as the model was trained). */
async function scores(samples) {
  const clip = samples.length > sidecar.maxSamples ? samples.subarray(0, sidecar.maxSamples) : samples
  const out = await session.run({ samples: new ort.Tensor('float32', clip, [1, clip.length]) })
  return Array.from(out.scores.data)
}

/** Windows of `size` every half window, the last one aligned to the end (as the library's slicer). */
function windows(n, size) {
  if (n <= size) return [[0, n]]
  const hop = Math.floor(size / 2)
  const starts = []
  for (let s = 0; s + size <= n; s += hop) starts.push(s)
  if (starts[starts.length - 1] + size < n) starts.push(n - size)
  return starts.map((s) => [s, s + size])
}

/** The clip's probabilities as the library's predict gives them (without its voice gate). */
async function clipScores(samples) {
  // One run at a time: an onnxruntime-web session does not take concurrent runs.
  const all = []
  for (const [a, b] of windows(samples.length, clipWindow)) all.push(await scores(samples.subarray(a, b)))
  return all[0].map((_, k) => all.reduce((sum, p) => sum + p[k], 0) / all.length)
}

const top = (p) => p.indexOf(Math.max(...p))

async function analyse(samples, source, name) {
  if (samples.length < sidecar.minSamples)
    throw new Error(`${name} is too short: ${samples.length} samples, the model needs ${sidecar.minSamples}`)
  $('status').textContent = `Scoring ${name} (${(samples.length / rate).toFixed(1)} s)…`
  const timeline = []
  for (const [start, end] of windows(samples.length, windowSamples)) {
    const p = await scores(samples.subarray(start, end))
    timeline.push({ start: start / rate, end: end / rate, label: sidecar.labels[top(p)], scores: p })
  }
  // A clip that fits one window was just scored whole: not run twice.
  const clip = timeline.length === 1 && samples.length <= clipWindow ? timeline[0].scores : await clipScores(samples)
  const result = { source, name, seconds: samples.length / rate, label: sidecar.labels[top(clip)], scores: clip, timeline }
  state.results.push(result)
  show(result)
  $('status').textContent = `${name}: ${result.label}`
  return result
}

function show(result) {
  const rows = result.scores
    .map((p, i) => [p, i])
    .sort((a, b) => b[0] - a[0])
    .map(
      ([p, i]) =>
        `<tr><td>${escapeHtml(sidecar.labels[i])}</td><td>${(100 * p).toFixed(1)} %</td><td><span class="bar" style="width:${(200 * p).toFixed(0)}px"></span></td></tr>`,
    )
  $('result').innerHTML = `<h2>${escapeHtml(result.name)}: ${escapeHtml(result.label)}</h2><table>${rows.join('')}</table>`
  drawTimeline(result.timeline)
}

function escapeHtml(text) {
  return text.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c])
}

/** Each label's probability over time (window centres), one line per label. */
function drawTimeline(timeline) {
  const canvas = $('chart')
  canvas.hidden = false
  const g = canvas.getContext('2d')
  const [w, h, pad] = [canvas.width, canvas.height, 30]
  g.clearRect(0, 0, w, h)
  g.strokeStyle = '#ccc'
  g.strokeRect(pad, 10, w - pad - 10, h - pad - 10)
  const t0 = timeline[0].start
  const t1 = timeline[timeline.length - 1].end
  const x = (t) => pad + ((t - t0) / Math.max(t1 - t0, 1e-9)) * (w - pad - 10)
  const y = (p) => h - pad - p * (h - pad - 20)
  g.fillStyle = '#666'
  g.fillText(`${t0.toFixed(1)} s`, pad, h - 10)
  g.fillText(`${t1.toFixed(1)} s`, w - 50, h - 10)
  sidecar.labels.forEach((_, k) => {
    g.strokeStyle = COLOURS[k % COLOURS.length]
    g.lineWidth = 2
    g.beginPath()
    timeline.forEach((seg, i) => {
      const cx = x((seg.start + seg.end) / 2)
      i === 0 ? g.moveTo(cx, y(seg.scores[k])) : g.lineTo(cx, y(seg.scores[k]))
    })
    if (timeline.length === 1) g.arc(x((timeline[0].start + timeline[0].end) / 2), y(timeline[0].scores[k]), 3, 0, 7)
    g.stroke()
  })
  $('legend').innerHTML = sidecar.labels
    .map((l, k) => `<span><i style="background:${COLOURS[k % COLOURS.length]}"></i>${escapeHtml(l)}</span>`)
    .join('')
}

/** A file's first channels mixed to mono, decoded and resampled by the browser at the model's rate. */
async function decode(bytes) {
  const context = new AudioContext({ sampleRate: rate })
  try {
    const audio = await context.decodeAudioData(bytes)
    const mono = new Float32Array(audio.length)
    for (let c = 0; c < audio.numberOfChannels; c++) {
      const data = audio.getChannelData(c)
      for (let i = 0; i < mono.length; i++) mono[i] += data[i] / audio.numberOfChannels
    }
    return mono
  } finally {
    await context.close()
  }
}

async function analyseFile(file) {
  try {
    await analyse(await decode(await file.arrayBuffer()), 'file', file.name)
  } catch (err) {
    state.error = `${file.name}: ${err.message ?? err}`
    $('status').textContent = `Could not read ${file.name}: ${err.message ?? err}`
  }
}

$('file').addEventListener('change', async (e) => {
  for (const file of e.target.files) await analyseFile(file)
})
const drop = $('drop')
drop.addEventListener('dragover', (e) => {
  e.preventDefault()
  drop.classList.add('over')
})
drop.addEventListener('dragleave', () => drop.classList.remove('over'))
drop.addEventListener('drop', async (e) => {
  e.preventDefault()
  drop.classList.remove('over')
  for (const file of e.dataTransfer.files) await analyseFile(file)
})

/** `samples` at `from` Hz resampled to `to` Hz by the browser's own resampler (an offline graph). */
async function resample(samples, from, to) {
  if (from === to) return samples
  const offline = new OfflineAudioContext(1, Math.round((samples.length * to) / from), to)
  const buffer = offline.createBuffer(1, samples.length, from)
  buffer.copyToChannel(samples, 0)
  const source = offline.createBufferSource()
  source.buffer = buffer
  source.connect(offline.destination)
  source.start()
  return (await offline.startRendering()).getChannelData(0)
}

/**
 * Records RECORD_SECONDS from the microphone at the device's own rate, resamples it to the model's, then
 * scores it. Not a context at the model's rate: Firefox refuses to connect a microphone to a context
 * whose rate differs from the device's.
 */
async function record() {
  $('record').disabled = true
  const context = new AudioContext()
  let stream
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    })
    await context.audioWorklet.addModule(new URL('./recorder-worklet.js', import.meta.url))
    const source = context.createMediaStreamSource(stream)
    const node = new AudioWorkletNode(context, 'recorder')
    const native = context.sampleRate
    const chunks = []
    let got = 0
    const want = RECORD_SECONDS * native
    await new Promise((done) => {
      node.port.onmessage = (e) => {
        chunks.push(e.data)
        got += e.data.length
        $('record-status').textContent = `recording… ${(got / native).toFixed(1)} s`
        if (got >= want) {
          node.port.onmessage = null
          source.disconnect()
          done()
        }
      }
      source.connect(node)
    })
    const recorded = new Float32Array(want)
    let at = 0
    for (const c of chunks) {
      recorded.set(c.subarray(0, Math.min(c.length, want - at)), at)
      at += c.length
      if (at >= want) break
    }
    const samples = await resample(recorded, native, rate)
    state.lastRecording = samples
    $('record-status').textContent = ''
    await analyse(samples, 'microphone', `${RECORD_SECONDS} s from the microphone`)
  } catch (err) {
    state.error = `microphone: ${err.message ?? err}`
    $('record-status').textContent = `microphone unavailable: ${err.message ?? err}`
  } finally {
    for (const track of stream?.getTracks() ?? []) track.stop()
    await context.close()
    $('record').disabled = false
  }
}
$('record').addEventListener('click', record)
$('record').textContent = `Record ${RECORD_SECONDS} s from the microphone`
