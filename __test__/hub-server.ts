// A local HTTP server that answers exactly what the Hub client asks, as huggingface.co does:
// `HEAD|GET /{org}/{name}/resolve/{revision}/{file}` with `X-Repo-Commit`; large (LFS) files redirect to
// a CDN-like path with `X-Linked-Etag` (their SHA-256) and `X-Linked-Size`; small files answer with a
// git blob id `ETag`; the CDN honours `Range`. Faults on demand: a transfer cut after N bytes (once), a
// corrupted body.
import { createHash } from 'node:crypto'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface HubRepoFiles {
  commit: string
  files: Record<string, Buffer>
}

export interface HubServer {
  url: string
  /** Every request: method, path and Range header. */
  requests: { method: string; path: string; range?: string }[]
  /** The next CDN transfer of this SHA-256 is cut after this many bytes. */
  cutOnce: Map<string, number>
  /** CDN transfers of this SHA-256 are served with a flipped byte. */
  corrupt: Set<string>
  close: () => Promise<void>
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')
const gitBlobId = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex')
const isLfs = (name: string) => /\.(bin|safetensors)$/.test(name)

export async function startHubServer(repos: Record<string, HubRepoFiles>): Promise<HubServer> {
  const blobs = new Map<string, Buffer>()
  for (const repo of Object.values(repos)) for (const data of Object.values(repo.files)) blobs.set(sha256(data), data)
  const state = { requests: [] as HubServer['requests'], cutOnce: new Map<string, number>(), corrupt: new Set<string>() }
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)
    state.requests.push({ method: req.method ?? '', path, range: req.headers.range })
    const cdn = /^\/cdn\/([0-9a-f]{64})$/.exec(path)
    if (cdn) return serveBlob(cdn[1], req.headers.range, req.method === 'HEAD', res)
    const m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path)
    const repo = m && repos[m[1]]
    if (!m || !repo) return notFound(res, 'RepositoryNotFound')
    if (m[2] !== 'main' && m[2] !== repo.commit) return notFound(res, 'RevisionNotFound')
    const data = repo.files[m[3]]
    if (!data) return notFound(res, 'EntryNotFound')
    const headers: Record<string, string | number> = { 'X-Repo-Commit': repo.commit }
    if (isLfs(m[3])) {
      const sha = sha256(data)
      res.writeHead(302, {
        ...headers,
        Location: `http://127.0.0.1:${(server.address() as AddressInfo).port}/cdn/${sha}`,
        'X-Linked-Etag': `"${sha}"`,
        'X-Linked-Size': data.length,
        ETag: `"${sha}"`,
      })
      return res.end()
    }
    res.writeHead(200, { ...headers, ETag: `"${gitBlobId(data)}"`, 'Content-Length': data.length })
    res.end(req.method === 'HEAD' ? undefined : data)
  })

  function serveBlob(sha: string, range: string | undefined, head: boolean, res: import('node:http').ServerResponse) {
    let data = blobs.get(sha)
    if (!data) return notFound(res, 'EntryNotFound')
    if (state.corrupt.has(sha)) {
      data = Buffer.from(data)
      data[data.length >> 1] ^= 0xff
    }
    const start = Number(/^bytes=(\d+)-$/.exec(range ?? '')?.[1] ?? 0)
    if (start >= data.length && start > 0) {
      res.writeHead(416)
      return res.end()
    }
    const body = data.subarray(start)
    res.writeHead(start > 0 ? 206 : 200, {
      'Content-Length': body.length,
      ...(start > 0 ? { 'Content-Range': `bytes ${start}-${data.length - 1}/${data.length}` } : {}),
    })
    if (head) return res.end()
    const cut = state.cutOnce.get(sha)
    if (cut !== undefined) {
      state.cutOnce.delete(sha)
      res.write(body.subarray(0, cut), () => res.destroy())
      return
    }
    res.end(body)
  }

  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    ...state,
    close: () => new Promise((done) => server.close(() => done())),
  }
}

function notFound(res: import('node:http').ServerResponse, code: string): void {
  res.writeHead(404, { 'X-Error-Code': code })
  res.end()
}
