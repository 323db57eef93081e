// Parity with torchaudio 2.11 (run from the Python that provisioned libtorch): the same waveforms go
// through our front end and through torchaudio.transforms.MelSpectrogram + AmplitudeToDB.
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { decodeAudio, extractMel } from '../src/index.js'
import type { MelOptions } from '../src/index.js'
import { skip, haveWavs, NO_WAVS, listAudio, referencePython, sine, tempDir, wavDir, writeWav } from './helpers.js'
import { DEFAULTS as MEL_DEFAULTS } from '../src/generated/options.js'

const python = referencePython()
const script = resolve(import.meta.dirname, '..', 'benches', 'reference', 'torchaudio_mel.py')
const tmp = tempDir('ep-parity-')
// The core's MelConfig defaults (generated from Rust), sent to torchaudio as they are.
const DEFAULTS = MEL_DEFAULTS.MelConfig

function readF32(path: string): Float32Array {
  const b = readFileSync(path)
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4)
}

interface Reference {
  power: Float32Array
  db: Float32Array
  shape: number[]
  resampled?: Float32Array
}
interface Request {
  name: string
  waves: Float32Array[]
  config: Record<string, unknown>
  resample?: object
}

// Reference computations are batched into as few Python processes as possible (importing torch
// costs seconds): requests arriving within 500 ms of each other share one run.
let pending: { request: Request; resolve: (r: Reference) => void; reject: (e: unknown) => void }[] = []
let timer: NodeJS.Timeout | undefined

function torchaudio(request: Request): Promise<Reference> {
  return new Promise((resolve, reject) => {
    pending.push({ request, resolve, reject })
    clearTimeout(timer)
    timer = setTimeout(() => {
      const batch = pending
      pending = []
      runPython(batch.map((b) => b.request)).then(
        (all) => {
          for (const b of batch) b.resolve(all.get(b.request.name)!)
        },
        (err) => {
          for (const b of batch) b.reject(err)
        },
      )
    }, 500)
  })
}

async function runPython(batch: Request[]): Promise<Map<string, Reference>> {
  const specs = batch.map(({ name, waves, config, resample }) => {
    const length = waves[0].length
    const flat = new Float32Array(waves.length * length)
    for (const [i, w] of waves.entries()) flat.set(w, i * length)
    const wavesPath = join(tmp, `${name}.waves.f32`)
    writeFileSync(wavesPath, flat)
    return { waves: wavesPath, count: waves.length, length, config, out: join(tmp, name), resample }
  })
  const req = join(tmp, 'requests.json')
  writeFileSync(req, JSON.stringify(specs))
  const lines = execFileSync(python!, [script, req], { encoding: 'utf8' }).trim().split('\n')
  return new Map(
    batch.map((r, i) => {
      const out = specs[i].out
      return [
        r.name,
        {
          power: readF32(`${out}.power.f32`),
          db: readF32(`${out}.db.f32`),
          shape: JSON.parse(lines[i]).shape,
          resampled: r.resample ? readF32(`${out}.resampled.f32`) : undefined,
        },
      ]
    }),
  )
}

/** Max relative error of power over bins above 1e-10 × peak; max dB error over bins within 80 dB of the clip's max. */
function compare(ours: { power: Float32Array; db: Float32Array }, ref: Reference, perClip: number) {
  let relPower = 0
  let dbErr = 0
  for (let clip = 0; clip * perClip < ref.power.length; clip++) {
    const lo = clip * perClip
    let peak = 0
    let dbMax = -Infinity
    for (let i = lo; i < lo + perClip; i++) {
      peak = Math.max(peak, ref.power[i])
      dbMax = Math.max(dbMax, ref.db[i])
    }
    for (let i = lo; i < lo + perClip; i++) {
      if (ref.power[i] > peak * 1e-8) relPower = Math.max(relPower, Math.abs(ours.power[i] - ref.power[i]) / ref.power[i])
      if (ref.db[i] > dbMax - 80) dbErr = Math.max(dbErr, Math.abs(ours.db[i] - ref.db[i]))
    }
  }
  return { relPower, dbErr }
}

async function ours(waves: Float32Array[], mel: MelOptions) {
  const inputs = waves.map((samples) => ({ samples, sampleRate: mel.sampleRate ?? 48000 }))
  const durationSeconds = waves[0].length / (mel.sampleRate ?? 48000)
  const power = await extractMel(inputs, { device: 'cpu', mel: { ...mel, durationSeconds, toDb: false, frames: null } })
  const db = await extractMel(inputs, { device: 'cpu', mel: { ...mel, durationSeconds, frames: null } })
  return { power: power.data, db: db.data, shape: power.shape }
}

const SKIP = 'no Python with torch/torchaudio 2.11 found (see scripts/libtorch.mjs): parity skipped'

test('log-mel of the 16 original RAVDESS WAVs matches torchaudio (default reference settings)', async (t) => {
  if (!python) return skip(t, SKIP)
  if (!haveWavs) return skip(t, NO_WAVS)
  const waves = await Promise.all(listAudio(wavDir).map(async (f) => (await decodeAudio(f)).samples.slice(0, 144000)))
  const ref = await torchaudio({ name: 'ravdess', waves, config: DEFAULTS })
  const mine = await ours(waves, {})
  t.deepEqual(mine.shape, ref.shape)
  const { relPower, dbErr } = compare(mine, ref, 128 * 282)
  t.log(`16 RAVDESS clips: power max rel err ${relPower.toExponential(2)}, log-mel max err ${dbErr.toExponential(2)} dB`)
  t.true(relPower <= 1e-4, `power rel err ${relPower}`)
  t.true(dbErr <= 1e-3, `dB err ${dbErr}`)
})

test('fastPower (re² + im² instead of |X|²) stays within 0.01 dB of torchaudio on the 16 original RAVDESS WAVs', async (t) => {
  if (!python) return skip(t, SKIP)
  if (!haveWavs) return skip(t, NO_WAVS)
  const waves = await Promise.all(listAudio(wavDir).map(async (f) => (await decodeAudio(f)).samples.slice(0, 144000)))
  const ref = await torchaudio({ name: 'ravdess-fast', waves, config: DEFAULTS })
  const fast = await ours(waves, { fastPower: true })
  t.deepEqual(fast.shape, ref.shape)
  const { relPower, dbErr } = compare(fast, ref, 128 * 282)
  t.log(`fastPower: power max rel err ${relPower.toExponential(2)}, log-mel max err ${dbErr.toExponential(2)} dB`)
  t.true(dbErr <= 0.01, `dB err ${dbErr}`)
  t.true(relPower <= 1e-3, `power rel err ${relPower}`)
})

const SYNTHETIC: [string, MelOptions, Record<string, unknown>][] = [
  ['defaults', {}, {}],
  [
    'slaney scale and norm, 16 kHz, short window',
    { sampleRate: 16000, nFft: 512, winLength: 400, hopLength: 160, nMels: 64, melScale: 'slaney', norm: 'slaney', fMin: 20, fMax: 7600 },
    { sampleRate: 16000, nFft: 512, winLength: 400, hopLength: 160, nMels: 64, melScale: 'slaney', norm: 'slaney', fMin: 20, fMax: 7600 },
  ],
  ['power 1, no centring, no top_db', { power: 1, center: false, topDb: null }, { power: 1, center: false, topDb: null }],
]

for (const [name, mel, config] of SYNTHETIC) {
  test(`log-mel of synthetic signals matches torchaudio: ${name}`, async (t) => {
    if (!python) return skip(t, SKIP)
    const rate = mel.sampleRate ?? 48000
    const n = rate
    let seed = 7
    const noise = Float32Array.from({ length: n }, () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31
      return (seed / 2 ** 31 - 0.5) * 0.2
    })
    const chirp = Float32Array.from({ length: n }, (_, i) => 0.5 * Math.sin(2 * Math.PI * (100 + (rate / 4) * (i / n)) * (i / rate)))
    const overtone = sine(3300, rate, n, 0.05)
    const mix = sine(440, rate, n, 0.3).map((v, i) => v + overtone[i])
    const waves = [noise, chirp, mix]
    const ref = await torchaudio({ name: name.replace(/\W+/g, '-'), waves, config: { ...DEFAULTS, ...config } })
    const mine = await ours(waves, mel)
    t.deepEqual(mine.shape, ref.shape)
    const { relPower, dbErr } = compare(mine, ref, ref.shape[1] * ref.shape[2])
    t.log(`${name}: power max rel err ${relPower.toExponential(2)}, log-mel max err ${dbErr.toExponential(2)} dB`)
    t.true(relPower <= 1e-4, `power rel err ${relPower}`)
    t.true(dbErr <= 1e-3, `dB err ${dbErr}`)
  })
}

test('resampling matches torchaudio.functional.resample (44.1k→48k, 48k→16k)', async (t) => {
  if (!python) return skip(t, SKIP)
  const pairs = [
    [44100, 48000],
    [48000, 16000],
    [22050, 48000],
  ]
  await Promise.all(
    pairs.map(async ([from, to]) => {
      const source = sine(997, from, from, 0.4).map((v, i) => v + 0.2 * Math.sin(i * 0.37))
      const path = join(tmp, `rs-${from}.wav`)
      writeWav(path, [source], from, 'f32')
      const raw = join(tmp, `rs-${from}.f32`)
      writeFileSync(raw, source)
      const [decoded, ref] = await Promise.all([
        decodeAudio(path, { sampleRate: to }),
        torchaudio({ name: `rs-${from}-${to}`, waves: [sine(1, 48000, 4096)], config: DEFAULTS, resample: { input: raw, from, to } }),
      ])
      const expected = ref.resampled!
      t.is(decoded.samples.length, expected.length)
      let worst = 0
      for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(decoded.samples[i] - expected[i]))
      t.log(`resample ${from}→${to}: max abs err ${worst.toExponential(2)} (signal peak ≈ 0.6)`)
      t.true(worst < 1e-5, `max abs error ${worst}`)
    }),
  )
})
