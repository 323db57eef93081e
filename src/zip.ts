// Streaming reads of zip archives (wheels, dataset archives) with yauzl: entry names are checked by yauzl
// (no absolute paths, no `..`), sizes against the central directory, and nothing is held in memory whole.
import { createWriteStream, mkdirSync } from 'node:fs'
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import yauzl from 'yauzl'
import { EmotionPipelineError } from './errors.js'

export interface ZipEntry {
  /** Path inside the archive, `/`-separated. */
  name: string
  bytes: number
  isDirectory: boolean
}

const broken = (zip: string, err: unknown) =>
  new EmotionPipelineError('IO', `cannot read the zip archive ${zip}: ${(err as Error)?.message ?? String(err)}`, { cause: err })

/**
 * Calls `onEntry` for each entry in archive order; `open()` streams that entry's bytes (call it at most
 * once, and finish reading before `onEntry` resolves).
 */
export async function forEachZipEntry(
  zip: string,
  onEntry: (entry: ZipEntry, open: () => Promise<Readable>) => Promise<void>,
  signal?: AbortSignal,
): Promise<void> {
  const file = await new Promise<yauzl.ZipFile>((ok, fail) =>
    yauzl.open(zip, { lazyEntries: true, autoClose: true, strictFileNames: false, validateEntrySizes: true }, (err, z) =>
      err || !z ? fail(broken(zip, err)) : ok(z),
    ),
  )
  await new Promise<void>((ok, fail) => {
    let stopped = false
    const stop = (err: unknown) => {
      if (stopped) return
      stopped = true
      file.close()
      fail(err instanceof EmotionPipelineError ? err : broken(zip, err))
    }
    file.on('error', stop)
    file.on('end', () => {
      if (!stopped) ok()
    })
    file.on('entry', (entry: yauzl.Entry) => {
      if (signal?.aborted) return stop(new EmotionPipelineError('CANCELLED', `unpacking ${zip} cancelled`))
      const open = () =>
        new Promise<Readable>((resolveStream, rejectStream) =>
          file.openReadStream(entry, (err, stream) => (err || !stream ? rejectStream(broken(zip, err)) : resolveStream(stream))),
        )
      const info = { name: entry.fileName, bytes: entry.uncompressedSize, isDirectory: entry.fileName.endsWith('/') }
      onEntry(info, open).then(() => {
        if (!stopped) file.readEntry()
      }, stop)
    })
    file.readEntry()
  })
}

/**
 * Writes the entries `select` maps to a relative output path (or `null` to skip) under `dir`; a path
 * that would leave `dir` is an error. Returns the files written.
 */
export async function extractZip(
  zip: string,
  dir: string,
  select: (entry: ZipEntry) => string | null,
  options: { signal?: AbortSignal; onFile?: (done: number, path: string) => void } = {},
): Promise<string[]> {
  const root = resolve(dir)
  const written: string[] = []
  await forEachZipEntry(
    zip,
    async (entry, open) => {
      if (entry.isDirectory) return
      const target = select(entry)
      if (target === null) return
      const out = resolve(root, target)
      const inside = relative(root, out)
      if (inside === '' || inside === '..' || inside.startsWith(`..${sep}`) || isAbsolute(inside))
        throw new EmotionPipelineError('IO', `${zip}: entry ${entry.name} would be written outside ${root}; refused`)
      mkdirSync(dirname(out), { recursive: true })
      await pipeline(await open(), createWriteStream(out), { signal: options.signal })
      written.push(out)
      options.onFile?.(written.length, out)
    },
    options.signal,
  )
  return written
}
