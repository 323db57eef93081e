// `install-torch` with careless input: each failure is a coded error naming the option or file, and
// nothing half-installed is left where the loader would pick it up.
import test from 'ava'
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { installedRoot } from '../src/libtorch.js'
import { tempDir } from './helpers.js'

const cli = resolve(import.meta.dirname, '..', 'dist', 'cli.js')

function installTorch(args: string[]) {
  return spawnSync(process.execPath, [cli, 'install-torch', ...args], { encoding: 'utf8', timeout: 300_000 })
}

/** The install folder and its siblings must hold nothing the loader or a later run could mistake for an install. */
function assertNothingInstalled(
  t: { false: (v: boolean, m?: string) => void; deepEqual: (a: unknown, b: unknown, m?: string) => void },
  dir: string,
) {
  t.false(existsSync(dir), `${dir} must not exist`)
  const leftovers = existsSync(dirname(dir)) ? readdirSync(dirname(dir)).filter((f) => f.includes('.partial-') || f.includes('.old-')) : []
  t.deepEqual(leftovers, [], 'no staging folder left behind')
}

/** A zip made with Python's zipfile (the wheel format). */
function makeZip(path: string, files: Record<string, string>) {
  execFileSync('python3', [
    '-c',
    'import json, sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], "w") as z:\n    for k, v in json.loads(sys.argv[2]).items(): z.writestr(k, v)',
    path,
    JSON.stringify(files),
  ])
}

test('an unknown flag is INVALID_OPTION with exit code 2', (t) => {
  const r = installTorch(['--gpu'])
  t.is(r.status, 2)
  t.regex(r.stderr, /INVALID_OPTION.*--gpu/)
})

test('--cpu with --cuda is INVALID_OPTION', (t) => {
  const r = installTorch(['--cpu', '--cuda', '--dir', join(tempDir(), 'torch')])
  t.is(r.status, 1)
  t.regex(r.stderr, /INVALID_OPTION.*--cpu\/--cuda/)
})

test('--from a missing file names the option and the file', (t) => {
  const dir = join(tempDir(), 'torch')
  const r = installTorch(['--from', '/nonexistent/torch.whl', '--dir', dir])
  t.is(r.status, 1)
  t.regex(r.stderr, /INVALID_OPTION.*`from`.*\/nonexistent\/torch\.whl/)
  assertNothingInstalled(t, dir)
})

test('--from a corrupt wheel (an interrupted download) names the file and installs nothing', (t) => {
  const work = tempDir()
  const whl = join(work, 'torch-2.11.0-cp311-cp311-manylinux_2_28_x86_64.whl')
  makeZip(whl, { 'torch/version.py': "__version__ = '2.11.0'\n", 'torch/lib/libtorch_cpu.so': 'x'.repeat(4096) })
  // Cut the archive short, as a download stopped halfway would.
  writeFileSync(whl, readFileSync(whl).subarray(0, 2000))
  const dir = join(work, 'torch')
  const r = installTorch(['--from', whl, '--dir', dir])
  t.is(r.status, 1)
  t.regex(r.stderr, new RegExp(`IO.*${whl.replace(/[.]/g, '\\.')}`))
  assertNothingInstalled(t, dir)
})

test('--from a wheel of another torch version is LIBTORCH_VERSION and installs nothing', (t) => {
  const work = tempDir()
  const whl = join(work, 'torch-2.9.1-cp311-cp311-manylinux_2_28_x86_64.whl')
  makeZip(whl, { 'torch/version.py': "__version__ = '2.9.1+cpu'\n", 'torch/lib/libtorch_cpu.so': 'x' })
  const dir = join(work, 'torch')
  const r = installTorch(['--from', whl, '--dir', dir])
  t.is(r.status, 1)
  t.regex(r.stderr, /LIBTORCH_VERSION.*torch-2\.9\.1.*2\.9\.1\+cpu.*2\.11\.0/)
  assertNothingInstalled(t, dir)
})

test('--from a zip without libtorch says what to pass', (t) => {
  const work = tempDir()
  const zip = join(work, 'weights.zip')
  makeZip(zip, { 'model.bin': 'x' })
  const r = installTorch(['--from', zip, '--dir', join(work, 'torch')])
  t.is(r.status, 1)
  t.regex(r.stderr, /INVALID_OPTION.*weights\.zip.*libtorch_cpu\.so/)
})

test('an install folder under a regular file is an IO error naming --dir', (t) => {
  const file = join(tempDir(), 'a-file')
  writeFileSync(file, 'not a folder')
  const r = installTorch(['--cpu', '--dir', join(file, 'torch')])
  t.is(r.status, 1)
  t.regex(r.stderr, /IO.*`dir`.*a-file\/torch.*a-file is a file, not a folder/)
})

test('--from a libtorch-layout archive installs it; the loader finds it only once the marker is written', (t) => {
  const work = tempDir()
  const zip = join(work, 'libtorch-cxx11-abi-shared-with-deps-2.11.0+cpu.zip')
  makeZip(zip, { 'libtorch/build-version': '2.11.0+cpu\n', 'libtorch/lib/libtorch_cpu.so': 'x', 'libtorch/lib/libc10.so': 'x' })
  const dir = join(work, 'torch')
  const r = installTorch(['--from', zip, '--dir', dir])
  t.is(r.status, 0, r.stderr)
  t.is(installedRoot(dir), join(dir, 'libtorch'))
  const marker = JSON.parse(readFileSync(join(dir, '.emotion-pipeline-install.json'), 'utf8'))
  t.is(marker.version, '2.11.0+cpu')
  t.deepEqual(marker.files, [zip.split('/').pop()])
})

test('a download interrupted earlier resumes: a truncated wheel left in the download folder is fetched again and the install completes', (t) => {
  const work = tempDir()
  const dir = join(work, 'torch-2.11.0')
  const downloads = `${dir}.downloads`
  // What a killed run leaves: the download folder with a partial runtime wheel in it.
  const first = installTorch(['--cpu', '--dir', dir])
  t.is(first.status, 0, first.stderr)
  t.truthy(installedRoot(dir))
  t.false(existsSync(downloads), 'downloads are removed once the install succeeded')
  execFileSync('mkdir', ['-p', downloads])
  const partial = join(downloads, 'nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl')
  writeFileSync(partial, Buffer.alloc(100_000, 1))
  const again = installTorch(['--cpu', '--dir', dir])
  t.is(again.status, 0, again.stderr)
  t.truthy(installedRoot(dir))
  t.true(existsSync(join(dir, 'nvidia', 'cu13', 'lib', 'libcudart.so.13')))
})

test('staging left by an install killed before its end is removed by the next run; a live one is kept', (t) => {
  const base = tempDir()
  const dir = join(base, 'torch')
  const dead = join(base, 'torch.partial-999999999')
  const live = join(base, `torch.partial-${process.pid}`)
  for (const d of [dead, live, join(base, 'torch.old-999999999')]) {
    mkdirSync(join(d, 'lib'), { recursive: true })
    writeFileSync(join(d, 'lib', 'libtorch_cpu.so'), 'half')
  }
  const r = installTorch(['--from', '/nonexistent/torch.whl', '--dir', dir])
  t.is(r.status, 1)
  t.false(existsSync(dead))
  t.false(existsSync(join(base, 'torch.old-999999999')))
  t.true(existsSync(live), 'the staging of a process that still runs is not touched')
  t.regex(r.stderr, /removed torch\.partial-999999999, left by an install that was stopped before its end/)
})
