// A live stream over a loaded model: chunks pushed in any sizes, segments out as their windows
// complete. Pushes are queued so chunks reach the core in order, however the caller awaits them.
import { awaitNative, invalidOption } from './errors.js'
import type { native } from './native.js'
import type { Segment } from './generated/results.js'
import type { PredictOptions } from './predict.js'
import { WINDOW_KEYS } from './predict.js'

export interface StreamOptions extends Omit<PredictOptions, 'topK' | 'strict' | 'longInput' | 'batchSize' | 'signal' | 'calibration'> {
  /** Rate of the pushed samples, Hz. */
  sampleRate: number
}

/** The keys `stream` takes (complete by the compiler, as `PREDICT_KEYS`). */
export const STREAM_KEYS = Object.keys({ sampleRate: true, ...WINDOW_KEYS } satisfies Record<keyof StreamOptions, true>)

/** `model.stream(options)`: push mono `Float32Array` chunks, get completed segments. */
export class EmotionStream {
  private queue: Promise<unknown> = Promise.resolve()
  private ended = false

  constructor(
    private readonly inner: InstanceType<typeof native.NativeStream>,
    readonly labels: string[],
  ) {}

  /** Adds a chunk; resolves to the segments it completes (in order across calls). */
  push(chunk: Float32Array): Promise<Segment[]> {
    if (!(chunk instanceof Float32Array)) throw invalidOption('chunk', 'must be a Float32Array of mono samples')
    return this.enqueue(chunk, false)
  }

  /** Scores what is left (the window aligned to the end); the stream then takes no more chunks. */
  end(): Promise<Segment[]> {
    return this.enqueue(new Float32Array(0), true)
  }

  /** Segments of every chunk of `chunks` (an async iterable: a microphone, a WebSocket), then of the end. */
  async *segments(chunks: AsyncIterable<Float32Array> | Iterable<Float32Array>): AsyncGenerator<Segment> {
    for await (const chunk of chunks) yield* await this.push(chunk)
    yield* await this.end()
  }

  private enqueue(chunk: Float32Array, end: boolean): Promise<Segment[]> {
    if (this.ended) return Promise.reject(invalidOption('stream', 'the stream has ended'))
    if (end) this.ended = true
    const next = this.queue.then(async () => JSON.parse(await awaitNative(this.inner.push(chunk, end))) as Segment[])
    this.queue = next.catch(() => undefined)
    return next
  }
}
