// The Python that carries torch/torchaudio 2.11 for reference runs: $EMOTION_PIPELINE_PYTHON, the active
// virtualenv's, the contributor venv, or `python3` when it has torch (as on a GPU host).
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'

export function referencePython() {
  const cache = process.env.EMOTION_PIPELINE_CACHE ?? join(homedir(), '.cache', 'emotion-pipeline')
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
