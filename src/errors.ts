import { ERROR_CODES } from './generated/results.js'
import type { ErrorCode } from './generated/results.js'

/** Stable codes carried by every error this library throws or rejects with (the core's `ErrorCode`). */
export type { ErrorCode }

export class EmotionPipelineError extends Error {
  readonly code: ErrorCode
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'EmotionPipelineError'
    this.code = code
  }
}

const KNOWN = new Set<string>(ERROR_CODES)

/** Turns an error from the addon (which carries `code`) into an `EmotionPipelineError`. */
export function fromNative(err: unknown): EmotionPipelineError {
  if (err instanceof EmotionPipelineError) return err
  const e = err as { code?: unknown; message?: unknown }
  const code = typeof e?.code === 'string' && KNOWN.has(e.code) ? (e.code as ErrorCode) : 'INTERNAL'
  const message = typeof e?.message === 'string' ? e.message : String(err)
  return new EmotionPipelineError(code, message, { cause: err })
}

/** Runs a native call, rethrowing its error as `EmotionPipelineError`. */
export function callNative<T>(fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    throw fromNative(err)
  }
}

export async function awaitNative<T>(promise: Promise<T>): Promise<T> {
  try {
    return await promise
  } catch (err) {
    throw fromNative(err)
  }
}

export function invalidOption(option: string, reason: string): EmotionPipelineError {
  return new EmotionPipelineError('INVALID_OPTION', `invalid option \`${option}\`: ${reason}`)
}

/**
 * The candidate nearest to `name` (case ignored; edits are insertions, deletions, substitutions and
 * swaps of neighbours, at most a third of its letters), if any.
 */
export function closest(name: string, candidates: readonly string[]): string | undefined {
  const distance = (a: string, b: string) => {
    const d = Array.from({ length: a.length + 1 }, (_, i) =>
      Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
    )
    for (let i = 1; i <= a.length; i++)
      for (let j = 1; j <= b.length; j++) {
        d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
        if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1)
      }
    return d[a.length][b.length]
  }
  const scored = candidates.map((c) => ({ c, d: distance(name.toLowerCase(), c.toLowerCase()) }))
  const best = scored.sort((x, y) => x.d - y.d)[0]
  return best && best.d <= Math.max(1, Math.floor(name.length / 3)) ? best.c : undefined
}

/** INVALID_OPTION for each key of `options` not in `known`, suggesting the nearest known one. */
export function checkKnownOptions(options: object, known: readonly string[], what: string): void {
  for (const key of Object.keys(options)) {
    if (known.includes(key)) continue
    const near = closest(key, known)
    throw invalidOption(key, `${what} has no such option${near ? ` (did you mean \`${near}\`?)` : ''}; it takes ${known.join(', ')}`)
  }
}

/**
 * Options as JSON for the core. JSON has no Infinity or NaN (`JSON.stringify` writes `null`), so a
 * non-finite number is refused here, naming its option, instead of reaching the core as `null`.
 */
export function optionsJson(value: unknown, prefix = ''): string {
  const walk = (v: unknown, path: string): void => {
    if (typeof v === 'number' && !Number.isFinite(v)) throw invalidOption(path || 'options', `must be a finite number, got ${v}`)
    if (Array.isArray(v)) {
      for (const [i, x] of v.entries()) walk(x, `${path}[${i}]`)
    } else if (v && typeof v === 'object' && !ArrayBuffer.isView(v)) {
      for (const [k, x] of Object.entries(v)) walk(x, path ? `${path}.${k}` : k)
    }
  }
  walk(value, prefix)
  return JSON.stringify(value)
}
