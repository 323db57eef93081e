#!/usr/bin/env node
// Voice gate of `timeline`, measured: Earshot against an energy gate (and no gate) on a recording of
// real held-out clips with gaps, over white noise or the studio's room tone at stated SNRs. For each:
// how often a clip's timeline label (the label over most of its span) equals `predict` on the clip
// alone, seconds of gap labelled, seconds of clip left unlabelled. Trains a speaker-grouped encoder
// model first (actors 1–14 train, 15–16 validation, 17–20 held out) unless --run gives one.
//
//   node benches/vad.mjs [--data DIR] [--run DIR] [--clips 40] [--out docs/results/bench-vad-cpu.json]
import { readFileSync, writeFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { decodeAudio, loadRun } from '../dist/index.js'
import { defaultData, encoderRun } from './models.mjs'
import { concatenate, scoreTimeline } from './recording.mjs'

const { values } = parseArgs({
  options: {
    data: { type: 'string', default: defaultData },
    run: { type: 'string', default: resolve(import.meta.dirname, '../runs/bench-vad-model') },
    clips: { type: 'string', default: '40' },
    out: { type: 'string' },
  },
})
await encoderRun(values.data, values.run)
const model = await loadRun(values.run, { device: 'cpu' })
const split = JSON.parse(readFileSync(join(values.run, 'split.json'), 'utf8'))
const test = split.test
const n = Math.min(Number(values.clips), test.length)
const items = Array.from({ length: n }, (_, i) => test[Math.floor((i * test.length) / n)])
const rate = 16000
const clips = []
for (const item of items) clips.push((await decodeAudio(item.path, { sampleRate: rate })).samples)
const alone = await model.predict(
  clips.map((samples) => ({ samples, sampleRate: rate })),
  { strict: true },
)
const aloneLabels = alone.map((r) => r.label)
const truth = items.map((i) => i.label)
const share = (xs) => xs.filter(Boolean).length / xs.length
const rows = []
for (const noise of ['room', 'white']) {
  for (const snrDb of [20, 10, 0]) {
    const recording = concatenate(clips, { rate, snrDb, noise, gapSeconds: 2.5, seed: 7 })
    for (const vad of ['earshot', 'energy', 'off']) {
      const started = performance.now()
      const timeline = await model.timeline({ samples: recording.samples, sampleRate: rate }, { vad })
      const seconds = (performance.now() - started) / 1000
      const s = scoreTimeline(timeline, recording.spans, recording.gaps)
      rows.push({
        noise,
        snrDb,
        vad,
        agreesWithPredict: share(s.clipLabels.map((l, i) => l === aloneLabels[i])),
        accuracy: share(s.clipLabels.map((l, i) => l === truth[i])),
        gapLabelledShare: s.gapLabelledSeconds / s.gapSeconds,
        gapLabelledSeconds: s.gapLabelledSeconds,
        gapSeconds: s.gapSeconds,
        clipUnlabelledShare: s.clipUnlabelledSeconds / s.clipSeconds,
        realTimeFactor: timeline.seconds / seconds,
      })
      const r = rows.at(-1)
      console.error(
        `${noise.padEnd(5)} SNR ${String(snrDb).padStart(2)} dB  ${vad.padEnd(7)}  agrees ${(r.agreesWithPredict * 100).toFixed(1)} %  accuracy ${(r.accuracy * 100).toFixed(1)} %  gap labelled ${(r.gapLabelledShare * 100).toFixed(1)} %  clip unlabelled ${(r.clipUnlabelledShare * 100).toFixed(1)} %  ${r.realTimeFactor.toFixed(0)}× real time`,
      )
    }
  }
}
const result = {
  machine: { cpu: cpus()[0]?.model, cores: cpus().length },
  run: values.run,
  model: model.run,
  clips: n,
  speakers: [...new Set(items.map((i) => i.speaker))],
  predictAccuracy: share(aloneLabels.map((l, i) => l === truth[i])),
  gapSeconds: 2.5,
  rows,
}
console.log(JSON.stringify(result, null, 1))
if (values.out) writeFileSync(values.out, `${JSON.stringify(result, null, 1)}\n`)
