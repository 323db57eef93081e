#!/usr/bin/env node
// Whisper transcription: word error rate against the two RAVDESS sentences, clips per second, and the
// cached second pass. Prints JSON.   node benches/whisper.mjs [--clips 240] [--batch 8] [--data DIR]
import { mkdtempSync, readdirSync, statSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { basename, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { bundledWhisperDir } from '../dist/dev.js'
import { transcribe, wordErrorRate } from '../dist/index.js'

const { values } = parseArgs({
  options: {
    data: { type: 'string', default: process.env.RAVDESS_DIR ?? resolve(import.meta.dirname, '../../shared/data/ravdess') },
    clips: { type: 'string', default: '240' },
    batch: { type: 'string', default: '8' },
    'model-dir': { type: 'string', default: process.env.EMOTION_PIPELINE_WHISPER_DIR ?? bundledWhisperDir() },
  },
})
const walk = (d) =>
  readdirSync(d).flatMap((n) =>
    statSync(join(d, n)).isDirectory() ? walk(join(d, n)) : /\.(wav|flac|ogg|mp3)$/i.test(n) ? [join(d, n)] : [],
  )
const all = walk(values.data).sort()
const n = Math.min(Number(values.clips), all.length)
// Every k-th clip: all actors, emotions and both sentences.
const files = Array.from({ length: n }, (_, i) => all[Math.floor((i * all.length) / n)])
const sentences = { '01': 'Kids are talking by the door', '02': 'Dogs are sitting by the door' }
const cacheDir = mkdtempSync(join(tmpdir(), 'ep-whisper-bench-'))
const options = { modelDir: values['model-dir'], cacheDir, batchSize: Number(values.batch) }
const t0 = performance.now()
const out = await transcribe(files, options)
const seconds = (performance.now() - t0) / 1000
const t1 = performance.now()
await transcribe(files, options)
const cachedSeconds = (performance.now() - t1) / 1000
const wers = out.map((r) => wordErrorRate(sentences[basename(r.path).split('-')[4]], r.text))
const errors = out.filter((_, i) => wers[i] > 0).map((r) => `${basename(r.path)}: "${r.text}"`)
console.log(
  JSON.stringify(
    {
      benchmark: 'whisper-tiny.en',
      machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model },
      clips: files.length,
      meanWer: +(wers.reduce((a, b) => a + b, 0) / wers.length).toFixed(4),
      clipsWithErrors: errors.length,
      examples: errors.slice(0, 5),
      seconds: +seconds.toFixed(1),
      clipsPerSecond: +(files.length / seconds).toFixed(2),
      projected1200ClipsMinutes: +(1200 / (files.length / seconds) / 60).toFixed(1),
      cachedSeconds: +cachedSeconds.toFixed(2),
    },
    null,
    2,
  ),
)
