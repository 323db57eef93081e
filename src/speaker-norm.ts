// Per-speaker standardisation of encoder states for training (`speakerNorm`: every speaker's clips,
// test speakers included). The arithmetic is the core's (`encoder::speaker_norm`), which prediction
// from audio also uses with a new speaker's calibration clips.
import type { DatasetItem } from './dataset.js'
import { callNative } from './errors.js'
import { native } from './native.js'

/** Rows `[n, layers, width]` of encoder states (a `TrainSet`'s `embedding`). */
type StateRows = { data: Float32Array; shape: [number, number, number] }

/**
 * Standardises each part's embeddings per speaker (`DatasetItem.speaker`), all parts together. The
 * parts get copies; the input arrays are not changed.
 */
export function normaliseBySpeaker(parts: { items: DatasetItem[]; embedding?: StateRows }[]): void {
  const withStates = parts.filter((p) => p.embedding)
  if (withStates.length === 0) return
  const per = withStates[0].embedding!.shape[1] * withStates[0].embedding!.shape[2]
  const speakers: string[] = []
  const ids: number[] = []
  const all = new Float32Array(withStates.reduce((n, p) => n + p.embedding!.data.length, 0))
  let offset = 0
  for (const part of withStates) {
    all.set(part.embedding!.data, offset)
    offset += part.embedding!.data.length
    for (const item of part.items) {
      if (!speakers.includes(item.speaker)) speakers.push(item.speaker)
      ids.push(speakers.indexOf(item.speaker))
    }
  }
  const standardised = callNative(() => native.standardiseBySpeaker(all, per, Int32Array.from(ids)))
  offset = 0
  for (const part of withStates) {
    const length = part.embedding!.data.length
    part.embedding = { data: standardised.slice(offset, offset + length), shape: part.embedding!.shape }
    offset += length
  }
}
