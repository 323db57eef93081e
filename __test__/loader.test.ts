// How the addon links and loads libtorch: one .node for CPU and CUDA, no path of the build machine
// inside, a stated glibc baseline, and coded errors (never a dead process) when libtorch is missing,
// broken or of another version.
import test from 'ava'
import { execFileSync, spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { tempDir } from './helpers.js'

const root = resolve(import.meta.dirname, '..')
const ADDON = join(root, 'bindings', 'emotion-pipeline.linux-x64-gnu.node')
const LOADER = join(root, 'bindings', 'emotion-pipeline-loader.linux-x64-gnu.node')
const GRAPH_SHIM = join(root, 'bindings', 'emotion-pipeline-cuda-graph.linux-x64-gnu.so')

/** The baseline the README states; raising it must be a deliberate change of this test and the README. */
const BASELINE = { GLIBC: '2.34', GLIBCXX: '3.4.26' }

function dynamic(file: string): string {
  return execFileSync('readelf', ['-d', file], { encoding: 'utf8' })
}

function needed(file: string): string[] {
  return [...dynamic(file).matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1])
}

function maxVersion(file: string, prefix: 'GLIBC' | 'GLIBCXX'): string {
  const text = execFileSync('objdump', ['-T', file], { encoding: 'utf8' })
  const versions = [...text.matchAll(new RegExp(`\\(${prefix}_([0-9.]+)\\)`, 'g'))].map((m) => m[1])
  return versions.sort(compareVersions).pop() ?? '0'
}

function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number)
  const pb = b.split('.').map(Number)
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0)
    if (d !== 0) return d
  }
  return 0
}

test('the addon needs libtorch_cpu and libc10 by name only: no libtorch_cuda, no libtorch.so, no rpath', (t) => {
  const libs = needed(ADDON)
  t.true(libs.includes('libtorch_cpu.so'), libs.join(' '))
  t.true(libs.includes('libc10.so'), libs.join(' '))
  for (const cudaOnly of ['libtorch_cuda.so', 'libtorch.so', 'libc10_cuda.so'])
    t.false(libs.includes(cudaOnly), `${cudaOnly} must load at run time, not link time`)
  for (const file of [ADDON, LOADER]) t.notRegex(dynamic(file), /\((RPATH|RUNPATH)\)/, `${file} carries no path of the build machine`)
  t.deepEqual(
    needed(LOADER).filter((l) => /torch|c10/.test(l)),
    [],
    'the loader is torch-free',
  )
})

test(`the addons run on glibc ${BASELINE.GLIBC} with libstdc++ GLIBCXX_${BASELINE.GLIBCXX} (the README's baseline)`, (t) => {
  for (const file of [ADDON, LOADER]) {
    const glibc = maxVersion(file, 'GLIBC')
    t.true(compareVersions(glibc, BASELINE.GLIBC) <= 0, `${file} needs GLIBC_${glibc}`)
    t.log(`${file.split('/').pop()}: GLIBC_${glibc}, GLIBCXX_${maxVersion(file, 'GLIBCXX')}`)
  }
  t.true(compareVersions(maxVersion(ADDON, 'GLIBCXX'), BASELINE.GLIBCXX) <= 0)
})

test('the CUDA-graph shim needs libtorch_cuda by name, carries no rpath and keeps the glibc baseline', (t) => {
  if (!existsSync(GRAPH_SHIM)) {
    t.log(`SKIPPED: ${GRAPH_SHIM} was not built (CPU-only libtorch)`)
    t.pass()
    return
  }
  const libs = needed(GRAPH_SHIM)
  for (const lib of ['libtorch_cuda.so', 'libc10_cuda.so', 'libtorch_cpu.so']) t.true(libs.includes(lib), libs.join(' '))
  t.notRegex(dynamic(GRAPH_SHIM), /\((RPATH|RUNPATH)\)/)
  t.true(compareVersions(maxVersion(GRAPH_SHIM, 'GLIBC'), BASELINE.GLIBC) <= 0)
  t.true(compareVersions(maxVersion(GRAPH_SHIM, 'GLIBCXX'), BASELINE.GLIBCXX) <= 0)
  const symbols = execFileSync('nm', ['-D', '--defined-only', GRAPH_SHIM], { encoding: 'utf8' })
  for (const f of ['emotion_cuda_stream_enter', 'emotion_cuda_graph_begin', 'emotion_cuda_graph_replay'])
    t.regex(symbols, new RegExp(`\\b${f}\\b`))
})

test('libtorch_cuda is brought in at run time exactly when present; importing alone loads nothing', (t) => {
  // A fresh process: nothing loaded until the first native call.
  const script = `
    const m = await import(${JSON.stringify(join(root, 'dist', 'index.js'))})
    const dev = await import(${JSON.stringify(join(root, 'dist', 'dev.js'))})
    const before = (await import('node:fs')).readFileSync('/proc/self/maps', 'utf8').includes('libtorch_cpu.so')
    const info = m.deviceInfo()
    const maps = (await import('node:fs')).readFileSync('/proc/self/maps', 'utf8')
    console.log(JSON.stringify({ before, cpu: maps.includes('libtorch_cpu.so'), cuda: maps.includes('libtorch_cuda.so'), graph: maps.includes('emotion-pipeline-cuda-graph'), path: info.libtorch.path, sum: dev.tensorRoundTrip(new Float32Array([1, 2]), [2]).sum }))`
  const env = { ...process.env }
  delete env.LD_LIBRARY_PATH
  const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env }))
  t.false(out.before, 'importing the package loads no libtorch')
  t.true(out.cpu)
  t.is(out.sum, 3)
  const hasCuda = spawnSync('test', ['-e', join(out.path, 'libtorch_cuda.so')]).status === 0
  t.is(out.cuda, hasCuda, 'libtorch_cuda.so is loaded exactly when this libtorch has it')
  t.is(out.graph, hasCuda && existsSync(GRAPH_SHIM), 'the CUDA-graph shim is loaded after libtorch_cuda, only then')
})

/** Runs a script against the repository's dist with only `libtorchDir` as libtorch source. */
function withLibtorch(libtorchDir: string, script: string) {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    EMOTION_PIPELINE_LIBTORCH: libtorchDir,
    EMOTION_PIPELINE_CACHE: tempDir('ep-empty-cache-'),
  }
  delete env.LD_LIBRARY_PATH
  delete env.LIBTORCH
  return spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env })
}

const probe = `
  const m = await import(${JSON.stringify(join(root, 'dist', 'index.js'))})
  const report = m.doctor()
  let rejected = null
  try { await m.indexDataset('/nonexistent') } catch (e) { rejected = e.code + ': ' + e.message }
  console.log(JSON.stringify({ error: report.error, rejected, alive: true }))`

test('a libtorch of another version is LIBTORCH_VERSION naming both versions; the process lives on', (t) => {
  const fake = tempDir('ep-fake-torch-')
  mkdirSync(join(fake, 'lib'))
  writeFileSync(join(fake, 'lib', 'libtorch_cpu.so'), '')
  writeFileSync(join(fake, 'version.py'), "__version__ = '2.9.1+cpu'\n")
  const r = withLibtorch(fake, probe)
  t.is(r.status, 0, r.stderr)
  const out = JSON.parse(r.stdout)
  t.is(out.error.code, 'LIBTORCH_VERSION')
  t.regex(out.error.message, /2\.9\.1\+cpu.*2\.11\.0/)
  t.regex(out.rejected, /^LIBTORCH_VERSION/)
  t.true(out.alive)
})

test('a broken libtorch (a library that does not load) is LIBTORCH_NOT_FOUND with the loader message, not a crash', (t) => {
  const fake = tempDir('ep-broken-torch-')
  mkdirSync(join(fake, 'lib'))
  writeFileSync(join(fake, 'lib', 'libtorch_cpu.so'), 'not an ELF file')
  copyFileSync(LOADER, join(fake, 'lib', 'libc10.so')) // loads fine; libtorch_cpu.so does not
  writeFileSync(join(fake, 'version.py'), "__version__ = '2.11.0'\n")
  const r = withLibtorch(fake, probe)
  t.is(r.status, 0, r.stderr)
  const out = JSON.parse(r.stdout)
  t.is(out.error.code, 'LIBTORCH_NOT_FOUND')
  t.regex(out.error.message, /libtorch_cpu\.so.*(invalid ELF header|file too short)/)
  t.regex(out.error.message, /install-torch/)
  t.true(out.alive)
})

test('an explicit EMOTION_PIPELINE_LIBTORCH that is not libtorch is not silently replaced by another one', (t) => {
  const r = withLibtorch(tempDir('ep-not-torch-'), probe)
  const out = JSON.parse(r.stdout)
  t.is(out.error.code, 'LIBTORCH_NOT_FOUND')
  t.regex(out.error.message, /EMOTION_PIPELINE_LIBTORCH: no lib\/libtorch_cpu\.so/)
})
