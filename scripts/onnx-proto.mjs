// ONNX's schema (`onnx.proto`, Apache-2.0) for the Rust core's ONNX writer, taken from the PyPI `onnx`
// wheel once per machine into the cache, the way the CUDA-graph shim takes its headers from a wheel:
// nothing third-party is copied into the repository, and no `protoc` is needed (build.rs compiles the
// file with protox). The version is the one the contributor venv's checker runs.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

export const ONNX_VERSION = '1.18.0'

/** The folder under `cache` holding `onnx.proto`; fetched with pip (the machine's index settings) when missing. */
export function onnxProtoDir(cache, python, log = (m) => console.error(m)) {
  const dir = join(cache, `onnx-proto-${ONNX_VERSION}`)
  if (existsSync(join(dir, '.complete'))) return dir
  log(`fetching onnx.proto from the PyPI onnx ${ONNX_VERSION} wheel (~17 MB, once) for the ONNX exporter…`)
  const partial = `${dir}.partial-${process.pid}`
  rmSync(partial, { recursive: true, force: true })
  mkdirSync(partial, { recursive: true })
  const py = python || 'python3'
  const pip = ['-m', 'pip', 'download', '--disable-pip-version-check', '-q', '--no-deps', '--only-binary=:all:', '-d', partial]
  execFileSync(py, [...pip, `onnx==${ONNX_VERSION}`], { stdio: ['ignore', 2, 'inherit'] })
  const wheel = readdirSync(partial).find((f) => f.startsWith(`onnx-${ONNX_VERSION}-`) && f.endsWith('.whl'))
  if (!wheel) throw new Error(`pip reported success but no onnx ${ONNX_VERSION} wheel is in ${partial}`)
  const extract = `import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
open(sys.argv[2], 'wb').write(z.read('onnx/onnx.proto'))
lic = [n for n in z.namelist() if n.endswith('.dist-info/licenses/LICENSE') or n.endswith('.dist-info/LICENSE')]
if lic: open(sys.argv[3], 'wb').write(z.read(lic[0]))`
  execFileSync(py, ['-c', extract, join(partial, wheel), join(partial, 'onnx.proto'), join(partial, 'LICENSE')])
  rmSync(join(partial, wheel))
  writeFileSync(join(partial, '.complete'), `${ONNX_VERSION}\n`)
  rmSync(dir, { recursive: true, force: true })
  renameSync(partial, dir)
  return dir
}
