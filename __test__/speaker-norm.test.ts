import test from 'ava'
import { normaliseBySpeaker } from '../src/speaker-norm.js'
import type { DatasetItem } from '../src/index.js'

test('per-speaker normalisation standardises each dimension per speaker, across parts, without touching the input arrays', (t) => {
  // Two speakers, each with a voice offset and scale of their own, over two parts.
  const item = (speaker: string) => ({ speaker }) as DatasetItem
  const rows = (values: number[][]) => ({
    data: Float32Array.from(values.flat()),
    shape: [values.length, 1, 2] as [number, number, number],
  })
  const train = {
    items: [item('a'), item('b'), item('a')],
    embedding: rows([
      [10, 1],
      [100, -5],
      [14, 3],
    ]),
  }
  const test_ = {
    items: [item('b'), item('a')],
    embedding: rows([
      [300, -1],
      [12, 2],
    ]),
  }
  const before = Float32Array.from(train.embedding.data)
  const originalTrain = train.embedding.data
  normaliseBySpeaker([train, test_])
  t.deepEqual(originalTrain, before, 'the input arrays are copied, not changed')
  const bySpeaker: Record<string, number[][]> = { a: [], b: [] }
  for (const part of [train, test_])
    for (const [i, it] of part.items.entries()) bySpeaker[it.speaker].push([...part.embedding.data.subarray(i * 2, i * 2 + 2)])
  for (const [speaker, vs] of Object.entries(bySpeaker)) {
    for (const d of [0, 1]) {
      const mean = vs.reduce((s, v) => s + v[d], 0) / vs.length
      const variance = vs.reduce((s, v) => s + (v[d] - mean) ** 2, 0) / vs.length
      t.true(Math.abs(mean) < 1e-5, `speaker ${speaker} dim ${d} mean ${mean}`)
      t.true(Math.abs(variance - 1) < 1e-4, `speaker ${speaker} dim ${d} variance ${variance}`)
    }
  }
  // Speaker a: dim 0 is 10, 14, 12 → -1.22, 1.22, 0.
  t.true(Math.abs(train.embedding.data[0] + Math.sqrt(1.5)) < 1e-5)
})
