// Finds the libtorch this process will use, without loading any of it. Torch-free on purpose: it
// runs before the addon is required, so it may only read files and ask Python where `torch` lives.
//
// Order (the first usable one wins; `doctor` shows every step and why it was skipped):
//   1. $EMOTION_PIPELINE_LIBTORCH or $LIBTORCH: a libtorch folder or a `torch` package folder;
//   2. the active Python: $VIRTUAL_ENV's site-packages, then `python3` on PATH (asked where `torch`
//      is without importing it);
//   3. the per-user cache: the folder `emotion-pipeline install-torch` fills, then the contributor
//      virtualenv that `npm run setup` makes in a clone of the repository.
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { cacheRoot } from './cache.js'

/** The PyTorch release tch 0.24 is built against; libtorch must match it exactly. */
export const REQUIRED_TORCH = '2.11.0'

/** Where `install-torch` puts libtorch by default. */
export function defaultTorchInstallDir(): string {
  return join(cacheRoot(), `torch-${REQUIRED_TORCH}`)
}

/** File `install-torch` writes last; a folder without it is an unfinished install and is ignored. */
export const INSTALL_MARKER = '.emotion-pipeline-install.json'

export type LibtorchSource = 'env' | 'python' | 'cache'

export interface LibtorchCandidate {
  source: LibtorchSource
  /** What was looked at, in words: `$LIBTORCH`, `python3`, `install-torch cache`, … */
  via: string
  /** The folder that was looked at, when there was one. */
  path?: string
  /** Why this candidate was not used; absent for the one that was. */
  skipped?: string
  /** Version found there, when one was readable. */
  version?: string
}

export interface LibtorchLocation {
  source: LibtorchSource
  via: string
  /** The `torch` package or libtorch folder (holds `lib/`). */
  root: string
  /** Folder of `libtorch_cpu.so`, `libc10.so` and (in a CUDA build) `libtorch_cuda.so`. */
  libDir: string
  version: string
}

export interface LibtorchSearch {
  found?: LibtorchLocation
  candidates: LibtorchCandidate[]
  /** Set when an explicitly named libtorch (environment variable) has the wrong version. */
  versionError?: string
}

/** Reads the version of a `torch` package (`version.py`) or a libtorch archive (`build-version`). */
export function readTorchVersion(root: string): string | undefined {
  const py = join(root, 'version.py')
  if (existsSync(py)) {
    const match = readFileSync(py, 'utf8').match(/__version__\s*=\s*['"]([^'"]+)['"]/)
    if (match) return match[1]
  }
  const build = join(root, 'build-version')
  if (existsSync(build)) return readFileSync(build, 'utf8').trim() || undefined
  return undefined
}

export function versionMatches(version: string): boolean {
  return version === REQUIRED_TORCH || version.startsWith(`${REQUIRED_TORCH}+`)
}

/** Checks one folder; returns the location or the reason it cannot be used. */
function inspect(root: string): { location?: Omit<LibtorchLocation, 'source' | 'via'>; skipped?: string; version?: string } {
  const libDir = join(root, 'lib')
  if (!existsSync(root)) return { skipped: 'folder does not exist' }
  if (!existsSync(join(libDir, 'libtorch_cpu.so'))) return { skipped: `no lib/libtorch_cpu.so in ${root}` }
  const version = readTorchVersion(root)
  if (!version) return { skipped: `cannot read the version (no version.py or build-version in ${root})` }
  if (!versionMatches(version)) return { skipped: `torch ${version}, but ${REQUIRED_TORCH} is needed`, version }
  return { location: { root, libDir, version }, version }
}

function sitePackagesTorch(prefix: string): string | undefined {
  const lib = join(prefix, 'lib')
  if (!existsSync(lib)) return undefined
  for (const entry of readdirSync(lib)) {
    const torch = join(lib, entry, 'site-packages', 'torch')
    if (existsSync(torch)) return torch
  }
  return undefined
}

/** Asks `python3` where `torch` is without importing it (an import costs seconds). */
function pythonTorchDir(python: string): { dir?: string; problem?: string } {
  const script = 'import importlib.util as u; s = u.find_spec("torch"); print(s.submodule_search_locations[0] if s else "")'
  const result = spawnSync(python, ['-c', script], { encoding: 'utf8', timeout: 10_000 })
  if (result.error) return { problem: `${python} not runnable (${(result.error as NodeJS.ErrnoException).code ?? result.error.message})` }
  if (result.status !== 0) return { problem: `${python} failed: ${result.stderr.trim().split('\n').pop()}` }
  const dir = result.stdout.trim()
  return dir ? { dir } : { problem: `${python} has no torch package` }
}

/** The libtorch folder of a finished `install-torch` (its marker names it), else undefined. */
export function installedRoot(dir: string): string | undefined {
  try {
    const marker = JSON.parse(readFileSync(join(dir, INSTALL_MARKER), 'utf8')) as { root?: unknown }
    return typeof marker.root === 'string' && /^[\w.-]+$/.test(marker.root) ? join(dir, marker.root) : undefined
  } catch {
    return undefined
  }
}

/** Runs the search. Pure apart from reading files and one `python3` call; never throws. */
export function locateLibtorch(env: NodeJS.ProcessEnv = process.env): LibtorchSearch {
  const candidates: LibtorchCandidate[] = []
  let versionError: string | undefined
  const consider = (source: LibtorchSource, via: string, root: string | undefined, missing?: string): LibtorchLocation | undefined => {
    if (!root) {
      candidates.push({ source, via, skipped: missing ?? 'not set' })
      return undefined
    }
    const { location, skipped, version } = inspect(root)
    candidates.push({ source, via, path: root, skipped, version })
    return location ? { source, via, ...location } : undefined
  }

  // 1. Named explicitly: a wrong version here is an error, not something to skip past silently.
  for (const name of ['EMOTION_PIPELINE_LIBTORCH', 'LIBTORCH'] as const) {
    const value = env[name]
    if (!value) {
      candidates.push({ source: 'env', via: `$${name}`, skipped: 'not set' })
      continue
    }
    const found = consider('env', `$${name}`, value)
    if (found) return { found, candidates }
    const last = candidates[candidates.length - 1]
    if (last.version) {
      versionError = `$${name}=${value} holds torch ${last.version}, but emotion-pipeline needs libtorch ${REQUIRED_TORCH} exactly`
      return { candidates, versionError }
    }
    // An explicit setting that does not point at libtorch is not silently replaced by another one.
    return { candidates }
  }

  // 2. The active Python.
  const venv = env.VIRTUAL_ENV
  const venvTorch = venv ? sitePackagesTorch(venv) : undefined
  const fromVenv = consider('python', '$VIRTUAL_ENV', venvTorch, venv ? `no torch package in ${venv}` : 'no virtualenv active')
  if (fromVenv) return { found: fromVenv, candidates }
  const asked = pythonTorchDir('python3')
  const fromPython = consider('python', 'python3', asked.dir, asked.problem)
  if (fromPython) return { found: fromPython, candidates }

  // 3. The per-user cache.
  const installDir = defaultTorchInstallDir()
  const installed = installedRoot(installDir)
  const fromInstall = consider('cache', 'install-torch cache', installed, `nothing installed in ${installDir}`)
  if (fromInstall) return { found: fromInstall, candidates }
  const devVenv = join(cacheRoot(), `libtorch-${REQUIRED_TORCH}`)
  const devTorch = existsSync(join(devVenv, '.emotion-pipeline-complete')) ? sitePackagesTorch(devVenv) : undefined
  const fromDev = consider('cache', 'contributor venv (npm run setup)', devTorch, `no venv in ${devVenv}`)
  if (fromDev) return { found: fromDev, candidates }

  const wrong = candidates.find((c) => c.version && !versionMatches(c.version))
  if (wrong) {
    versionError = `found torch ${wrong.version} at ${wrong.path} (${wrong.via}), but emotion-pipeline needs libtorch ${REQUIRED_TORCH} exactly`
  }
  return { candidates, versionError }
}

/** The command that installs libtorch for this machine. */
export function installTorchCommand(): string {
  return `npx emotion-pipeline install-torch ${nvidiaDriverPresent() ? '--cuda' : '--cpu'}`
}

/** Whether an NVIDIA kernel driver is loaded (a hint for which libtorch to install). */
export function nvidiaDriverPresent(): boolean {
  return existsSync('/proc/driver/nvidia/version')
}
