// The run directory: created with errors that name the option, locked while a run writes to it (so two
// runs into one `out` cannot mix their splits and models), and written file by file atomically.
import { randomBytes } from 'node:crypto'
import { closeSync, existsSync, lstatSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs'
import { hostname } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { EmotionPipelineError } from './errors.js'

const LOCK = '.lock'

let written = 0

/**
 * Replaces `path` with `data` through a temporary sibling and a rename: a reader, or a run resumed after
 * a crash, sees the old file or the new one, never half of one. The one way this package writes files.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  // A name nobody can predict, created exclusively ('wx': O_CREAT|O_EXCL, which fails on an existing
  // entry, a planted symbolic link included), then renamed over the target (a link there is replaced,
  // never followed).
  const tmp = join(dirname(path), `.${randomBytes(8).toString('hex')}-${written++}.tmp.${basename(path)}`)
  try {
    const fd = openSync(tmp, 'wx', 0o644)
    try {
      writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data)
    } finally {
      closeSync(fd)
    }
    renameSync(tmp, path)
  } catch (err) {
    rmSync(tmp, { force: true })
    throw new EmotionPipelineError('IO', `cannot write ${path}: ${(err as Error).message}`, { cause: err })
  }
}

function ioError(option: string, path: string, why: string, cause?: unknown, hint = ''): EmotionPipelineError {
  return new EmotionPipelineError('IO', `option \`${option}\`: cannot use ${path} as a folder to write to (${why})${hint}`, { cause })
}

/**
 * Creates `dir` (a run directory, checkpoint or cache folder) one level at a time (no `recursive`, which loops on pseudo file systems such as
 * /proc), refusing a path under a regular file or where the process may not write. `hint` ends the error.
 */
export function ensureWritableDir(dir: string, option: string, hint = ''): void {
  const missing: string[] = []
  let p = dir
  while (!existsSync(p)) {
    missing.unshift(p)
    if (dirname(p) === p) break
    p = dirname(p)
  }
  const blocked = fileInTheWay(dir)
  if (blocked) throw ioError(option, dir, blocked, undefined, hint)
  for (const m of missing) {
    try {
      mkdirSync(m)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
        throw ioError(option, dir, (err as NodeJS.ErrnoException).code ?? String(err), err, hint)
    }
    // What this call created must be a real folder (not a link planted between the check and mkdir).
    if (!lstatSync(m).isDirectory()) throw ioError(option, dir, `${m} is not a real folder`, undefined, hint)
  }
  // A folder that exists but cannot hold files (read-only, /proc, …) fails here, not halfway through a run.
  // Exclusive create under an unpredictable name: a link planted at the name is never followed.
  const probe = join(dir, `.write-test-${randomBytes(8).toString('hex')}`)
  try {
    closeSync(openSync(probe, 'wx'))
    rmSync(probe, { force: true })
  } catch (err) {
    throw ioError(option, dir, `not writable: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, err, hint)
  }
}

/** `"<ancestor> is a file, not a folder"` when a regular file stands where `path` needs a folder. */
export function fileInTheWay(path: string): string | undefined {
  for (let p = path; ; p = dirname(p)) {
    if (existsSync(p)) return statSync(p).isDirectory() ? undefined : `${p} is a file, not a folder`
    if (dirname(p) === p) return undefined
  }
}

interface LockOwner {
  host: string
  pid: number
  startedAt: string
}

/** Whether process `pid` of this host still runs. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Takes the run directory's lock (`.lock`: host, pid, start time), or fails with `IO` naming the
 * owner. A lock left by a process of this host that no longer runs is stale and taken over; one from
 * another host (a shared file system) is never guessed at: the message says which file to delete.
 */
export function lockRunDir(dir: string, option = 'out', holder = 'run'): { release: () => void } {
  const path = join(dir, LOCK)
  const me: LockOwner = { host: hostname(), pid: process.pid, startedAt: new Date().toISOString() }
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx')
      writeSync(fd, `${JSON.stringify(me)}\n`)
      closeSync(fd)
      return {
        release: () => {
          try {
            const owner = JSON.parse(readFileSync(path, 'utf8')) as LockOwner
            if (owner.pid === me.pid && owner.host === me.host && owner.startedAt === me.startedAt) rmSync(path, { force: true })
          } catch {
            // already gone
          }
        },
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
        throw ioError(option, dir, (err as NodeJS.ErrnoException).code ?? String(err), err)
    }
    let owner: LockOwner | undefined
    try {
      owner = JSON.parse(readFileSync(path, 'utf8')) as LockOwner
    } catch {
      owner = undefined // torn or empty: written by a process killed mid-write
    }
    const stale = !owner || (owner.host === me.host && !alive(owner.pid))
    if (!stale) {
      throw new EmotionPipelineError(
        'IO',
        `option \`${option}\`: ${dir} is in use by another ${holder} (pid ${owner!.pid} on ${owner!.host}, since ${owner!.startedAt}). ` +
          `Wait for it, use another folder, or delete ${path} if that ${holder} is gone.`,
      )
    }
    rmSync(path, { force: true })
  }
  throw ioError(option, dir, `could not take ${path}`)
}
