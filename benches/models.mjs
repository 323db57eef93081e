// Models the inference benchmarks use, trained once into runs/ when missing: the default encoder
// model with a speaker split (actors 1–14 train, 15–16 validation, 17–20 held out), and a small CNN.
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { trainPipeline } from '../dist/index.js'

export const defaultData = process.env.RAVDESS_DIR ?? resolve(import.meta.dirname, '../../shared/data/ravdess')
const actors = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => `actor_${String(from + i).padStart(2, '0')}`)

/** A run with the default (encoder) model; trained into `dir` unless it holds one. */
export async function encoderRun(data, dir = resolve(import.meta.dirname, '../runs/bench-vad-model')) {
  if (!existsSync(join(dir, 'metrics.json'))) {
    console.error(`training the encoder model (speaker split) into ${dir}…`)
    await trainPipeline({
      data,
      out: dir,
      models: ['encoder'],
      overwrite: true,
      split: { strategy: 'speaker', testSpeakers: actors(17, 20), valSpeakers: actors(15, 16) },
    })
  }
  return dir
}

/** A run with the audio CNN (its speed does not depend on its accuracy: 64 clips, 2 epochs). */
export async function cnnRun(data, dir = resolve(import.meta.dirname, '../runs/bench-predict-cnn')) {
  if (!existsSync(join(dir, 'metrics.json'))) {
    console.error(`training a CNN into ${dir}…`)
    await trainPipeline({ data, out: dir, models: ['audio'], maxItems: 64, epochs: 2, overwrite: true })
  }
  return dir
}
