// Shared by the benchmarks: the clip list, and the Python that carries torch/torchaudio 2.11 for reference runs: $EMOTION_PIPELINE_PYTHON, the active
// virtualenv's, the contributor venv, or `python3` when it has torch (as on a GPU host).
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { cacheRoot } from '../dist/cache.js'

/** Why a reference column is empty: the benchmarks' JSON says so instead of a bare null. */
export const NO_REFERENCE =
  'skipped: no Python with torch 2.11, torchaudio and numpy found (set EMOTION_PIPELINE_PYTHON to one, or activate a virtualenv that has them)'

export function referencePython() {
  const cache = cacheRoot()
  const candidates = [
    process.env.EMOTION_PIPELINE_PYTHON,
    process.env.VIRTUAL_ENV && join(process.env.VIRTUAL_ENV, 'bin', 'python'),
    join(cache, 'libtorch-2.11.0', 'bin', 'python'),
    'python3',
  ]
  for (const py of candidates) {
    if (!py || (py.includes('/') && !existsSync(py))) continue
    try {
      execFileSync(py, ['-c', 'import torchaudio, numpy'], { stdio: 'ignore' })
      return py
    } catch {
      /* next */
    }
  }
  return null
}

/** Audio files under `dir`, recursively (the benchmarks' clip lists). */
export function audioFiles(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) return audioFiles(path)
    return /\.(wav|flac|ogg|mp3)$/i.test(name) ? [path] : []
  })
}
