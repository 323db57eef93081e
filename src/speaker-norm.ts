// Per-speaker standardisation of encoder states: each dimension to mean 0 and deviation 1 over one
// speaker's clips. Used in training (`speakerNorm`, every speaker's clips, test speakers included)
// and in prediction (a new speaker's unlabelled calibration clips).
import type { DatasetItem } from './dataset.js'

export interface SpeakerStats {
  mean: Float64Array
  std: Float64Array
}

/** Mean and deviation of each dimension over `rows` (equal-length rows of one speaker). */
export function speakerStats(rows: Float32Array[]): SpeakerStats {
  const per = rows[0].length
  const mean = new Float64Array(per)
  const square = new Float64Array(per)
  for (const row of rows)
    for (let d = 0; d < per; d++) {
      mean[d] += row[d] / rows.length
      square[d] += (row[d] * row[d]) / rows.length
    }
  const std = mean.map((m, d) => Math.sqrt(Math.max(square[d] - m * m, 1e-8)))
  return { mean, std }
}

/** Standardises `row` in place with `stats`. */
export function standardise(row: Float32Array, stats: SpeakerStats): void {
  for (let d = 0; d < row.length; d++) row[d] = (row[d] - stats.mean[d]) / stats.std[d]
}

/**
 * Standardises each part's embeddings per speaker (`DatasetItem.speaker`), all parts together. The
 * parts get copies; the input arrays are not changed.
 */
/** Rows `[n, layers, width]` of encoder states (a `TrainSet`'s `embedding`). */
type StateRows = { data: Float32Array; shape: [number, number, number] }

export function normaliseBySpeaker(parts: { items: DatasetItem[]; embedding?: StateRows }[]): void {
  const bySpeaker = new Map<string, Float32Array[]>()
  for (const part of parts) {
    const e = part.embedding
    if (!e) continue
    const per = e.shape[1] * e.shape[2]
    const data = Float32Array.from(e.data)
    part.embedding = { data, shape: e.shape }
    for (const [i, item] of part.items.entries()) {
      const rows = bySpeaker.get(item.speaker) ?? []
      rows.push(data.subarray(i * per, (i + 1) * per))
      bySpeaker.set(item.speaker, rows)
    }
  }
  for (const rows of bySpeaker.values()) {
    const stats = speakerStats(rows)
    for (const row of rows) standardise(row, stats)
  }
}
