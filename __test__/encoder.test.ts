// The Whisper encoder branch: pooled hidden states equal Hugging Face's WhisperEncoder (transformers
// 4.52, same CTranslate2 weights) on real clips; bad models and clips fail with clear errors.
import test from 'ava'
import { execFileSync, spawnSync } from 'node:child_process'
import { closeSync, cpSync, existsSync, mkdirSync, openSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { decodeAudio, type EmotionPipelineError, extractEmbeddings, ENCODER_NAMES, loadModel, train } from '../src/index.js'
import { installedEncoderDir } from '../src/encoder.js'
import { haveRavdess, listAudio, NO_DATA, ravdessDir, referencePython, skip, tempDir } from './helpers.js'
import { writeEncoderOnly } from '../scripts/encoders.mjs'
import { ENCODERS, isEncoderInstalled } from '../src/encoder-install.js'
import { fileDigest } from '../src/download.js'

const tmp = tempDir('ep-encoder-')
const python = referencePython()
const installed = (name: string) => existsSync(join(installedEncoderDir(name as 'whisper-base'), '.emotion-pipeline-complete'))
const NOT_INSTALLED = (name: string) => `the ${name} encoder is not installed (npm run setup installs it): skipped`

function readF32(path: string): Float32Array {
  const b = readFileSync(path)
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4)
}

/** The clips concatenated as raw float32 (what the reference script reads). */
function writeWaves(waves: Float32Array[], path: string): void {
  writeFileSync(path, Buffer.concat(waves.map((w) => Buffer.from(w.buffer, w.byteOffset, w.byteLength))))
}

async function clips(n: number): Promise<Float32Array[]> {
  const files = listAudio(join(ravdessDir, 'Actor_02')).slice(0, n)
  return Promise.all(files.map(async (f) => (await decodeAudio(f, { sampleRate: 16000 })).samples))
}

test('each installed encoder is the file the installer promises: byte count and SHA-256', async (t) => {
  const names = ENCODER_NAMES.filter((n) => isEncoderInstalled(n))
  if (names.length === 0) return skip(t, NOT_INSTALLED(ENCODER_NAMES.join(', ')))
  for (const name of names) {
    const model = join(installedEncoderDir(name), 'model.bin')
    t.is(statSync(model).size, ENCODERS[name].bytes, name)
    t.is(await fileDigest(model, 'sha256'), ENCODERS[name].sha256, name)
  }
})

for (const name of ['whisper-tiny.en', 'whisper-base']) {
  test.serial(`${name}: pooled layer states equal Hugging Face's WhisperEncoder on real clips (padded input)`, async (t) => {
    if (!haveRavdess) return skip(t, NO_DATA)
    if (!installed(name)) return skip(t, NOT_INSTALLED(name))
    if (!python) return skip(t, 'no Python with torch 2.11 for the reference: skipped')
    const waves = await clips(2)
    const ours = await extractEmbeddings(
      waves.map((samples) => ({ samples, sampleRate: 16000 })),
      { encoder: name, input: 'padded', precision: 'fp32', device: 'cpu', strict: true },
    )
    writeWaves(waves, join(tmp, `${name}.f32`))
    const request = join(tmp, `${name}.json`)
    const model = join(installedEncoderDir(name as 'whisper-base'), 'model.bin')
    writeFileSync(
      request,
      JSON.stringify({ model, waves: join(tmp, `${name}.f32`), lengths: waves.map((w) => w.length), out: join(tmp, name) }),
    )
    const script = resolve(import.meta.dirname, '..', 'benches', 'reference', 'whisper_encoder.py')
    const shape = JSON.parse(execFileSync(python, [script, request], { encoding: 'utf8' })).shape
    t.deepEqual(ours.shape, shape)
    const reference = readF32(join(tmp, `${name}.pooled.f32`))
    let worst = 0
    for (let i = 0; i < reference.length; i++) worst = Math.max(worst, Math.abs(reference[i] - ours.data[i]) / (1 + Math.abs(reference[i])))
    t.true(worst < 1e-4, `largest relative difference ${worst}`)
    t.log(`${name}: [${shape}] largest difference ${worst.toExponential(2)}`)
  })
}

test.serial('clip-length input: one row per clip, finite, cached by content, and not the padded result', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  if (!installed('whisper-tiny.en')) return skip(t, NOT_INSTALLED('whisper-tiny.en'))
  const files = listAudio(join(ravdessDir, 'Actor_02')).slice(0, 3)
  const cacheDir = join(tmp, 'cache')
  const first = await extractEmbeddings(files, { encoder: 'whisper-tiny.en', device: 'cpu', cacheDir })
  t.deepEqual(first.shape, [3, 5, 384])
  t.deepEqual(first.indices, [0, 1, 2])
  t.true(first.data.every(Number.isFinite))
  t.deepEqual(first.cache, { hits: 0, misses: 3, writes: 3 })
  const again = await extractEmbeddings(files, { encoder: 'whisper-tiny.en', device: 'cpu', cacheDir })
  t.deepEqual(again.cache, { hits: 3, misses: 0, writes: 0 })
  t.deepEqual(again.data, first.data)
  const padded = await extractEmbeddings(files.slice(0, 1), { encoder: 'whisper-tiny.en', device: 'cpu', input: 'padded', cacheDir })
  t.deepEqual(padded.cache, { hits: 0, misses: 1, writes: 1 }, 'the input mode is part of the key')
  t.notDeepEqual(padded.data, first.data.slice(0, padded.data.length))
  // Statistics pooling: the means, then as many rows of standard deviations (positive).
  const stats = await extractEmbeddings(files.slice(0, 1), { encoder: 'whisper-tiny.en', device: 'cpu', pooling: 'meanStd', cacheDir })
  t.deepEqual(stats.shape, [1, 10, 384])
  t.deepEqual(stats.data.subarray(0, 5 * 384), first.data.subarray(0, 5 * 384))
  t.true(stats.data.subarray(5 * 384).every((x) => x >= 0) && stats.data.subarray(5 * 384).some((x) => x > 0))
})

test('bf16 arithmetic stays close to fp32 (cosine similarity of every pooled row > 0.99)', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  if (!installed('whisper-tiny.en')) return skip(t, NOT_INSTALLED('whisper-tiny.en'))
  const files = listAudio(join(ravdessDir, 'Actor_03')).slice(0, 2)
  const fp32 = await extractEmbeddings(files, { encoder: 'whisper-tiny.en', device: 'cpu', precision: 'fp32' })
  const bf16 = await extractEmbeddings(files, { encoder: 'whisper-tiny.en', device: 'cpu', precision: 'bf16' })
  t.deepEqual(bf16.shape, fp32.shape)
  const width = fp32.shape[2]
  let worst = 1
  for (let r = 0; r < fp32.data.length / width; r++) {
    const a = fp32.data.subarray(r * width, (r + 1) * width)
    const b = bf16.data.subarray(r * width, (r + 1) * width)
    let dot = 0
    let na = 0
    let nb = 0
    for (let i = 0; i < width; i++) {
      dot += a[i] * b[i]
      na += a[i] * a[i]
      nb += b[i] * b[i]
    }
    worst = Math.min(worst, dot / Math.sqrt(na * nb))
  }
  t.true(worst > 0.99, `lowest cosine similarity ${worst}`)
  t.log(`bf16 vs fp32: lowest cosine similarity of a pooled row ${worst.toFixed(5)}`)
})

test('an encoder-only copy of a model (for carrying to a GPU host) gives the same states', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  if (!installed('whisper-tiny.en')) return skip(t, NOT_INSTALLED('whisper-tiny.en'))
  const full = join(installedEncoderDir('whisper-tiny.en'), 'model.bin')
  const dir = join(tmp, 'encoder-only')
  writeEncoderOnly(full, dir)
  t.true(statSync(join(dir, 'model.bin')).size < statSync(full).size / 3, 'the decoder is left out')
  const files = listAudio(join(ravdessDir, 'Actor_04')).slice(0, 2)
  const a = await extractEmbeddings(files, { encoder: 'whisper-tiny.en', device: 'cpu' })
  const b = await extractEmbeddings(files, { encoder: dir, device: 'cpu' })
  t.deepEqual(b.data, a.data)
  t.not(b.modelSha256, a.modelSha256)
})

test('a clip shorter than one Whisper frame fails by itself, naming it; strict rejects', async (t) => {
  if (!installed('whisper-tiny.en')) return skip(t, NOT_INSTALLED('whisper-tiny.en'))
  const short = { samples: new Float32Array(200).fill(0.1), sampleRate: 16000 }
  const ok = { samples: new Float32Array(16000).map((_, i) => Math.sin(i / 10) * 0.3), sampleRate: 16000 }
  const out = await extractEmbeddings([ok, short], { encoder: 'whisper-tiny.en', device: 'cpu' })
  t.deepEqual(out.indices, [0])
  t.is(out.failed[0].index, 1)
  t.is(out.failed[0].code, 'AUDIO_DECODE')
  t.regex(out.failed[0].message, /<samples #1>.*shorter than one Whisper frame/)
  const err = await t.throwsAsync(extractEmbeddings([short], { encoder: 'whisper-tiny.en', device: 'cpu', strict: true }))
  t.is((err as EmotionPipelineError).code, 'AUDIO_DECODE')
})

test('missing and truncated encoders are MODEL_NOT_FOUND naming the folder or file', async (t) => {
  const input = [{ samples: new Float32Array(16000), sampleRate: 16000 }]
  const missing = await t.throwsAsync(extractEmbeddings(input, { encoder: join(tmp, 'nowhere') }))
  t.is((missing as EmotionPipelineError).code, 'MODEL_NOT_FOUND')
  t.regex(missing!.message, /nowhere/)
  const empty = join(tmp, 'empty-encoder')
  mkdirSync(empty, { recursive: true })
  const noBin = await t.throwsAsync(extractEmbeddings(input, { encoder: empty }))
  t.is((noBin as EmotionPipelineError).code, 'MODEL_NOT_FOUND')
  t.regex(noBin!.message, /model\.bin/)
  if (!installed('whisper-tiny.en')) return skip(t, NOT_INSTALLED('whisper-tiny.en'))
  const truncated = join(tmp, 'truncated-encoder')
  mkdirSync(truncated, { recursive: true })
  const fd = openSync(join(installedEncoderDir('whisper-tiny.en'), 'model.bin'), 'r')
  const head = Buffer.alloc(4_000_000)
  readSync(fd, head, 0, head.length, 0)
  closeSync(fd)
  writeFileSync(join(truncated, 'model.bin'), head)
  const cut = await t.throwsAsync(extractEmbeddings(input, { encoder: truncated }))
  t.is((cut as EmotionPipelineError).code, 'MODEL_NOT_FOUND')
  t.regex(cut!.message, /truncated-encoder\/model\.bin.*truncated/)
})

test.serial('a named encoder that is not installed says how to install it', async (t) => {
  const saved = process.env.EMOTION_PIPELINE_CACHE
  process.env.EMOTION_PIPELINE_CACHE = join(tmp, 'empty-cache')
  try {
    const err = await t.throwsAsync(extractEmbeddings([], { encoder: 'whisper-base' }))
    t.is((err as EmotionPipelineError).code, 'MODEL_NOT_FOUND')
    t.regex(err!.message, /install-models --encoder whisper-base/)
  } finally {
    if (saved === undefined) delete process.env.EMOTION_PIPELINE_CACHE
    else process.env.EMOTION_PIPELINE_CACHE = saved
  }
})

test('an encoder option that is not a string is INVALID_OPTION', async (t) => {
  const err = await t.throwsAsync(extractEmbeddings([], { encoder: 3 as unknown as string }))
  t.is((err as EmotionPipelineError).code, 'INVALID_OPTION')
})

test.serial('states extracted after an encoder-model job equal those extracted before it (each job sets its own threads)', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  if (!installed('whisper-base')) return skip(t, NOT_INSTALLED('whisper-base'))
  // A clip whose bf16 states at speed 0.9 differ between 1 and 2 threads on the development machine.
  const files = listAudio(join(ravdessDir, 'Actor_03')).filter((f) => /03-01-0[26]-01-01-0[12]-03\./.test(f))
  t.true(files.length >= 2, files.join(', '))
  const options = { encoder: 'whisper-base', precision: 'bf16', speed: 0.9, cacheDir: null, device: 'cpu' } as const
  const before = await extractEmbeddings(files, options)
  // The encoder model trains its small head on 1 libtorch thread, a process-wide setting.
  const { train } = await import('../src/index.js')
  const n = 6
  await train({
    model: 'encoder',
    labels: ['a', 'b'],
    epochs: 1,
    device: 'cpu',
    train: { embedding: { data: new Float32Array(n * 7 * 512), shape: [n, 7, 512] }, labels: [0, 1, 0, 1, 0, 1] },
  })
  const after = await extractEmbeddings(files, options)
  t.deepEqual(Array.from(after.data), Array.from(before.data))
})

/** Writes a Hugging Face layout encoder folder with the fixture script (needs the reference Python). */
function writeHfFolder(out: string, args: string[]): string {
  const script = resolve(import.meta.dirname, 'fixtures', 'whisper_hf.py')
  execFileSync(python!, [script, out, ...args], { encoding: 'utf8' })
  return out
}

test.serial(
  'a Hugging Face layout folder (config.json + model.safetensors) gives the CTranslate2 states; its identity is the file SHA-256',
  async (t) => {
    if (!haveRavdess) return skip(t, NO_DATA)
    if (!installed('whisper-base')) return skip(t, NOT_INSTALLED('whisper-base'))
    if (!python) return skip(t, 'no Python with torch 2.11 to write the Hugging Face layout: skipped')
    const dir = writeHfFolder(join(tmp, 'hf-whisper-base'), ['--from', join(installedEncoderDir('whisper-base'), 'model.bin')])
    const files = listAudio(join(ravdessDir, 'Actor_03')).slice(0, 3)
    const options = { precision: 'fp32', device: 'cpu', strict: true } as const
    const ct2 = await extractEmbeddings(files, { ...options, encoder: 'whisper-base' })
    const hf = await extractEmbeddings(files, { ...options, encoder: dir })
    t.deepEqual(hf.shape, ct2.shape)
    let worst = 0
    for (let i = 0; i < ct2.data.length; i++) worst = Math.max(worst, Math.abs(ct2.data[i] - hf.data[i]))
    t.true(worst <= 1e-5, `largest difference ${worst}`)
    t.is(hf.modelSha256, await fileDigest(join(dir, 'model.safetensors'), 'sha256'))
  },
)

test.serial('any Whisper size from its config: a random 128-mel-bin encoder in two shards equals transformers', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  if (!python) return skip(t, 'no Python with torch 2.11 for the reference: skipped')
  const dir = writeHfFolder(join(tmp, 'hf-random-128'), ['--random', '128', '--shards', '2'])
  t.true(existsSync(join(dir, 'model.safetensors.index.json')))
  const waves = await clips(2)
  const ours = await extractEmbeddings(
    waves.map((samples) => ({ samples, sampleRate: 16000 })),
    { encoder: dir, input: 'padded', precision: 'fp32', device: 'cpu', strict: true },
  )
  t.deepEqual(ours.shape, [2, 3, 64])
  writeWaves(waves, join(tmp, 'hf-random.f32'))
  const request = join(tmp, 'hf-random.json')
  const out = join(tmp, 'hf-random')
  writeFileSync(request, JSON.stringify({ hfDir: dir, waves: join(tmp, 'hf-random.f32'), lengths: waves.map((w) => w.length), out }))
  const script = resolve(import.meta.dirname, '..', 'benches', 'reference', 'whisper_encoder.py')
  t.deepEqual(JSON.parse(execFileSync(python, [script, request], { encoding: 'utf8' })).shape, ours.shape)
  const reference = readF32(`${out}.pooled.f32`)
  let worst = 0
  for (let i = 0; i < reference.length; i++) worst = Math.max(worst, Math.abs(reference[i] - ours.data[i]) / (1 + Math.abs(reference[i])))
  t.true(worst < 1e-4, `largest relative difference ${worst}`)
  t.log(`random 128-mel Whisper, 2 shards: largest difference ${worst.toExponential(2)}`)
})

test.serial(
  "a Hugging Face folder's head count is part of its identity: cache key, and models refuse a config with other heads",
  async (t) => {
    if (!haveRavdess) return skip(t, NO_DATA)
    if (!python) return skip(t, 'no Python with torch 2.11 to write the Hugging Face layout: skipped')
    const four = writeHfFolder(join(tmp, 'hf-heads-4'), ['--random', '80'])
    // The same weights with 2 heads (width 64 divides either way): another encoder the SHA-256 cannot tell apart.
    const two = join(tmp, 'hf-heads-2')
    cpSync(four, two, { recursive: true })
    const config = JSON.parse(readFileSync(join(two, 'config.json'), 'utf8'))
    writeFileSync(join(two, 'config.json'), JSON.stringify({ ...config, encoder_attention_heads: 2 }))
    const files = listAudio(join(ravdessDir, 'Actor_04')).slice(0, 6)
    const cacheDir = join(tmp, 'heads-cache')
    const a = await extractEmbeddings(files, { encoder: four, device: 'cpu', precision: 'fp32', cacheDir })
    const b = await extractEmbeddings(files, { encoder: two, device: 'cpu', precision: 'fp32', cacheDir })
    t.is(a.modelSha256, b.modelSha256)
    t.deepEqual([a.heads, b.heads], [4, 2])
    t.deepEqual(b.cache, { hits: 0, misses: 6, writes: 6 }, 'the head count is part of the cache key')
    t.notDeepEqual(Array.from(a.data), Array.from(b.data))
    const checkpointDir = join(tmp, 'heads-model')
    await train({
      model: 'probe',
      labels: ['a', 'b'],
      train: { embedding: a, labels: [0, 1, 0, 1, 0, 1] },
      epochs: 1,
      device: 'cpu',
      checkpointDir,
      encoderSource: {
        source: 'folder',
        name: 'hf-heads-4',
        sha256: a.modelSha256,
        input: 'clip',
        pooling: 'mean',
        precision: 'fp32',
        speakerNorm: false,
        heads: 4,
      },
    })
    t.is((await loadModel(checkpointDir, { encoder: four })).meta.spec.inputs.embedding?.encoder?.heads, 4)
    const wrong = await loadModel(checkpointDir, { encoder: two })
    await t.throwsAsync(wrong.predict(files.slice(0, 1), { strict: true }), {
      code: 'MODEL_NOT_FOUND',
      message: /4 attention heads, but this folder's config.json gives 2/,
    } as never)
  },
)

test('a folder with only PyTorch pickles is refused by name, never unpickled', async (t) => {
  if (!python) return skip(t, 'no Python with torch 2.11 to write the pickle: skipped')
  const dir = writeHfFolder(join(tmp, 'hf-pickle'), ['--random', '80', '--pickle-only'])
  const err = await t.throwsAsync(extractEmbeddings([join(tmp, 'none.wav')], { encoder: dir, device: 'cpu' }))
  t.is((err as EmotionPipelineError).code, 'MODEL_NOT_FOUND')
  t.regex(err!.message, /pytorch_model\.bin.*never unpickles/)
})

test('encoder weights holding NaN are NON_FINITE naming the file; doctor finds one flipped bit in an installed encoder', async (t) => {
  if (!python) return skip(t, 'no Python with torch 2.11 to write the Hugging Face layout: skipped')
  const dir = writeHfFolder(join(tmp, 'hf-nan'), ['--random', '80'])
  const weights = join(dir, 'model.safetensors')
  const bytes = readFileSync(weights)
  const dataStart = 8 + Number(bytes.readBigUInt64LE(0))
  bytes.writeFloatLE(Number.NaN, dataStart + 4 * 100)
  writeFileSync(weights, bytes)
  const input = [{ samples: new Float32Array(16000), sampleRate: 16000 }]
  const err = await t.throwsAsync(extractEmbeddings(input, { encoder: dir, device: 'cpu' }))
  t.is((err as EmotionPipelineError).code, 'NON_FINITE')
  t.regex(err!.message, /hf-nan\/model\.safetensors: encoder weight .* NaN/)

  if (!installed('whisper-base')) return skip(t, NOT_INSTALLED('whisper-base'))
  const cache = join(tmp, 'flipped-cache')
  const copy = join(cache, 'encoders', 'whisper-base')
  mkdirSync(copy, { recursive: true })
  const model = readFileSync(join(installedEncoderDir('whisper-base'), 'model.bin'))
  model[model.length >> 1] ^= 0x01
  writeFileSync(join(copy, 'model.bin'), model)
  writeFileSync(join(copy, '.emotion-pipeline-complete'), `${ENCODERS['whisper-base'].sha256}\n`)
  const cli = resolve(import.meta.dirname, '..', 'dist', 'cli.js')
  const r = spawnSync(process.execPath, [cli, 'doctor', '--json'], {
    encoding: 'utf8',
    env: { ...process.env, EMOTION_PIPELINE_CACHE: cache },
  })
  const check = JSON.parse(r.stdout).checks.find((c: { name: string }) => c.name === 'encoder')
  t.false(check.ok)
  t.regex(check.detail, /damaged: model\.bin has SHA-256 [0-9a-f]{64}, not 905e5bf8/)
  t.regex(check.fix, /install-models --encoder whisper-base/)
  t.is(r.status, 1)
})
