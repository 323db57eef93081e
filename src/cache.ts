// The per-user cache: one root for features, transcripts, models, libtorch and datasets, what each
// part holds, and their sizes (`emotion-pipeline cache list|clean`).
import { lstatSync, readdirSync, rmSync } from 'node:fs'
import { homedir } from 'node:os'
import { isAbsolute, join } from 'node:path'

/**
 * The one root of every per-user cache this library keeps: `$EMOTION_PIPELINE_CACHE`, else
 * `$XDG_CACHE_HOME/emotion-pipeline` (an absolute `XDG_CACHE_HOME`, as the XDG spec requires), else
 * `~/.cache/emotion-pipeline`.
 */
export function cacheRoot(): string {
  if (process.env.EMOTION_PIPELINE_CACHE) return process.env.EMOTION_PIPELINE_CACHE
  const xdg = process.env.XDG_CACHE_HOME
  return join(xdg && isAbsolute(xdg) ? xdg : join(homedir(), '.cache'), 'emotion-pipeline')
}

/** What `cache clean --what` removes: each part and the folders (directly under the root) it owns. */
export const CACHE_PARTS = {
  features: { folders: ['features'], what: 'log-mel features and encoder states, keyed by clip content' },
  transcripts: { folders: ['transcripts'], what: 'Whisper transcripts of clips' },
  encoders: { folders: ['encoders'], what: 'speech encoders installed by install-models --encoder' },
  whisper: {
    folders: ['whisper', 'transformers'],
    what: "the text branch's Whisper tiny.en and transformers.js files (install-models builds it again)",
  },
  downloads: { folders: ['downloads'], what: 'downloaded archives and wheels: only lets an interrupted download resume' },
  libtorch: { folders: ['torch-*', 'libtorch-*', 'cuda-crt-*'], what: 'libtorch installed by install-torch (and the development build)' },
  data: { folders: ['datasets'], what: 'datasets downloaded by `download`' },
} as const

export type CachePart = keyof typeof CACHE_PARTS

export interface CacheEntry {
  part: CachePart | 'other'
  path: string
  bytes: number
}

/** Bytes under `path` (files counted once, links not followed). */
function sizeOf(path: string): number {
  const stat = lstatSync(path, { throwIfNoEntry: false })
  if (!stat) return 0
  if (!stat.isDirectory()) return stat.size
  return readdirSync(path).reduce((n, name) => n + sizeOf(join(path, name)), 0)
}

function partOf(folder: string): CachePart | 'other' {
  for (const [part, { folders }] of Object.entries(CACHE_PARTS))
    if (folders.some((f) => (f.endsWith('*') ? folder.startsWith(f.slice(0, -1)) : folder === f))) return part as CachePart
  return 'other'
}

/** Every folder under the cache root, with its part and size. */
export function listCache(root = cacheRoot()): CacheEntry[] {
  let names: string[]
  try {
    names = readdirSync(root)
  } catch {
    return []
  }
  return names.sort().map((name) => ({ part: partOf(name), path: join(root, name), bytes: sizeOf(join(root, name)) }))
}

/** Removes the folders of `parts`; returns what was removed. */
export function cleanCache(parts: CachePart[], root = cacheRoot()): CacheEntry[] {
  const removed = listCache(root).filter((e) => e.part !== 'other' && parts.includes(e.part))
  for (const e of removed) rmSync(e.path, { recursive: true, force: true })
  return removed
}
