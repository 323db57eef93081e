// Builds the CUDA shim (crates/emotion-core/csrc/cuda/: CUDA graphs, graph.cpp, and c10d's NCCL
// process group, nccl.cpp) into its own shared object,
// bindings/emotion-pipeline-cuda-graph.linux-x64-gnu.so, against the libtorch the addons link. It
// needs `libtorch_cuda.so` and the CUDA runtime headers of the torch wheel's `nvidia/*` packages; the
// C runtime headers those include (`crt/host_config.h`) come from the pinned `nvidia-cuda-crt` wheel
// (the torch wheel's `cuda-toolkit[crt]` extra), unpacked into the cache once. Without CUDA libtorch the
// shim is not built and training runs eagerly. See docs/DESIGN.md ("CUDA graphs").
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { cacheDir } from './libtorch.mjs'
import { compileShim, shimFlags } from './shim-build.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
export const CUDA_GRAPH_FILE = 'emotion-pipeline-cuda-graph.linux-x64-gnu.so'
const CSRC = join(root, 'crates', 'emotion-core', 'csrc')
const SOURCES = ['cuda/graph.cpp', 'cuda/nccl.cpp'].map((f) => join(CSRC, f))
const HEADERS = ['guarded.hpp', 'process_group.hpp'].map((f) => join(CSRC, f))

/** `nvidia/<name>/include` folders under `dir` (a wheel layout) that hold `header`. */
function nvidiaIncludeDirs(dir, header) {
  const nvidia = join(dir, 'nvidia')
  if (!existsSync(nvidia)) return []
  return readdirSync(nvidia)
    .map((d) => join(nvidia, d, 'include'))
    .filter((d) => existsSync(join(d, header)))
}

/** The version of an installed distribution in site-packages (from its dist-info folder name). */
function installedVersion(sitePackages, dist) {
  const prefix = `${dist}-`
  const info = readdirSync(sitePackages).find((d) => d.startsWith(prefix) && d.endsWith('.dist-info'))
  return info?.slice(prefix.length, -'.dist-info'.length)
}

/**
 * Headers of the `crt` and `cccl` extras pinned by the installed cuda-toolkit (the C runtime's
 * `crt/host_config.h`; libcu++'s `nv/target`, which the fp16 headers NCCL's pull in need), unpacked
 * under the cache; their include folders.
 */
function toolkitIncludeDirs(sitePackages, python, log) {
  const toolkit = installedVersion(sitePackages, 'cuda_toolkit')
  if (!toolkit) throw new Error(`no cuda_toolkit distribution in ${sitePackages} to pin nvidia-cuda-crt by`)
  const dir = join(cacheDir(), `cuda-headers-${toolkit}`)
  const marker = join(dir, '.complete')
  if (!existsSync(marker)) {
    log(`fetching the CUDA C runtime and libcu++ headers (cuda-toolkit[crt,cccl]==${toolkit}, ~2 MB) for the CUDA shim…`)
    const partial = `${dir}.partial-${process.pid}`
    rmSync(partial, { recursive: true, force: true })
    mkdirSync(partial, { recursive: true })
    const py = python || 'python3'
    const pip = ['-m', 'pip', 'download', '--disable-pip-version-check', '-q', '--only-binary=:all:', '-d', partial]
    execFileSync(py, [...pip, `cuda-toolkit[crt,cccl]==${toolkit}`], { stdio: 'inherit' })
    const wheels = readdirSync(partial).filter((f) => /^nvidia_cuda_(crt|cccl)-/.test(f) && f.endsWith('.whl'))
    for (const whl of wheels) execFileSync(py, ['-m', 'zipfile', '-e', join(partial, whl), partial], { stdio: 'inherit' })
    writeFileSync(join(partial, '.complete'), toolkit)
    rmSync(dir, { recursive: true, force: true })
    renameSync(partial, dir)
  }
  const [crt] = nvidiaIncludeDirs(dir, join('crt', 'host_config.h'))
  const cccl = nvidiaIncludeDirs(dir, join('nv', 'target'))
  if (!crt) throw new Error(`crt/host_config.h not found in ${dir}`)
  if (!cccl.length) throw new Error(`nv/target not found in ${dir}`)
  return [crt, ...cccl]
}

/**
 * Builds the shim when its source, the compiler flags or libtorch changed. Returns the built file, or
 * null (with the reason logged) when this libtorch has no CUDA: graphs then stay unavailable.
 */
export function buildCudaGraph(lib, { log = (m) => console.error(m) } = {}) {
  const out = join(root, 'bindings', CUDA_GRAPH_FILE)
  if (!existsSync(join(lib.libDir, 'libtorch_cuda.so'))) {
    log(`CPU-only libtorch (${lib.libDir}): the CUDA-graph shim is not built`)
    rmSync(out, { force: true })
    return null
  }
  const sitePackages = dirname(lib.root)
  const cudaIncludes = nvidiaIncludeDirs(sitePackages, 'cuda_runtime_api.h')
  if (!cudaIncludes.length) {
    log(`no CUDA runtime headers beside ${lib.root} (nvidia/*/include): the CUDA-graph shim is not built`)
    return null
  }
  const include = join(lib.root, 'include')
  const cudart = cudaIncludes
    .map((d) => join(dirname(d), 'lib'))
    .find((d) => existsSync(d) && readdirSync(d).some((f) => f.startsWith('libcudart.so.')))
  if (!cudart) throw new Error(`libcudart.so.* not found beside ${cudaIncludes.join(', ')}`)
  const cudartFile = readdirSync(cudart).find((f) => /^libcudart\.so\.\d+$/.test(f))
  const args = [
    ...shimFlags(include),
    ...cudaIncludes.flatMap((d) => ['-I', d]),
    ...toolkitIncludeDirs(sitePackages, lib.python, log).flatMap((d) => ['-I', d]),
    // The wheel's c10d headers hide ProcessGroupNCCL unless the build says it has NCCL; nccl.h comes
    // from the nvidia-nccl wheel torch depends on.
    '-DUSE_C10D_NCCL',
    ...nvidiaIncludeDirs(sitePackages, 'nccl.h').flatMap((d) => ['-I', d]),
    ...SOURCES,
    // By SONAME, no rpath: the loader opens these by absolute path before the shim (as for the addon).
    '-L',
    lib.libDir,
    '-ltorch_cuda',
    '-lc10_cuda',
    '-ltorch_cpu',
    '-lc10',
    '-L',
    cudart,
    `-l:${cudartFile}`,
  ]
  return compileShim({ root, out, args, lib, sources: [...SOURCES, ...HEADERS], label: 'CUDA shim (graphs, NCCL)', log })
}
