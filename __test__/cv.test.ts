import test from 'ava'
import { copyFileSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { crossValidate, EmotionPipelineError } from '../src/index.js'
import type { CrossValidateEvent, DatasetItem } from '../src/index.js'
import { RECOMMENDED_SPEAKER_CV } from '../src/report.js'
import { haveRavdess, NO_DATA, ravdessDir, skip, tempDir } from './helpers.js'

const SMALL = { audio: { channels: [8, 16], hidden: [16, 8] } }
const quick = (out: string) => ({
  data: ravdessDir,
  out,
  models: ['audio' as const],
  maxItems: 96,
  epochs: 1,
  device: 'cpu' as const,
  folds: 3,
  train: { audio: SMALL },
})

const speakersOf = (items: DatasetItem[]) => new Set(items.map((i) => i.speaker))
const readSplit = (dir: string) =>
  JSON.parse(readFileSync(join(dir, 'split.json'), 'utf8')) as { train: DatasetItem[]; val: DatasetItem[]; test: DatasetItem[] }

test('speaker folds: test speakers are disjoint across folds and never in a fold’s training or validation set; a stopped cross-validation goes on', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const out = tempDir('ep-cv-')
  // Fold 0 only, as a first session would.
  const first = await crossValidate({ ...quick(out), only: [0] })
  t.deepEqual(first.finished, [0])
  t.is(first.models.audio?.folds, 1)
  const fold0Weights = join(out, 'fold-0', 'models', 'audio', 'best.safetensors')
  const before = statSync(fold0Weights).mtimeMs

  // The full run goes on: fold 0 is evaluated from its finished checkpoint, folds 1 and 2 train.
  const events: CrossValidateEvent[] = []
  const result = await crossValidate({ ...quick(out), onProgress: (e) => events.push(e) })
  t.deepEqual(result.finished, [0, 1, 2])
  t.is(statSync(fold0Weights).mtimeMs, before, 'fold 0 was not trained again')
  t.deepEqual(
    events.filter((e) => e.type === 'fold').map((e) => e.fold),
    [0, 1, 2],
  )

  const seen = new Set<string>()
  let testClips = 0
  for (const fold of [0, 1, 2]) {
    const split = readSplit(join(out, `fold-${fold}`))
    const test = speakersOf(split.test)
    for (const s of test) t.false(seen.has(s), `speaker ${s} is in two folds' test sets`)
    for (const s of test) seen.add(s)
    for (const s of [...speakersOf(split.train), ...speakersOf(split.val)])
      t.false(test.has(s), `fold ${fold}: test speaker ${s} in training`)
    t.true(split.val.length > 0, 'each fold validates on held-out training speakers')
    testClips += split.test.length
    t.deepEqual(result.testSpeakers[fold], [...test].sort())
  }
  const audio = result.models.audio!
  t.is(audio.folds, 3)
  t.is(
    audio.confusion.flat().reduce((a, b) => a + b, 0),
    testClips,
    'the pooled confusion matrix counts every test clip once',
  )
  for (const k of ['accuracy', 'uar', 'weightedF1'] as const) {
    t.true(audio[k].mean >= 0 && audio[k].mean <= 1 && audio[k].std >= 0, `${k} ${JSON.stringify(audio[k])}`)
  }
  t.is(audio.perFold.length, 3)
  const cv = JSON.parse(readFileSync(join(out, 'cv.json'), 'utf8'))
  t.is(cv.format, 'emotion-pipeline/cv@1')
  t.deepEqual(cv.models.audio.perFold, audio.perFold)
  const report = readFileSync(join(out, 'report.md'), 'utf8')
  t.regex(report, /\| audio \| 3 \| \d+\.\d\d ± \d+\.\d\d % \|/)
  t.true(readdirSync(out).includes('confusion-audio.png'))
})

test('cross-validation refuses one speaker and more folds than speakers, naming the option', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const one = tempDir('ep-cv-one-')
  const actor = join(ravdessDir, 'Actor_01')
  mkdirSync(join(one, 'Actor_01'))
  for (const f of readdirSync(actor).slice(0, 8)) copyFileSync(join(actor, f), join(one, 'Actor_01', f))
  const single = await t.throwsAsync(crossValidate({ ...quick(tempDir('ep-cv-x-')), data: one }))
  t.true(single instanceof EmotionPipelineError)
  t.is((single as EmotionPipelineError).code, 'DATASET')
  t.regex(single!.message, /at least 2 speakers, found 1/)

  const many = await t.throwsAsync(crossValidate({ ...quick(tempDir('ep-cv-y-')), folds: 21 }))
  t.is((many as EmotionPipelineError).code, 'INVALID_OPTION')
  t.regex(many!.message, /`folds`: 21 folds \(--folds\) but only 20 speakers/)
  const only = await t.throwsAsync(crossValidate({ ...quick(tempDir('ep-cv-z-')), only: [3] }))
  t.regex(only!.message, /`only`/)
})

test('the speaker-independent figure the demo prints is the one docs/RESULTS.md reports', (t) => {
  const { accuracy: byPrecision, folds, epochs } = RECOMMENDED_SPEAKER_CV
  const results = readFileSync(join(import.meta.dirname, '..', 'docs', 'RESULTS.md'), 'utf8')
  for (const [precision, accuracy] of Object.entries(byPrecision)) {
    t.true(accuracy.mean > 0 && accuracy.std > 0, `${precision}: measured, not a placeholder`)
    const figure = `${(accuracy.mean * 100).toFixed(2)} ± ${(accuracy.std * 100).toFixed(2)} %`
    t.true(results.includes(figure), `docs/RESULTS.md states ${figure} (${precision} encoder states)`)
  }
  t.regex(results, new RegExp(`${folds} folds[^\\n]*${epochs} epochs`))
})
