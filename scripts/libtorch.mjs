// Finds or provisions the libtorch that tch 0.24 needs (PyTorch 2.11.0, from the PyPI wheel).
//
// Order: $LIBTORCH (a libtorch or torch package folder) → the active virtualenv's torch → a per-user
// cache venv (~/.cache/emotion-pipeline/libtorch-2.11.0, or $EMOTION_PIPELINE_CACHE), created once.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { isAbsolute, join } from 'node:path'
import { onnxProtoDir } from './onnx-proto.mjs'

export const TORCH_VERSION = '2.11.0'
// torchaudio, numpy and soundfile serve the parity tests and the Python reference benchmarks; lameenc
// encodes the MP3 the decoder fuzz test mutates (no MP3 in the data, no encoder on the machine).
const PIP_PACKAGES = [`torch==${TORCH_VERSION}`, `torchaudio==${TORCH_VERSION}`, 'numpy', 'soundfile', 'lameenc']

export function cacheDir() {
  // The rule of src/cache.ts (this script runs before TypeScript is compiled).
  if (process.env.EMOTION_PIPELINE_CACHE) return process.env.EMOTION_PIPELINE_CACHE
  const xdg = process.env.XDG_CACHE_HOME
  return join(xdg && isAbsolute(xdg) ? xdg : join(homedir(), '.cache'), 'emotion-pipeline')
}

function versionOf(torchRoot) {
  const file = join(torchRoot, 'version.py')
  if (!existsSync(file)) return null
  const match = readFileSync(file, 'utf8').match(/__version__\s*=\s*['"]([^'"]+)['"]/)
  return match ? match[1] : null
}

function sitePackagesTorch(venv) {
  const lib = join(venv, 'lib')
  if (!existsSync(lib)) return null
  for (const py of readdirSync(lib)) {
    const torch = join(lib, py, 'site-packages', 'torch')
    if (existsSync(join(torch, 'lib', 'libtorch_cpu.so'))) return torch
  }
  return null
}

function describe(root, source, python) {
  const version = versionOf(root)
  if (version && !version.startsWith(TORCH_VERSION)) {
    throw new Error(
      `libtorch at ${root} (from ${source}) is ${version}, but tch 0.24 needs ${TORCH_VERSION}. ` +
        `Unset LIBTORCH / deactivate the virtualenv, or install torch==${TORCH_VERSION} there.`,
    )
  }
  return { root, libDir: join(root, 'lib'), version: version ?? 'unknown', source, python: python ?? '' }
}

function withLock(dir, fn) {
  const lock = join(dir, '.lock')
  mkdirSync(dir, { recursive: true })
  const started = Date.now()
  for (;;) {
    try {
      mkdirSync(lock)
      break
    } catch {
      // Another process is installing; a lock older than an hour is stale (a killed install).
      if (Date.now() - statSync(lock).mtimeMs > 3_600_000) rmSync(lock, { recursive: true, force: true })
      if (Date.now() - started > 3_600_000) throw new Error(`timed out waiting for ${lock}`)
      execFileSync('sleep', ['5'])
    }
  }
  try {
    return fn()
  } finally {
    rmSync(lock, { recursive: true, force: true })
  }
}

function provisionCacheVenv(log) {
  const venv = join(cacheDir(), `libtorch-${TORCH_VERSION}`)
  const marker = join(venv, '.emotion-pipeline-complete')
  const python = join(venv, 'bin', 'python')
  // The marker records what was installed, so adding a package to PIP_PACKAGES re-runs pip once.
  const wanted = PIP_PACKAGES.join(' ')
  const installed = () => existsSync(marker) && readFileSync(marker, 'utf8').trim() === wanted
  if (!installed()) {
    withLock(cacheDir(), () => {
      if (installed()) return
      log(`Installing PyTorch ${TORCH_VERSION} (libtorch for tch) into ${venv}: once per machine, ~4 GB…`)
      if (!existsSync(python)) execFileSync('python3', ['-m', 'venv', venv], { stdio: 'inherit' })
      execFileSync(python, ['-m', 'pip', 'install', '--disable-pip-version-check', '-q', ...PIP_PACKAGES], {
        stdio: 'inherit',
      })
      writeFileSync(marker, wanted + '\n')
    })
  }
  const root = sitePackagesTorch(venv)
  if (!root) throw new Error(`torch is missing from ${venv}; delete that folder and run again`)
  return describe(root, 'cache-venv', python)
}

/** Resolves libtorch, installing it into the cache when nothing else provides it. */
export function resolveLibtorch({ log = (m) => console.error(m) } = {}) {
  if (process.env.LIBTORCH) {
    const root = process.env.LIBTORCH
    if (!existsSync(join(root, 'lib'))) throw new Error(`LIBTORCH=${root} has no lib/ folder`)
    return describe(root, 'LIBTORCH', '')
  }
  if (process.env.VIRTUAL_ENV) {
    const root = sitePackagesTorch(process.env.VIRTUAL_ENV)
    if (root) return describe(root, 'python', join(process.env.VIRTUAL_ENV, 'bin', 'python'))
  }
  return provisionCacheVenv(log)
}

/** Environment for cargo and napi builds that link against `lib`. */
export function buildEnv(lib) {
  return {
    ...process.env,
    LIBTORCH: lib.root,
    EMOTION_LIBTORCH_SOURCE: lib.source,
    EMOTION_LIBTORCH_PYTHON: lib.python,
    EMOTION_ONNX_PROTO_DIR: onnxProtoDir(cacheDir(), lib.python),
  }
}

/** The host's Rust target triple (`napi build` builds for it; tests reuse those artifacts). */
export function hostTarget() {
  return execFileSync('rustc', ['-vV'], { encoding: 'utf8' }).match(/^host: (.+)$/m)[1]
}
