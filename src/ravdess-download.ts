// `emotion-pipeline download ravdess`: the RAVDESS speech archive from its official Zenodo record, with
// the size and MD5 the record's API publishes (read at run time), resumable, unpacked by a streaming zip
// reader into the cache: actors 1–20 (the development set every figure in the README uses) in
// `ravdess/`, actors 21–24 kept apart in `ravdess-heldout/` for blind, speaker-independent evaluation.
import { existsSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { cacheRoot } from './cache.js'
import { download } from './download.js'
import type { DownloadProgress } from './download.js'
import { EmotionPipelineError, invalidOption } from './errors.js'
import { extractZip } from './zip.js'

export const RAVDESS = {
  record: '1188976',
  file: 'Audio_Speech_Actors_01-24.zip',
  licence: 'CC BY-NC-SA 4.0 (https://creativecommons.org/licenses/by-nc-sa/4.0/): non-commercial use, with attribution',
  citation:
    'Livingstone SR, Russo FA (2018) The Ryerson Audio-Visual Database of Emotional Speech and Song (RAVDESS). PLoS ONE 13(5): e0196391. https://doi.org/10.1371/journal.pone.0196391',
  /** Actors 1–20 go to the development folder; the rest are held out. */
  developmentActors: 20,
} as const

/** The Zenodo records API: `$EMOTION_PIPELINE_ZENODO_API` (a mirror, or a test server), else zenodo.org's. */
export function zenodoApi(): string {
  return (process.env.EMOTION_PIPELINE_ZENODO_API || 'https://zenodo.org/api').replace(/\/+$/, '')
}

/** Where `download ravdess` puts the data unless told otherwise. */
export function defaultDatasetsDir(): string {
  return join(cacheRoot(), 'datasets')
}

export interface RavdessDownload {
  /** Actors 1–20: pass this as `data`. */
  dir: string
  /** Actors 21–24, held out. */
  heldOutDir: string
  clips: number
  heldOutClips: number
  /** Nothing was fetched: the folders were already complete. */
  cached: boolean
  /** Bytes of the archive kept from an interrupted earlier download. */
  resumedFrom: number
}

export interface DownloadRavdessOptions {
  /** Parent folder of `ravdess/` and `ravdess-heldout/`. @default $EMOTION_PIPELINE_CACHE/datasets */
  dir?: string
  onProgress?: (p: DownloadProgress) => void
  log?: (message: string) => void
  signal?: AbortSignal
}

const COMPLETE = '.emotion-pipeline-complete'

/** The downloaded development folder (actors 1–20) when complete, else null. */
export function downloadedRavdess(dir = defaultDatasetsDir()): string | null {
  const dev = join(resolve(dir), 'ravdess')
  return existsSync(join(dev, COMPLETE)) ? dev : null
}

export async function downloadRavdess(options: DownloadRavdessOptions = {}): Promise<RavdessDownload> {
  const parent = resolve(options.dir ?? defaultDatasetsDir())
  const dir = join(parent, 'ravdess')
  const heldOutDir = join(parent, 'ravdess-heldout')
  const count = (d: string) => (existsSync(d) ? readdirSync(d, { recursive: true }).filter((f) => String(f).endsWith('.wav')).length : 0)
  if (downloadedRavdess(parent))
    return { dir, heldOutDir, clips: count(dir), heldOutClips: count(heldOutDir), cached: true, resumedFrom: 0 }
  // Never replace a folder this command did not make (a copy unpacked by hand, another dataset).
  for (const d of [dir, heldOutDir])
    if (existsSync(d) && !existsSync(join(d, COMPLETE)))
      throw invalidOption(
        'dir',
        `${d} exists and was not made by \`download ravdess\`: left untouched; pass it as --data, or choose another --dir`,
      )
  const log = options.log ?? (() => {})
  const file = await recordFile(options.signal)
  log(`${RAVDESS.file}: ${(file.bytes / 1e6).toFixed(0)} MB from ${file.url} (MD5 ${file.md5}, from the record's API)`)
  const archive = join(cacheRoot(), 'downloads', RAVDESS.file)
  const got = await download(
    file.url,
    archive,
    { algorithm: 'md5', digest: file.md5, bytes: file.bytes },
    { signal: options.signal, onProgress: options.onProgress },
  )
  if (got.resumedFrom > 0) log(`resumed the download at ${(got.resumedFrom / 1e6).toFixed(1)} MB`)
  log(`unpacking into ${dir} (actors 1–${RAVDESS.developmentActors}) and ${heldOutDir}`)
  const work = join(parent, `.ravdess.work-${process.pid}`)
  rmSync(work, { recursive: true, force: true })
  await extractZip(
    archive,
    work,
    (entry) => {
      const m = /(?:^|\/)Actor_(\d\d)\/([^/]+\.wav)$/i.exec(entry.name)
      if (!m) return null
      const actor = Number(m[1])
      return join(actor <= RAVDESS.developmentActors ? 'ravdess' : 'ravdess-heldout', `Actor_${m[1]}`, m[2])
    },
    { signal: options.signal },
  )
  if (!existsSync(join(work, 'ravdess')))
    throw new EmotionPipelineError('DOWNLOAD', `${archive} holds no Actor_NN/*.wav clips: not the RAVDESS speech archive`)
  // Marked in the work folder, then moved: the development folder's marker goes last and says the whole
  // download is in place (a folder without a marker is never replaced, see above).
  const note = `RAVDESS speech, Zenodo record ${RAVDESS.record}. Licence: ${RAVDESS.licence}. Cite: ${RAVDESS.citation}\n`
  writeFileSync(join(work, 'ravdess', 'LICENSE.txt'), note)
  for (const name of ['ravdess-heldout', 'ravdess']) {
    if (!existsSync(join(work, name))) continue
    writeFileSync(join(work, name, COMPLETE), `${file.md5}\n`)
    rmSync(join(parent, name), { recursive: true, force: true })
    renameSync(join(work, name), join(parent, name))
  }
  rmSync(work, { recursive: true, force: true })
  rmSync(archive, { force: true })
  return { dir, heldOutDir, clips: count(dir), heldOutClips: count(heldOutDir), cached: false, resumedFrom: got.resumedFrom }
}

interface RecordFile {
  url: string
  bytes: number
  md5: string
}

type ZenodoFile = {
  key?: string
  filename?: string
  size?: number
  filesize?: number
  checksum?: string
  links?: { self?: string; content?: string; download?: string }
}

/** The archive's URL, size and MD5 from the record's API (the legacy list or InvenioRDM's `entries`). */
async function recordFile(signal?: AbortSignal): Promise<RecordFile> {
  const api = `${zenodoApi()}/records/${RAVDESS.record}`
  let record: { files?: ZenodoFile[] | { entries?: Record<string, ZenodoFile> } }
  try {
    const response = await fetch(api, { headers: { Accept: 'application/json' }, signal })
    if (!response.ok) throw new EmotionPipelineError('DOWNLOAD', `the Zenodo API answered HTTP ${response.status} for ${api}`)
    record = (await response.json()) as typeof record
  } catch (err) {
    if (err instanceof EmotionPipelineError) throw err
    const e = err as { cause?: { message?: string }; message?: string }
    throw new EmotionPipelineError('DOWNLOAD', `cannot read the Zenodo record ${api}: ${e.cause?.message ?? e.message}`, { cause: err })
  }
  const files = Array.isArray(record.files) ? record.files : Object.values(record.files?.entries ?? {})
  const entry = files.find((f) => (f.key ?? f.filename) === RAVDESS.file)
  if (!entry) throw new EmotionPipelineError('DOWNLOAD', `the Zenodo record ${api} lists no ${RAVDESS.file}`)
  const md5 = /^md5:([0-9a-f]{32})$/i.exec(entry.checksum ?? '')?.[1]
  const bytes = entry.size ?? entry.filesize
  const url = entry.links?.content ?? entry.links?.self ?? entry.links?.download
  if (!md5 || !bytes || !url)
    throw new EmotionPipelineError(
      'DOWNLOAD',
      `the Zenodo record ${api} gives no size, MD5 or link for ${RAVDESS.file}: refusing an unchecked download`,
    )
  return { url: new URL(url, api).href, bytes, md5: md5.toLowerCase() }
}
