import test from 'ava'
import { readFileSync, writeFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { decodeAudio, decodeAudioSync, EmotionPipelineError, extractMel } from '../src/index.js'
import { timeMelOnDevice } from '../src/dev.js'
import { skip, haveRavdess, haveWavs, listAudio, NO_DATA, NO_WAVS, ravdessDir, sine, tempDir, wavDir, writeWav } from './helpers.js'
import type { WavFormat } from './helpers.js'

const tmp = tempDir()

test('original RAVDESS WAVs (with the FLLR chunk) decode, and equal their FLAC copies sample for sample', async (t) => {
  if (!haveWavs) return skip(t, NO_WAVS)
  if (!haveRavdess) return skip(t, NO_DATA)
  const wavs = listAudio(wavDir)
  t.is(wavs.length, 16)
  for (const wav of wavs) {
    const a = await decodeAudio(wav)
    t.is(a.sampleRate, 48000)
    t.is(a.channels, 1)
    t.true(a.durationSeconds > 2.5 && a.durationSeconds < 6, `${basename(wav)}: ${a.durationSeconds}s`)
    const actor = basename(wav).split('-')[6].slice(0, 2)
    const flac = join(ravdessDir, `Actor_${actor}`, basename(wav).replace(/\.wav$/, '.flac'))
    const b = await decodeAudio(flac)
    t.is(b.samples.length, a.samples.length)
    t.true(Buffer.from(a.samples.buffer).equals(Buffer.from(b.samples.buffer)), `${basename(wav)}: FLAC differs from WAV`)
  }
})

const FORMATS: [WavFormat, boolean, number][] = [
  ['u8', false, 1 / 127],
  ['i16', false, 1 / 32767],
  ['i24', false, 1e-6],
  ['i32', false, 1e-6],
  ['f32', false, 1e-7],
  ['f64', false, 1e-7],
  ['i16', true, 1 / 32767],
  ['f32', true, 1e-7],
]

for (const [format, extensible, tol] of FORMATS) {
  test(`WAV ${format}${extensible ? ' extensible' : ''} stereo decodes to the mean of its channels`, (t) => {
    const left = sine(440, 22050, 2205, 0.5)
    const right = sine(1000, 22050, 2205, 0.25)
    const path = join(tmp, `tone-${format}-${extensible}.wav`)
    writeWav(path, [left, right], 22050, format, { extensible, extraChunk: 'LIST' })
    const a = decodeAudioSync(path)
    t.is(a.sampleRate, 22050)
    t.is(a.channels, 2)
    t.is(a.samples.length, 2205)
    let worst = 0
    for (let i = 0; i < left.length; i++) worst = Math.max(worst, Math.abs(a.samples[i] - (left[i] + right[i]) / 2))
    t.true(worst <= tol * 1.5 + 1e-7, `max error ${worst}`)
  })
}

test('resampling on decode gives the new rate and length', async (t) => {
  const path = join(tmp, 'tone-44k.wav')
  writeWav(path, [sine(440, 44100, 44100)], 44100, 'f32')
  const a = await decodeAudio(path, { sampleRate: 48000 })
  t.is(a.sampleRate, 48000)
  t.is(a.samples.length, 48000)
  t.true(Math.abs(a.durationSeconds - 1) < 1e-9)
})

function badFiles(): Record<string, string> {
  const files: Record<string, string> = {}
  files.empty = join(tmp, 'empty.wav')
  writeFileSync(files.empty, Buffer.alloc(0))
  files.random = join(tmp, 'random.wav')
  writeFileSync(files.random, Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919 + 13) % 251)))
  const good = join(tmp, 'good.wav')
  writeWav(good, [sine(440, 16000, 16000)], 16000, 'i16')
  files.truncated = join(tmp, 'truncated.wav')
  const whole = readFileSync(good)
  writeFileSync(files.truncated, whole.subarray(0, 44 + 5000))
  files.zeroLength = join(tmp, 'zero-length.wav')
  writeWav(files.zeroLength, [new Float32Array(0)], 16000, 'i16')
  files.nan = join(tmp, 'nan.wav')
  const withNan = sine(440, 16000, 1600)
  withNan[800] = NaN
  writeWav(files.nan, [withNan], 16000, 'f32')
  files.unsupported = join(tmp, 'notes.txt')
  writeFileSync(files.unsupported, 'these are not audio samples\n'.repeat(100))
  return files
}

test('bad files are AUDIO_DECODE errors that name the file and the reason', async (t) => {
  const files = badFiles()
  const reasons: Record<string, RegExp> = {
    empty: /empty/,
    random: /unsupported|unrecognised|corrupt/,
    truncated: /truncated/,
    zeroLength: /zero-length|no audio/,
    nan: /non-finite/,
    unsupported: /unsupported|unrecognised/,
  }
  for (const [name, path] of Object.entries(files)) {
    const err = await t.throwsAsync(decodeAudio(path), { instanceOf: EmotionPipelineError }, name)
    t.is(err!.code, 'AUDIO_DECODE', name)
    t.true(err!.message.includes(path), `${name}: message names the file: ${err!.message}`)
    t.regex(err!.message, reasons[name], name)
  }
  const missing = await t.throwsAsync(decodeAudio(join(tmp, 'nope.wav')))
  t.regex(missing!.message, /not found/)
})

test('extractMel lists bad inputs in `failed` and featurises the rest; strict rejects', async (t) => {
  const files = badFiles()
  const good = join(tmp, 'good2.wav')
  writeWav(good, [sine(440, 16000, 16000)], 16000, 'i16')
  const inputs = [good, files.empty, { samples: sine(220, 8000, 8000), sampleRate: 8000 }, files.nan]
  const r = await extractMel(inputs, { device: 'cpu' })
  t.deepEqual(r.shape, [2, 128, 280])
  t.deepEqual(r.indices, [0, 2])
  t.deepEqual(
    r.failed.map((f) => [f.index, f.code]),
    [
      [1, 'AUDIO_DECODE'],
      [3, 'AUDIO_DECODE'],
    ],
  )
  t.is(r.failed[0].path, files.empty)
  const err = await t.throwsAsync(extractMel(inputs, { device: 'cpu', strict: true }), { instanceOf: EmotionPipelineError })
  t.is(err!.code, 'AUDIO_DECODE')
  t.true(err!.message.includes(files.empty))
})

test('invalid mel options are INVALID_OPTION naming the field', async (t) => {
  const bad: [object, RegExp][] = [
    [{ mel: { nMels: 0 } }, /mel\.nMels/],
    [{ mel: { nMel: 64 } }, /unknown field `nMel`/],
    [{ mel: { fMax: 30000 } }, /mel\.fMax/],
    [{ batchSize: 0 }, /batchSize/],
    [{ device: 'tpu' }, /device/],
    [{ mel: { hopLength: 4096 } }, /mel\.hopLength.*winLength/],
    [{ mel: { nFft: 256, hopLength: 128, nMels: 200 } }, /mel\.nMels.*129 FFT bins/],
    [{ mel: { padMode: 'zeros' } }, /mel\.padMode.*unknown variant `zeros`/],
    [{ mel: { topDb: Number.NaN } }, /mel\.topDb.*finite/],
  ]
  for (const [options, pattern] of bad) {
    const err = await t.throwsAsync(extractMel([{ samples: sine(440, 48000, 4800), sampleRate: 48000 }], options as never))
    t.is((err as EmotionPipelineError).code, 'INVALID_OPTION', JSON.stringify(options))
    t.regex(err!.message, pattern)
  }
  const rate = t.throws(() => decodeAudioSync('x.wav', { sampleRate: 0 }))
  t.is((rate as EmotionPipelineError).code, 'INVALID_OPTION')
})

test('extractMel streams progress and stops with CANCELLED when aborted', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const files = listAudio(join(ravdessDir, 'Actor_02'))
  const events: number[] = []
  const r = await extractMel(files.slice(0, 20), { device: 'cpu', batchSize: 8, onProgress: (e) => events.push(e.done) })
  t.deepEqual(r.shape, [20, 128, 280])
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.deepEqual(events, [8, 16, 20])

  const controller = new AbortController()
  const pending = extractMel(files, {
    device: 'cpu',
    batchSize: 4,
    onProgress: (e) => {
      if (e.done >= 4) controller.abort()
    },
    signal: controller.signal,
  })
  const err = await t.throwsAsync(pending, { instanceOf: EmotionPipelineError })
  t.is(err!.code, 'CANCELLED')
})

test('the same clip gives the same features alone and inside a batch (per-clip top_db)', async (t) => {
  const quiet = { samples: sine(300, 48000, 48000, 0.001), sampleRate: 48000 }
  const loud = { samples: sine(3000, 48000, 48000, 0.9), sampleRate: 48000 }
  const alone = await extractMel([quiet], { device: 'cpu' })
  const batch = await extractMel([loud, quiet], { device: 'cpu' })
  const n = alone.data.length
  let worst = 0
  for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(alone.data[i] - batch.data[n + i]))
  t.true(worst < 1e-4, `max difference ${worst} dB`)
})

test('the on-device log-mel timing runs the real front end and refuses an empty batch by name', (t) => {
  const timing = timeMelOnDevice({ device: 'cpu', batch: 4, repeats: 1 })
  t.is(timing.batch, 4)
  t.is(timing.device, 'cpu')
  t.true(timing.secondsPerBatch > 0 && Number.isFinite(timing.audioHoursPerSecond))
  t.is(timing.transferSecondsPerBatch, 0, 'nothing to copy to the CPU')
  t.is(timing.audioHoursPerSecond, (4 * 3) / 3600 / timing.secondsPerBatch)
  const err = t.throws(() => timeMelOnDevice({ device: 'cpu', batch: 0 }))
  t.regex(err!.message, /batch/)
})
