// `emotion-pipeline cache list|clean`: what the per-user cache holds, and removing parts of it.
import { parseCommandArgs } from './cli-args.js'
import { CACHE_PARTS, cacheRoot, cleanCache, listCache } from './cache.js'
import type { CachePart, CacheEntry } from './cache.js'
import { invalidOption } from './errors.js'

const PARTS = Object.keys(CACHE_PARTS) as CachePart[]

const HELP = `emotion-pipeline cache list [--json]
emotion-pipeline cache clean --what ${PARTS.join('|')}[,…] [--json]

The per-user cache is ${cacheRoot()}
($EMOTION_PIPELINE_CACHE, else $XDG_CACHE_HOME/emotion-pipeline, else ~/.cache/emotion-pipeline). Parts:
${PARTS.map((p) => `  ${p.padEnd(12)} ${CACHE_PARTS[p].what}`).join('\n')}
Features and transcripts are made again when needed; libtorch, encoders and datasets are installed
again with install-torch, install-models and download (each command says so when one is missing).`

const size = (bytes: number) => (bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(1)} MB`)

function print(entries: CacheEntry[], json: boolean, verb: string): void {
  if (json) {
    console.log(JSON.stringify({ root: cacheRoot(), [verb]: entries, bytes: entries.reduce((n, e) => n + e.bytes, 0) }))
    return
  }
  for (const e of entries) console.log(`${e.part.padEnd(12)} ${size(e.bytes).padStart(10)}  ${e.path}`)
  console.log(`${verb === 'removed' ? 'removed' : 'total'.padEnd(12)} ${size(entries.reduce((n, e) => n + e.bytes, 0)).padStart(10)}`)
}

export async function cacheCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs({
    args: argv,
    allowPositionals: true,
    options: { what: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean' } },
  })
  const [action] = positionals
  if (values.help || (action !== 'list' && action !== 'clean')) {
    ;(values.help ? console.log : console.error)(HELP)
    return values.help ? 0 : 2
  }
  if (action === 'list') {
    print(listCache(), values.json === true, 'entries')
    return 0
  }
  const what = (values.what ?? '').split(',').filter(Boolean)
  const unknown = what.find((w) => !PARTS.includes(w as CachePart))
  if (what.length === 0 || unknown !== undefined)
    throw invalidOption(
      '--what',
      `${unknown === undefined ? 'is required' : `'${unknown}' is not a part`}: one or more of ${PARTS.join(', ')}`,
    )
  print(cleanCache(what as CachePart[]), values.json === true, 'removed')
  return 0
}
