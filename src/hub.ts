// Encoders from the Hugging Face Hub, in the Hub's own cache layout (`$HF_HUB_CACHE`, the one Python's
// huggingface_hub reads and writes): `models--org--name/blobs/<etag>`, `snapshots/<commit>/<file>` as
// relative links to the blobs, `refs/<revision>` holding the commit. Files are fetched with download.ts
// (Range resume of `<blob>.incomplete`, progress) and checked against the Hub's ETag: the SHA-256 of an
// LFS file, the git blob id of a small one. `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE` are honoured.
// Why not @huggingface/hub: docs/DESIGN.md, "Encoders from the Hub".
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, isAbsolute, join, relative } from 'node:path'
import { download } from './download.js'
import type { DownloadProgress } from './download.js'
import { EmotionPipelineError } from './errors.js'

/** A Hub repository and revision: `org/name` or `org/name@revision` (a branch, tag or commit). */
export interface HubName {
  repo: string
  revision: string
}

const HUB_NAME = /^([A-Za-z0-9][\w.-]*\/[\w.-]+)(?:@([\w./-]+))?$/
const COMMIT = /^[0-9a-f]{40}$/

/** `org/name[@revision]` as a Hub name, or undefined when it is not one. */
export function parseHubName(spec: string): HubName | undefined {
  const m = HUB_NAME.exec(spec)
  if (!m || m[1].includes('..')) return undefined
  const revision = m[2] ?? 'main'
  // A revision names a ref file in the cache: no `.`/`..` segment, no leading slash.
  if (revision.split('/').some((part) => part === '' || part === '.' || part === '..')) return undefined
  return { repo: m[1], revision }
}

const HEX_ETAG = /^([0-9a-f]{40}|[0-9a-f]{64})$/

/** `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`. */
export function hubCacheDir(): string {
  if (process.env.HF_HUB_CACHE) return process.env.HF_HUB_CACHE
  if (process.env.HF_HOME) return join(process.env.HF_HOME, 'hub')
  const xdg = process.env.XDG_CACHE_HOME
  return join(xdg && isAbsolute(xdg) ? xdg : join(homedir(), '.cache'), 'huggingface', 'hub')
}

const endpoint = () => (process.env.HF_ENDPOINT || 'https://huggingface.co').replace(/\/+$/, '')
const offline = () => ['1', 'true', 'yes', 'on'].includes((process.env.HF_HUB_OFFLINE ?? '').toLowerCase())
const repoFolder = (repo: string) => join(hubCacheDir(), `models--${repo.replaceAll('/', '--')}`)

function authHeaders(): Record<string, string> {
  return process.env.HF_TOKEN ? { Authorization: `Bearer ${process.env.HF_TOKEN}` } : {}
}

interface FileMeta {
  commit: string
  etag: string
  bytes: number
  lfs: boolean
}

const notFound = (message: string) => new EmotionPipelineError('MODEL_NOT_FOUND', message)

/** HEAD of `resolve/<revision>/<file>`: the commit, ETag and size; undefined when the file does not exist. */
async function fileMeta(name: HubName, file: string, signal?: AbortSignal): Promise<FileMeta | undefined> {
  let url = `${endpoint()}/${name.repo}/resolve/${encodeURIComponent(name.revision)}/${file}`
  for (let hops = 0; hops < 5; hops++) {
    let response: Response
    try {
      response = await fetch(url, {
        method: 'HEAD',
        redirect: 'manual',
        headers: { ...authHeaders(), 'Accept-Encoding': 'identity' },
        signal,
      })
    } catch (err) {
      throw new EmotionPipelineError(
        'DOWNLOAD',
        `cannot reach the Hub at ${endpoint()} for ${name.repo}: ${(err as Error).message} (HF_HUB_OFFLINE=1 uses the cache only)`,
        { cause: err },
      )
    }
    const location = response.headers.get('location')
    // A relative redirect is a renamed repository: follow it (on the same host: the token goes only
    // there). An absolute one is the CDN: its headers say it all.
    if (response.status >= 300 && response.status < 400 && location?.startsWith('/') && !location.startsWith('//')) {
      const next = new URL(location, url)
      if (next.origin !== new URL(url).origin) throw new EmotionPipelineError('DOWNLOAD', `HEAD ${url} redirects off the Hub: ${location}`)
      url = next.toString()
      continue
    }
    if (response.status === 404) {
      const code = response.headers.get('x-error-code')
      if (code === 'EntryNotFound') return undefined
      throw notFound(
        `${name.repo}@${name.revision} is not on the Hub at ${endpoint()} (${code ?? 'HTTP 404'}); a private repository needs HF_TOKEN`,
      )
    }
    if (response.status === 401 || response.status === 403)
      throw notFound(`${name.repo} on the Hub refused access (HTTP ${response.status}): a gated or private repository needs HF_TOKEN`)
    if (response.status >= 400) throw new EmotionPipelineError('DOWNLOAD', `HEAD ${url} failed: HTTP ${response.status}`)
    const commit = response.headers.get('x-repo-commit')
    const etag = (response.headers.get('x-linked-etag') ?? response.headers.get('etag') ?? '').replace(/^W\//, '').replaceAll('"', '')
    const bytes = Number(response.headers.get('x-linked-size') ?? response.headers.get('content-length'))
    // They name files in the cache: a commit is 40 hex digits, an ETag a git blob id or a SHA-256.
    if (!commit || !COMMIT.test(commit) || !HEX_ETAG.test(etag) || !Number.isFinite(bytes) || bytes < 0)
      throw new EmotionPipelineError(
        'DOWNLOAD',
        `HEAD ${url} lacks valid X-Repo-Commit, ETag or size headers (got ${commit}, ${etag}, ${bytes})`,
      )
    return { commit, etag, bytes, lfs: response.headers.has('x-linked-etag') }
  }
  throw new EmotionPipelineError('DOWNLOAD', `too many redirects for ${url}`)
}

/** The blob of `file` in the cache, fetched and checked when missing, linked from the commit's snapshot. */
async function fetchFile(
  name: HubName,
  file: string,
  meta: FileMeta,
  options: { onProgress?: (p: DownloadProgress & { file: string }) => void; signal?: AbortSignal },
): Promise<void> {
  const folder = repoFolder(name.repo)
  const blob = join(folder, 'blobs', meta.etag)
  const pointer = join(folder, 'snapshots', meta.commit, file)
  // Already in the cache (a blob is named by its checksum and only renamed there once checked).
  if (existsSync(blob) && readlinkSafe(pointer) === relative(dirname(pointer), blob)) return
  const url = `${endpoint()}/${name.repo}/resolve/${meta.commit}/${file}`
  await download(
    url,
    blob,
    { bytes: meta.bytes, algorithm: meta.lfs ? 'sha256' : 'git-sha1', digest: meta.etag },
    { headers: authHeaders(), partSuffix: '.incomplete', signal: options.signal, onProgress: (p) => options.onProgress?.({ ...p, file }) },
  )
  mkdirSync(dirname(pointer), { recursive: true })
  const target = relative(dirname(pointer), blob)
  if (existsSync(pointer) && readlinkSafe(pointer) === target) return
  rmSync(pointer, { force: true })
  symlinkSync(target, pointer)
}

function readlinkSafe(path: string): string | undefined {
  try {
    return readlinkSync(path)
  } catch {
    return undefined
  }
}

/** The files of a Whisper encoder repository: CTranslate2's model.bin, or config.json with model.safetensors or shards. */
async function encoderFiles(name: HubName, signal?: AbortSignal): Promise<Map<string, FileMeta>> {
  const files = new Map<string, FileMeta>()
  let at = name
  const add = async (file: string) => {
    const meta = await fileMeta(at, file, signal)
    if (meta) files.set(file, meta)
    // Every later file at the commit the first one resolved to: a moving branch cannot mix commits.
    if (meta) at = { repo: name.repo, revision: meta.commit }
    return meta
  }
  if (await add('model.bin')) return files
  if (!(await add('config.json')))
    throw notFound(`${name.repo}@${name.revision} has neither model.bin nor config.json: not a Whisper encoder repository`)
  if (await add('model.safetensors')) return files
  const index = await add('model.safetensors.index.json')
  if (index) {
    await fetchFile(name, 'model.safetensors.index.json', index, { signal })
    const path = join(repoFolder(name.repo), 'snapshots', index.commit, 'model.safetensors.index.json')
    const shards = new Set(Object.values((JSON.parse(readFileSync(path, 'utf8')) as { weight_map: Record<string, string> }).weight_map))
    for (const shard of shards) {
      if (shard.includes('/') || shard.startsWith('.'))
        throw notFound(`${name.repo}: the index names a shard outside the repository: ${shard}`)
      if (!(await add(shard))) throw notFound(`${name.repo}: shard ${shard} named by the index is missing`)
    }
    return files
  }
  if (await fileMeta(at, 'pytorch_model.bin', signal))
    throw notFound(
      `${name.repo} has only PyTorch pickles (pytorch_model.bin), which this library never unpickles: use a repository with model.safetensors`,
    )
  throw notFound(`${name.repo}@${name.revision} has config.json but no model.safetensors: not a Whisper encoder repository`)
}

/** The snapshot folder of `name` in the cache without the network (HF_HUB_OFFLINE), or undefined. */
function cachedSnapshot(name: HubName): string | undefined {
  const folder = repoFolder(name.repo)
  const ref = join(folder, 'refs', name.revision)
  const commit = COMMIT.test(name.revision) ? name.revision : existsSync(ref) ? readFileSync(ref, 'utf8').trim() : undefined
  const snapshot = commit && join(folder, 'snapshots', commit)
  const complete = snapshot && ['model.bin', 'model.safetensors', 'model.safetensors.index.json'].some((f) => existsSync(join(snapshot, f)))
  return complete ? snapshot : undefined
}

/**
 * The local folder of the Whisper encoder `name` on the Hub, downloaded into the Hugging Face cache when
 * missing (resumed, checked), or from the cache alone with `HF_HUB_OFFLINE=1`. Returns the folder and the
 * commit it resolved to.
 */
export async function hubEncoder(
  name: HubName,
  options: { onProgress?: (p: DownloadProgress & { file: string }) => void; signal?: AbortSignal } = {},
): Promise<{ dir: string; commit: string }> {
  // One resolution per repository and revision in a process: the features and the model's record agree.
  const key = `${hubCacheDir()}\0${endpoint()}\0${name.repo}@${name.revision}`
  const known = resolved.get(key)
  if (known && existsSync(known.dir)) return known
  const found = await fetchEncoder(name, options)
  resolved.set(key, found)
  return found
}

const resolved = new Map<string, { dir: string; commit: string }>()

/** The snapshot folder of a repository at `commit` when it is in the cache (no network). */
export function cachedAt(repo: string, commit: string): string | undefined {
  return COMMIT.test(commit) ? cachedSnapshot({ repo, revision: commit }) : undefined
}

async function fetchEncoder(
  name: HubName,
  options: { onProgress?: (p: DownloadProgress & { file: string }) => void; signal?: AbortSignal },
): Promise<{ dir: string; commit: string }> {
  if (offline()) {
    const dir = cachedSnapshot(name)
    if (!dir) throw notFound(`${name.repo}@${name.revision} is not in the Hugging Face cache (${hubCacheDir()}) and HF_HUB_OFFLINE is set`)
    return { dir, commit: dir.split('/').pop()! }
  }
  const files = await encoderFiles(name, options.signal)
  const commit = [...files.values()][0].commit
  for (const [file, meta] of files) await fetchFile(name, file, meta, options)
  if (!COMMIT.test(name.revision)) {
    const ref = join(repoFolder(name.repo), 'refs', name.revision)
    mkdirSync(dirname(ref), { recursive: true })
    writeFileSync(ref, commit)
  }
  return { dir: join(repoFolder(name.repo), 'snapshots', commit), commit }
}

/**
 * A snapshot folder in the Hugging Face cache whose weight file is the blob `sha256` (LFS blobs are
 * named by their SHA-256): an encoder found by identity, whatever repository it came from.
 */
export function cachedEncoderBySha(sha256: string): string | undefined {
  if (!HEX_ETAG.test(sha256)) return undefined
  const cache = hubCacheDir()
  let repos: string[]
  try {
    repos = readdirSync(cache).filter((r) => r.startsWith('models--'))
  } catch {
    return undefined
  }
  for (const repo of repos) {
    if (!existsSync(join(cache, repo, 'blobs', sha256))) continue
    const snapshots = join(cache, repo, 'snapshots')
    for (const commit of existsSync(snapshots) ? readdirSync(snapshots) : []) {
      for (const file of ['model.bin', 'model.safetensors']) {
        const link = readlinkSafe(join(snapshots, commit, file))
        if (link?.endsWith(`/blobs/${sha256}`)) return join(snapshots, commit)
      }
    }
  }
  return undefined
}
