// `emotion-pipeline install-torch`: puts libtorch 2.11.0 in the per-user cache (or --dir) for the
// loader to find. libtorch cannot ship in npm (the CUDA build is gigabytes), so it comes from the
// PyPI wheels through pip, the ordinary client for them: pip honours the machine's index, proxy and
// certificate settings, shows a progress bar and checks each wheel against the index's SHA-256.
//
// --cpu takes the torch wheel without its CUDA dependencies except the two libraries that
// libtorch_cpu.so itself needs (libcudart, libcupti); --cuda takes every CUDA library torch lists.
// Wheels stay in `<dir>.downloads` until the install succeeds, so an interrupted run resumes with the
// wheels it already has (pip re-fetches one whose hash no longer matches). Extraction goes to a staging
// folder that is checked (version, libraries present, CRC of every member) and renamed into place last:
// the loader only picks up a folder whose marker file exists, so nothing half-installed is ever used.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { basename, dirname, join, resolve } from 'node:path'
import { EmotionPipelineError, invalidOption } from './errors.js'
import { alive, fileInTheWay } from './run-dir.js'
import {
  defaultTorchInstallDir,
  INSTALL_MARKER,
  nvidiaDriverPresent,
  readTorchVersion,
  REQUIRED_TORCH,
  versionMatches,
} from './libtorch.js'

export type TorchVariant = 'cpu' | 'cuda'

export interface InstallTorchOptions {
  /** `'cpu'`: libtorch without the CUDA libraries it can do without; `'cuda'`: the full CUDA wheel set. Default: `'cuda'` where an NVIDIA driver is loaded, else `'cpu'`. */
  variant?: TorchVariant
  /** Wheels (`torch`, `nvidia-*`) or a libtorch `.zip` archive already on disk: no download. */
  from?: string[]
  /** Install folder. Default: `~/.cache/emotion-pipeline/torch-2.11.0` (`$EMOTION_PIPELINE_CACHE`). */
  dir?: string
  /** Python used to run pip and unpack wheels. Default `python3`. */
  python?: string
  log?: (line: string) => void
}

export interface InstallTorchResult {
  dir: string
  /** The `torch` package or libtorch folder inside `dir` that the loader uses. */
  root: string
  variant: TorchVariant
  version: string
  bytes: number
  files: string[]
}

/** The libraries `libtorch_cpu.so` needs beyond glibc/libstdc++ (checked with `readelf -d` on the 2.11.0 cu130 wheel). */
const CPU_CUDA_EXTRAS = ['cudart', 'cupti']

function ioError(option: string, path: string, err: unknown): EmotionPipelineError {
  // mkdir -p under a regular file reports EEXIST; say what is actually in the way.
  const why = fileInTheWay(path) ?? (err as NodeJS.ErrnoException)?.code ?? (err instanceof Error ? err.message : String(err))
  return new EmotionPipelineError('IO', `option \`${option}\`: cannot write ${path} (${why})`, { cause: err })
}

/** Runs Python; with `progress`, its stdout (pip's progress bar) goes to our stderr. Its stderr is kept for the error message. */
function runPython(python: string, args: string[], what: string, progress = false): string {
  const result = spawnSync(python, args, { encoding: 'utf8', stdio: ['ignore', progress ? 2 : 'pipe', 'pipe'], maxBuffer: 64 * 2 ** 20 })
  if (result.error) {
    throw new EmotionPipelineError(
      'IO',
      `install-torch needs Python 3 with pip to ${what}: \`${python}\` could not run (${(result.error as NodeJS.ErrnoException).code ?? result.error.message}). Install python3, or pass --python`,
      { cause: result.error },
    )
  }
  if (result.status !== 0) {
    const tail = (result.stderr ?? '')
      .trim()
      .split('\n')
      .slice(-3)
      .join(' ')
      .replace(/^ERROR: /, '')
    if (/No space left on device|ENOSPC|Errno 28/.test(result.stderr ?? ''))
      throw new EmotionPipelineError('IO', `could not ${what}: the disk is full (${tail}); free space or install elsewhere with --dir`)
    throw new EmotionPipelineError('IO', `could not ${what} (${python} exited ${result.status})${tail ? `: ${tail}` : ''}`)
  }
  return result.stdout ?? ''
}

// Small Python helpers (the standard library only): read a wheel's dependencies; unpack and CRC-check archives.
const READ_REQUIRES = `
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))
    for line in z.read(meta).decode().splitlines():
        if line.startswith('Requires-Dist:'):
            print(line.split(':', 1)[1].strip())
`
const EXTRACT = `
import sys, zipfile
dest = sys.argv[1]
for i, path in enumerate(sys.argv[2:], 1):
    print(f'[install-torch] unpacking {path} ({i}/{len(sys.argv) - 2})', flush=True)
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
            if bad is not None:
                sys.exit(f'{path}: corrupt member {bad} (CRC mismatch)')
            z.extractall(dest)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        sys.exit(f'{path}: not a readable wheel or zip archive ({e})')
`

/** The CUDA packages the torch wheel pins, as pip requirement specs (pure-Python dependencies left out). */
export function cudaRequirements(requiresDist: string[], variant: TorchVariant): string[] {
  const specs: string[] = []
  for (const line of requiresDist) {
    const [requirement, marker = ''] = line.split(';').map((s) => s.trim())
    if (marker.includes('extra ==') || (marker && !marker.includes('Linux'))) continue
    const name = requirement.match(/^[A-Za-z0-9_.-]+/)?.[0]?.toLowerCase() ?? ''
    if (name === 'cuda-toolkit') {
      const pin = requirement.match(/==\s*([^\s,;]+)/)?.[1]
      if (!pin) continue
      const extras =
        variant === 'cpu'
          ? CPU_CUDA_EXTRAS
          : (requirement
              .match(/\[([^\]]+)\]/)?.[1]
              .split(',')
              .map((s) => s.trim()) ?? [])
      specs.push(`cuda-toolkit[${extras.join(',')}]==${pin}`)
    } else if (variant === 'cuda' && name.startsWith('nvidia-')) {
      specs.push(requirement.replace(/\s+/g, ''))
    }
  }
  return specs
}

function pipDownload(python: string, downloads: string, specs: string[], withDeps: boolean, log: (l: string) => void): void {
  log(`downloading ${specs.join(' ')} with pip into ${downloads}`)
  const resume = pipSupportsResume(python) ? ['--resume-retries', '5'] : []
  runPython(
    python,
    [
      '-m',
      'pip',
      'download',
      '--disable-pip-version-check',
      '--only-binary=:all:',
      ...(withDeps ? [] : ['--no-deps']),
      ...resume,
      '-d',
      downloads,
      ...specs,
    ],
    `download ${specs.join(' ')}`,
    true,
  )
}

function pipSupportsResume(python: string): boolean {
  const help = spawnSync(python, ['-m', 'pip', 'download', '--help'], { encoding: 'utf8' })
  return (help.stdout ?? '').includes('--resume-retries')
}

function folderBytes(dir: string): number {
  let total = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) total += folderBytes(path)
    else if (entry.isFile()) total += statSync(path).size
  }
  return total
}

/** The folder of an unpacked install that holds `lib/libtorch_cpu.so`: a wheel's `torch/` or an archive's `libtorch/`. */
function torchRootIn(staging: string): string | undefined {
  for (const name of ['torch', 'libtorch']) {
    if (existsSync(join(staging, name, 'lib', 'libtorch_cpu.so'))) return name
  }
  return undefined
}

/**
 * Removes what an install killed before its end left beside `dir` (`.partial-<pid>` staging, up to
 * 1.1 GB, and `.old-<pid>`), when that process no longer runs.
 */
function removeStaleStaging(dir: string, log: (line: string) => void): void {
  let siblings: string[]
  try {
    siblings = readdirSync(dirname(dir))
  } catch {
    return
  }
  for (const name of siblings) {
    const [kind, pid] = name.startsWith(`${basename(dir)}.`) ? name.slice(basename(dir).length + 1).split('-') : []
    if (!(kind === 'partial' || kind === 'old') || !/^\d+$/.test(pid ?? '') || alive(Number(pid))) continue
    rmSync(join(dirname(dir), name), { recursive: true, force: true })
    log(`removed ${name}, left by an install that was stopped before its end`)
  }
}

export function installTorch(options: InstallTorchOptions = {}): InstallTorchResult {
  const log = options.log ?? ((line: string) => console.error(`[install-torch] ${line}`))
  const python = options.python ?? 'python3'
  const variant: TorchVariant = options.variant ?? (nvidiaDriverPresent() ? 'cuda' : 'cpu')
  const dir = resolve(options.dir ?? defaultTorchInstallDir())
  removeStaleStaging(dir, log)
  const from = (options.from ?? []).map((f) => resolve(f))
  for (const file of from) {
    if (!existsSync(file) || !statSync(file).isFile()) throw invalidOption('from', `${file} does not exist or is not a file`)
    if (!/\.(whl|zip)$/i.test(file)) throw invalidOption('from', `${file} is neither a wheel (.whl) nor a libtorch .zip archive`)
  }

  const staging = `${dir}.partial-${process.pid}`
  const downloads = `${dir}.downloads`
  try {
    mkdirSync(dirname(dir), { recursive: true })
    rmSync(staging, { recursive: true, force: true })
    mkdirSync(staging)
    if (from.length === 0) mkdirSync(downloads, { recursive: true })
  } catch (err) {
    throw ioError(options.dir ? 'dir' : 'dir (default: the per-user cache; set EMOTION_PIPELINE_CACHE or --dir)', dir, err)
  }

  try {
    let archives = from
    if (archives.length === 0) {
      pipDownload(python, downloads, [`torch==${REQUIRED_TORCH}`], false, log)
      const torchWheel = readdirSync(downloads).find((f) => f.startsWith(`torch-${REQUIRED_TORCH}-`) && f.endsWith('.whl'))
      if (!torchWheel) throw new EmotionPipelineError('IO', `pip reported success but no torch ${REQUIRED_TORCH} wheel is in ${downloads}`)
      const requires = runPython(python, ['-c', READ_REQUIRES, join(downloads, torchWheel)], `read ${torchWheel}`)
        .split('\n')
        .filter(Boolean)
      const cuda = cudaRequirements(requires, variant)
      if (cuda.length > 0) pipDownload(python, downloads, cuda, true, log)
      const wanted = new Set([torchWheel, ...wheelsFor(downloads, cuda, variant)])
      archives = [...wanted].map((f) => join(downloads, f))
    }
    runPython(python, ['-c', EXTRACT, staging, ...archives], 'unpack the wheels', true)

    const rootName = torchRootIn(staging)
    if (!rootName)
      throw invalidOption(
        'from',
        `none of ${archives.map((a) => basename(a)).join(', ')} contains libtorch (lib/libtorch_cpu.so): pass the torch wheel or a libtorch .zip`,
      )
    const version = readTorchVersion(join(staging, rootName))
    if (!version || !versionMatches(version)) {
      throw new EmotionPipelineError(
        'LIBTORCH_VERSION',
        `${archives.map((a) => basename(a)).join(', ')} holds torch ${version ?? 'of unknown version'}, but emotion-pipeline needs ${REQUIRED_TORCH}`,
      )
    }
    if (version.includes('+cu') && rootName === 'torch') {
      const cudaLib = join(staging, 'nvidia', 'cu13', 'lib')
      const missing = ['libcudart.so.13', 'libcupti.so.13'].filter((f) => !existsSync(join(cudaLib, f)))
      if (missing.length > 0) {
        throw invalidOption(
          'from',
          `libtorch_cpu.so of this CUDA build needs ${missing.join(' and ')}: add the nvidia-cuda-runtime and nvidia-cuda-cupti wheels`,
        )
      }
    }
    const files = archives.map((a) => basename(a))
    const marker = { version, variant, root: rootName, files, installedAt: new Date().toISOString() }
    writeFileSync(join(staging, INSTALL_MARKER), JSON.stringify(marker, null, 2) + '\n')

    const old = `${dir}.old-${process.pid}`
    if (existsSync(dir)) renameSync(dir, old)
    renameSync(staging, dir)
    rmSync(old, { recursive: true, force: true })
    if (from.length === 0) rmSync(downloads, { recursive: true, force: true })
    const bytes = folderBytes(dir)
    log(`libtorch ${version} (${variant}) installed in ${dir}: ${(bytes / 2 ** 30).toFixed(2)} GiB`)
    return { dir, root: join(dir, rootName), variant, version, bytes, files }
  } catch (err) {
    rmSync(staging, { recursive: true, force: true })
    throw err
  }
}

/** The downloaded wheels that belong to `specs` (and their dependencies, for the CUDA set). */
function wheelsFor(downloads: string, specs: string[], variant: TorchVariant): string[] {
  const all = readdirSync(downloads).filter((f) => f.endsWith('.whl') && !f.startsWith('torch-'))
  if (variant === 'cuda') return all
  // For --cpu keep exactly the runtime and CUPTI (and the cuda-toolkit metadata wheel), even if a
  // previous --cuda run left other wheels in the download folder.
  return specs.length === 0 ? [] : all.filter((f) => /^(nvidia_cuda_runtime|nvidia_cuda_cupti|cuda_toolkit)-/.test(f))
}
