// A local stand-in for Zenodo on 127.0.0.1: `GET /api/records/1188976` in the records API's shape and the
// archive it lists, built from the original RAVDESS WAVs (one clip filed again as actor 21).
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { referencePython, tempDir, wavDir } from './helpers.js'

export const FILE = 'Audio_Speech_Actors_01-24.zip'

/** A zip in the archive's layout: Actor_NN/<name>.wav, the first clip filed again as actor 21. */
export function makeArchive(): { path: string; bytes: Buffer; clips: number } {
  const dir = tempDir('ep-zip-')
  const wavs = readdirSync(wavDir).filter((f) => f.endsWith('.wav'))
  const entries = wavs.map((f) => [join(wavDir, f), `Actor_${f.slice(-6, -4)}/${f}`])
  entries.push([join(wavDir, wavs[0]), `Actor_21/${wavs[0].replace(/-\d\d\.wav$/, '-21.wav')}`])
  const path = join(dir, FILE)
  const python = referencePython() ?? 'python3'
  const script =
    'import json, sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED)\nfor src, name in json.loads(sys.argv[2]): z.write(src, name)\nz.close()'
  execFileSync(python, ['-c', script, path, JSON.stringify(entries)])
  return { path, bytes: readFileSync(path), clips: wavs.length }
}

export interface Server {
  api: string
  ranges: (string | undefined)[]
  close: () => void
}

/**
 * Zenodo's `GET /api/records/:id` (legacy list shape) and the file; `cutAt` drops the first transfer
 * there; `ignoreRange` answers every request with the whole file (200), as some servers and proxies do.
 */
export async function zenodo(
  archive: Buffer,
  { md5, cutAt, ignoreRange }: { md5?: string; cutAt?: number; ignoreRange?: boolean } = {},
): Promise<Server> {
  const ranges: (string | undefined)[] = []
  let cut = cutAt
  const server = createServer((req, res) => {
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    if (req.url === '/api/records/1188976') {
      res.setHeader('content-type', 'application/json')
      res.end(
        JSON.stringify({
          id: 1188976,
          files: [
            {
              key: FILE,
              size: archive.length,
              checksum: `md5:${md5 ?? createHash('md5').update(archive).digest('hex')}`,
              links: { self: `${base}/api/records/1188976/files/${FILE}/content` },
            },
          ],
        }),
      )
      return
    }
    if (req.url === `/api/records/1188976/files/${FILE}/content`) {
      ranges.push(req.headers.range)
      const start = ignoreRange ? 0 : Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0)
      const body = archive.subarray(start)
      res.writeHead(start > 0 ? 206 : 200, {
        'content-length': body.length,
        ...(start > 0 ? { 'content-range': `bytes ${start}-${archive.length - 1}/${archive.length}` } : {}),
      })
      if (cut !== undefined) {
        res.write(body.subarray(0, cut))
        cut = undefined
        setTimeout(() => res.destroy(), 50)
        return
      }
      res.end(body)
      return
    }
    res.statusCode = 404
    res.end()
  })
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok))
  return { api: `http://127.0.0.1:${(server.address() as AddressInfo).port}/api`, ranges, close: () => server.close() }
}
