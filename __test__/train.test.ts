import test from 'ava'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import {
  decodeAudio,
  EmotionPipelineError,
  extractEmbeddings,
  extractMel,
  indexDataset,
  installedEncoderDir,
  loadModel,
  train,
} from '../src/index.js'
import type { TrainEvent, TrainSet } from '../src/index.js'
import { skip, haveRavdess, NO_DATA, ravdessDir, tempDir } from './helpers.js'

const EMOTIONS = ['neutral', 'calm', 'happy', 'sad', 'angry', 'fearful', 'disgust', 'surprised']
// A small CNN keeps these CPU tests quick; the reference widths are the defaults.
const SMALL = { channels: [16, 32, 64, 64], hidden: [64, 32], dropout: 0 }

let subset: Promise<{ set: TrainSet; paths: string[] }> | undefined
/** Two clips per emotion from actor 1: 16 real clips. */
function realSubset() {
  subset ??= (async () => {
    const index = await indexDataset(join(ravdessDir, 'Actor_01'))
    const items = EMOTIONS.flatMap((e) => index.items.filter((i) => i.label === e).slice(0, 2))
    const paths = items.map((i) => i.path)
    const mel = await extractMel(paths, { device: 'cpu' })
    return { set: { mel: { data: mel.data, shape: mel.shape }, labels: items.map((i) => EMOTIONS.indexOf(i.label)) }, paths }
  })()
  return subset
}

test('the audio CNN overfits 16 real clips to 100% training accuracy, and predicts from its checkpoint', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const { set, paths } = await realSubset()
  const checkpointDir = tempDir('ep-overfit-')
  const events: TrainEvent[] = []
  const result = await train({
    train: set,
    val: set,
    epochs: 40,
    batchSize: 4,
    accumulation: 1,
    audio: SMALL,
    optim: { lr: 3e-3 },
    device: 'cpu',
    // Memorising 16 clips is the point here: the reference recipe, without the recommended augmentation.
    preset: 'reference',
    checkpointDir,
    mel: {},
    onProgress: (e) => events.push(e),
  })
  // amp 'auto' with the reference preset: fp32 on the CPU, nothing to warn about.
  t.is(result.precision, 'fp32')
  t.like(result.config, { preset: 'reference', lrSchedule: 'constant', labelSmoothing: 0, augment: { specAugment: null, mixup: null } })
  t.is(result.history.length, 40)
  // Training accuracy is measured with dropout on; the inference-mode check below is the one that must be 100 %.
  t.true(Math.max(...result.history.map((h) => h.trainAccuracy)) >= 0.9, 'training accuracy reaches 90 %')
  // `val` is scored with the best checkpoint: the training clips again, in inference mode.
  t.is(result.val!.accuracy, 1, `accuracy on the training clips: ${result.val!.accuracy}`)
  t.deepEqual(
    result.val!.confusion.map((row, i) => row[i]),
    EMOTIONS.map(() => 2),
  )
  t.true(result.history.at(-1)!.trainLoss < result.history[0].trainLoss / 4)
  t.false(
    events.some((e) => e.type === 'warning'),
    'no warning',
  )
  t.true(events.some((e) => e.type === 'epochEnd'))
  t.true(existsSync(join(checkpointDir, 'best.safetensors')) && existsSync(join(checkpointDir, 'last.state.json')))

  const model = await loadModel(checkpointDir, { device: 'cpu' })
  t.deepEqual(model.labels, EMOTIONS)
  const predictions = await model.predictFiles(paths)
  t.is(predictions.filter((p, i) => p.index === set.labels[i]).length, 16)
  t.true(Math.abs(predictions[0].probabilities.reduce((a, b) => a + b, 0) - 1) < 1e-5)
})

test('an AbortSignal stops training with CANCELLED and leaves a resumable checkpoint', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const { set } = await realSubset()
  const checkpointDir = tempDir('ep-cancel-')
  const controller = new AbortController()
  const err = await t.throwsAsync(
    train({
      train: set,
      epochs: 50,
      batchSize: 4,
      accumulation: 1,
      audio: SMALL,
      device: 'cpu',
      checkpointDir,
      progressIntervalMs: 0,
      signal: controller.signal,
      onProgress: (e) => {
        if (e.type === 'epochEnd' && e.record.epoch === 2) controller.abort()
      },
    }),
    { instanceOf: EmotionPipelineError },
  )
  t.is(err!.code, 'CANCELLED')
  t.true(existsSync(join(checkpointDir, 'last.state.json')))
  const resumed = await train({
    train: set,
    epochs: 4,
    batchSize: 4,
    accumulation: 1,
    audio: SMALL,
    device: 'cpu',
    checkpointDir,
    resume: true,
  })
  t.is(resumed.history.length, 4)
  t.true(resumed.history[0].epoch === 1 && resumed.history[3].epoch === 4)
})

test('features as extractMel and extractEmbeddings return them: the model records how they were made and predicts audio the same way', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const { paths } = await realSubset()
  const labels = paths.map((p) => EMOTIONS.indexOf(EMOTIONS[Number(p.split('/').pop()!.split('-')[2]) - 1]))
  // A front end other than the default: 64 bands at 16 kHz. No `mel` option given to train().
  const front = { sampleRate: 16000, nMels: 64, nFft: 512, hopLength: 160, frames: 300 }
  const mel = await extractMel(paths, { device: 'cpu', mel: front })
  const dir = tempDir('ep-mel-config-')
  await train({ train: { mel, labels }, epochs: 2, batchSize: 4, accumulation: 1, audio: SMALL, device: 'cpu', checkpointDir: dir })
  const model = await loadModel(dir, { device: 'cpu' })
  t.like(model.meta.spec.inputs.mel?.config, { sampleRate: 16000, nMels: 64, frames: 300 })
  // Exactly one 3 s window of audio, so predict scores it whole: the same as its rows made by hand.
  const samples = (await decodeAudio(paths[0], { sampleRate: 16000 })).samples.subarray(0, 48000)
  const [fromAudio] = await model.predict([{ samples, sampleRate: 16000 }], { strict: true })
  const [fromRows] = await model.predictFeatures({ mel: await extractMel([{ samples, sampleRate: 16000 }], { device: 'cpu', mel: front }) })
  const gap = Math.max(...fromRows.probabilities.map((p, k) => Math.abs(p - (fromAudio as { probabilities: number[] }).probabilities[k])))
  t.true(gap < 1e-6, `${gap}`)
  // States: the identity comes with them, so predicting audio needs no encoderSource by hand.
  if (!installedEncoderDir('whisper-tiny.en')) return t.log('whisper-tiny.en is not installed: the encoder half was not checked')
  const embedding = await extractEmbeddings(paths, { encoder: 'whisper-tiny.en', precision: 'fp32', device: 'cpu' })
  t.like(embedding.encoderSource, { source: 'installed', name: 'whisper-tiny.en', sha256: embedding.modelSha256, input: 'clip' })
  const headDir = tempDir('ep-states-identity-')
  await train({
    model: 'probe',
    train: { embedding, labels },
    epochs: 2,
    batchSize: 4,
    accumulation: 1,
    device: 'cpu',
    checkpointDir: headDir,
  })
  const head = await loadModel(headDir, { device: 'cpu' })
  const [row] = await head.predict([paths[0]], { strict: true })
  t.is((row as { probabilities: number[] }).probabilities.length, 8)
})

test('invalid training options are INVALID_OPTION naming the field', async (t) => {
  const set: TrainSet = { mel: { data: new Float32Array(2 * 8 * 8), shape: [2, 8, 8] }, labels: [0, 1] }
  const cases: [object, RegExp][] = [
    [{ epochs: 0 }, /epochs/],
    [{ batchSize: 0 }, /batchSize/],
    [{ optim: { lr: -1 } }, /optim\.lr/],
    [{ model: 'text' }, /vocabSize/],
    [{ amp: 'fp8' }, /unknown variant `fp8`/],
    [{ epoch: 3 }, /unknown field `epoch`/],
    [{ train: { ...set, labels: [0, 9] } }, /train\.labels\[1\]/],
    [{ resume: true }, /resume/],
    // Values of the right type that make no sense are refused by the core, naming the option.
    [{ audio: { channels: [32, 0] } }, /`audio\.channels`: .*≥ 1, got 0/],
    [{ text: { hidden: 0 } }, /`text\.hidden`/],
    [{ optim: { lr: Number.POSITIVE_INFINITY } }, /`optim\.lr`: must be a finite number/],
  ]
  for (const [options, pattern] of cases) {
    const err = await t.throwsAsync(train({ train: set, device: 'cpu', ...options }), undefined, JSON.stringify(options))
    t.is((err as EmotionPipelineError).code, 'INVALID_OPTION', JSON.stringify(options))
    t.regex(err!.message, pattern)
  }
  const nan = new Float32Array(2 * 8 * 8)
  nan[70] = NaN
  const err = await t.throwsAsync(train({ train: { mel: { data: nan, shape: [2, 8, 8] }, labels: [0, 1] }, device: 'cpu' }))
  t.is((err as EmotionPipelineError).code, 'NON_FINITE')
  t.regex(err!.message, /row 1/)
})

test('encoderHead.speakerAdversary takes its speaker count from train.speakerIds and refuses a set without them', async (t) => {
  const [n, layers, width] = [48, 3, 8]
  const data = Float32Array.from({ length: n * layers * width }, (_, i) => Math.sin(i * 0.7) + (Math.floor(i / (layers * width)) % 3))
  const labels = Int32Array.from({ length: n }, (_, i) => i % 3)
  const speakerIds = Int32Array.from({ length: n }, (_, i) => Math.floor(i / 3) % 5)
  const options = {
    model: 'encoder' as const,
    labels: ['a', 'b', 'c'],
    epochs: 2,
    device: 'cpu' as const,
    encoderHead: { hidden: [8], speakerAdversary: 0.3 },
  }
  const r = await train({ ...options, train: { embedding: { data, shape: [n, layers, width] }, labels, speakerIds } })
  t.like(r.config.encoderHead, { speakerAdversary: 0.3, speakers: 5 })
  t.true(r.history.every((h) => Number.isFinite(h.trainLoss)))
  const err = await t.throwsAsync(train({ ...options, train: { embedding: { data, shape: [n, layers, width] }, labels } }), {
    instanceOf: EmotionPipelineError,
  })
  t.is(err!.code, 'INVALID_OPTION')
  t.regex(err!.message, /encoderHead\.speakers.*train\.speakerIds/)
})
