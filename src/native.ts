// Loads the native addon on first use, never at import: `import('emotion-pipeline')` and `doctor`
// work without libtorch, and a call that needs torch rejects with a coded error instead of a crash.
//
// The addon links `libtorch_cpu.so` and `libc10.so` by name, with no rpath. The library search path
// cannot change once Node runs, so the torch-free loader addon first opens libtorch's libraries by
// absolute path with RTLD_GLOBAL (the dynamic loader then satisfies the addon's entries from them),
// adds `libtorch_cuda.so` when it loads, and only then is the main addon required.
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type * as Native from '../bindings/index.js'
import { EmotionPipelineError } from './errors.js'
import { installTorchCommand, locateLibtorch, REQUIRED_TORCH, type LibtorchLocation, type LibtorchSearch } from './libtorch.js'

const require = createRequire(import.meta.url)
export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..')

/** The npm package that carries the prebuilt addons for this platform. */
export const PLATFORM_PACKAGE = '@emotion-pipeline/linux-x64-gnu'
const ADDON_FILE = 'emotion-pipeline.linux-x64-gnu.node'
const LOADER_FILE = 'emotion-pipeline-loader.linux-x64-gnu.node'
/** The CUDA-graph shim (built only against CUDA libtorch; it needs libtorch_cuda's symbols). */
export const CUDA_GRAPH_FILE = 'emotion-pipeline-cuda-graph.linux-x64-gnu.so'
/** The Gloo process-group shim (data-parallel training; built where apt could fetch Gloo's headers). */
export const GLOO_FILE = 'emotion-pipeline-gloo.linux-x64-gnu.so'

interface Loader {
  preload(paths: string[], stopOnError: boolean): { path: string; loaded: boolean; error?: string | null }[]
  glibcVersion(): string
}

export interface AddonLocation {
  dir: string
  /** `repository build` (bindings/ in a clone) or the platform package's name. */
  from: string
}

export interface NativeState {
  addon?: AddonLocation
  search?: LibtorchSearch
  libtorch?: LibtorchLocation
  /** Whether libtorch_cuda was loaded, and why not when it was not. */
  cuda: { loaded: boolean; problem?: string }
  /** Whether the CUDA-graph shim was loaded (`cudaGraph` training), and why not when it was not. */
  cudaGraph: { loaded: boolean; problem?: string }
  /** Whether the Gloo shim was loaded (data-parallel training), and why not when it was not. */
  gloo: { loaded: boolean; problem?: string }
  glibc?: string
  error?: EmotionPipelineError
}

/** Where the `.node` files are: a repository build first, then the platform package. */
export function findAddon(): AddonLocation | undefined {
  const local = join(packageRoot, 'bindings')
  if (existsSync(join(local, ADDON_FILE)) && existsSync(join(local, LOADER_FILE))) return { dir: local, from: 'repository build' }
  try {
    const dir = dirname(require.resolve(`${PLATFORM_PACKAGE}/package.json`))
    if (existsSync(join(dir, ADDON_FILE))) return { dir, from: PLATFORM_PACKAGE }
  } catch {
    // not installed: reported below
  }
  return undefined
}

let state: NativeState | undefined
let loaded: typeof Native | undefined

function fail(code: 'LIBTORCH_NOT_FOUND' | 'LIBTORCH_VERSION' | 'INTERNAL', message: string, cause?: unknown): never {
  const error = new EmotionPipelineError(code, message, { cause })
  state!.error = error
  throw error
}

/** libtorch's libraries in the order their dependencies need (each one's RPATH finds the rest). */
function cpuLibraries(libDir: string): string[] {
  return ['libc10.so', 'libtorch_cpu.so'].map((f) => join(libDir, f))
}

function cudaLibraries(libDir: string): string[] {
  return ['libc10_cuda.so', 'libtorch_cuda.so'].map((f) => join(libDir, f))
}

function load(): typeof Native {
  state = { cuda: { loaded: false }, cudaGraph: { loaded: false }, gloo: { loaded: false } }
  const addon = findAddon()
  state.addon = addon
  if (!addon) {
    fail(
      'INTERNAL',
      `emotion-pipeline: no prebuilt addon for ${process.platform}-${process.arch} (looked in ${join(packageRoot, 'bindings')} and ` +
        `the package ${PLATFORM_PACKAGE}). Supported: Linux x64 with glibc. Reinstall without --no-optional, or build from source (npm run build).`,
    )
  }
  let loader: Loader
  try {
    loader = require(join(addon.dir, LOADER_FILE)) as Loader
  } catch (err) {
    // The loader needs nothing but glibc: failing here means the C library is older than the baseline.
    const why = err instanceof Error ? err.message.split('\n')[0] : String(err)
    fail(
      'INTERNAL',
      `emotion-pipeline: the prebuilt addon in ${addon.dir} does not load on this system (${why}); it needs glibc ≥ 2.34`,
      err,
    )
  }
  state.glibc = loader.glibcVersion()
  const search = locateLibtorch()
  state.search = search
  const fix = installTorchCommand()
  if (!search.found) {
    if (search.versionError)
      fail(
        'LIBTORCH_VERSION',
        `${search.versionError}. Fix: ${fix} (or point EMOTION_PIPELINE_LIBTORCH at a torch ${REQUIRED_TORCH} folder).`,
      )
    const tried = search.candidates.map((c) => `${c.via}: ${c.skipped}`).join('; ')
    fail('LIBTORCH_NOT_FOUND', `libtorch ${REQUIRED_TORCH} not found (${tried}). Fix: ${fix}`)
  }
  const lib = search.found
  state.libtorch = lib
  const cpu = loader.preload(cpuLibraries(lib.libDir), true)
  const bad = cpu.find((o) => !o.loaded)
  if (bad) fail('LIBTORCH_NOT_FOUND', `libtorch at ${lib.root} (${lib.via}) did not load: ${bad.error}. Fix: ${fix}`)
  if (existsSync(join(lib.libDir, 'libtorch_cuda.so'))) {
    const cuda = loader.preload(cudaLibraries(lib.libDir), true)
    const failed = cuda.find((o) => !o.loaded)
    state.cuda = failed ? { loaded: false, problem: `libtorch_cuda.so did not load, CPU only: ${failed.error}` } : { loaded: true }
  } else {
    state.cuda = { loaded: false, problem: `CPU-only libtorch (no libtorch_cuda.so in ${lib.libDir})` }
  }
  state.cudaGraph = loadCudaGraphShim(loader, addon.dir, state.cuda.loaded)
  state.gloo = loadShim(loader, addon.dir, GLOO_FILE)
  let addonModule: typeof Native
  try {
    addonModule = require(join(addon.dir, ADDON_FILE)) as typeof Native
  } catch (err) {
    const why = err instanceof Error ? err.message.split('\n')[0] : String(err)
    fail(
      'INTERNAL',
      `emotion-pipeline: the native addon in ${addon.dir} did not load with libtorch ${lib.version} from ${lib.root}: ${why}`,
      err,
    )
  }
  try {
    addonModule.checkEnvironment()
  } catch (err) {
    const e = err as Error & { code?: string }
    state.error = new EmotionPipelineError('INVALID_OPTION', e.message.replace(/^\[?INVALID_OPTION\]?:?\s*/, ''), { cause: err })
    throw state.error
  }
  return addonModule
}

/**
 * Opens the CUDA-graph shim with RTLD_GLOBAL after libtorch_cuda, where the core finds its functions
 * by name. Its absence only turns `cudaGraph` into a warning and eager training.
 */
function loadCudaGraphShim(loader: Loader, dir: string, cudaLoaded: boolean): NativeState['cudaGraph'] {
  if (!cudaLoaded) return { loaded: false, problem: 'libtorch_cuda is not loaded' }
  return loadShim(loader, dir, CUDA_GRAPH_FILE)
}

/** Opens a shim of the core with RTLD_GLOBAL (the core finds its functions by name). */
function loadShim(loader: Loader, dir: string, name: string): { loaded: boolean; problem?: string } {
  const file = join(dir, name)
  if (!existsSync(file)) return { loaded: false, problem: `${name} is not in ${dir}` }
  const [result] = loader.preload([file], true)
  return result?.loaded ? { loaded: true } : { loaded: false, problem: `${file} did not load: ${result?.error}` }
}

/** Loads the addon once; later calls return it or rethrow the first failure. */
export function loadNative(): typeof Native {
  if (loaded) return loaded
  if (state?.error) throw state.error
  loaded = load()
  return loaded
}

/** What the loader found and did so far (without loading anything when nothing was loaded yet). */
export function nativeState(): NativeState | undefined {
  return state
}

/** The addon, loaded on first property access. */
export const native: typeof Native = new Proxy({} as typeof Native, {
  get: (_target, key) => Reflect.get(loadNative(), key),
})
export type { Native }
