import test from 'ava'
import { existsSync } from 'node:fs'
import { basename } from 'node:path'
import { bundledWhisperDir } from '../src/dev.js'
import { EmotionPipelineError, Tokenizer, transcribe, wordErrorRate } from '../src/index.js'
import { skip, haveWavs, NO_WAVS, listAudio, tempDir, wavDir } from './helpers.js'

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
