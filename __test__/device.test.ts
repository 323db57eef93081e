import test from 'ava'
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { cudaGraphSelfTest, tensorRoundTrip } from '../src/dev.js'
import { deviceInfo, EmotionPipelineError } from '../src/index.js'

const root = resolve(import.meta.dirname, '..')

test('deviceInfo reports libtorch 2.11 and a consistent CUDA picture', (t) => {
  const info = deviceInfo()
  t.regex(info.torchVersion, /^2\.11\.0/)
  t.true(info.libtorch.path.endsWith('/lib'), info.libtorch.path)
  t.truthy(info.libtorch.source, 'says how libtorch was found')
  t.is(info.cudaDeviceCount, info.devices.length)
  t.is(info.cudaAvailable, info.cudaDeviceCount > 0)
  if (!info.cudaAvailable) {
    t.truthy(info.cudaProblem, 'a machine without CUDA must say why')
    t.log(`no CUDA here: ${info.cudaProblem}`)
  }
  t.true(info.cpuThreads >= 1)
  // The core finds the CUDA-graph shim's functions exactly when the loader opened the shim (CUDA libtorch).
  const shim = existsSync(join(root, 'bindings', 'emotion-pipeline-cuda-graph.linux-x64-gnu.so'))
  const cudaLibtorch = existsSync(join(info.libtorch.path, 'libtorch_cuda.so'))
  t.is(info.cudaGraphs, shim && cudaLibtorch)
})

test('the CUDA-graph self-test needs a CUDA device: a coded error on the CPU, never a crash', (t) => {
  const cpu = t.throws(() => cudaGraphSelfTest('cpu'), { instanceOf: EmotionPipelineError })
  t.is(cpu!.code, 'INVALID_OPTION')
  t.regex(cpu!.message, /CUDA graphs need a CUDA device/)
  if (!deviceInfo().cudaAvailable) {
    t.is(t.throws(() => cudaGraphSelfTest('cuda'), { instanceOf: EmotionPipelineError })!.code, 'CUDA_UNAVAILABLE')
    t.log('the capture itself is checked by npm run test:gpu')
  }
})

test('a tensor goes through libtorch and back unchanged', (t) => {
  const data = Float32Array.from({ length: 12 }, (_, i) => i * 0.5)
  const r = tensorRoundTrip(data, [3, 4])
  t.deepEqual(Array.from(r.data), Array.from(data))
  t.deepEqual(r.shape, [3, 4])
  t.is(r.sum, 33)
})

test('a libtorch failure rejects with code TORCH and the process lives on', (t) => {
  const err = t.throws(() => tensorRoundTrip(new Float32Array(5), [2, 2]), { instanceOf: EmotionPipelineError })
  t.is(err!.code, 'TORCH')
  t.regex(err!.message, /shape '\[2, 2\]' is invalid for input of size 5/)
  // The addon still works after the failure.
  t.is(tensorRoundTrip(new Float32Array([1, 2]), [2]).sum, 3)
})

test('asking for CUDA without a GPU is CUDA_UNAVAILABLE, never a silent CPU fallback', (t) => {
  if (deviceInfo().cudaAvailable) {
    t.pass('CUDA present: covered by the GPU tests')
    return
  }
  const err = t.throws(() => tensorRoundTrip(new Float32Array([1]), [1], 'cuda'), { instanceOf: EmotionPipelineError })
  t.is(err!.code, 'CUDA_UNAVAILABLE')
  t.regex(err!.message, /cuda:0/)
  const bad = t.throws(() => tensorRoundTrip(new Float32Array([1]), [1], 'gpu' as never))
  t.is((bad as EmotionPipelineError).code, 'INVALID_OPTION')
})

test('the package resolves by name through its exports map', async (t) => {
  const mod = await import('emotion-pipeline')
  t.is(typeof mod.deviceInfo, 'function')
  t.is(typeof mod.extractMel, 'function')
})

test('CLI doctor prints a readable report and valid JSON', (t) => {
  const cli = join(root, 'dist', 'cli.js')
  const text = execFileSync(process.execPath, [cli, 'doctor'], { encoding: 'utf8' })
  t.regex(text, /libtorch\s+2\.11\.0/)
  t.regex(text, /CUDA/)
  const json = JSON.parse(execFileSync(process.execPath, [cli, 'doctor', '--json'], { encoding: 'utf8' }))
  t.regex(json.device.torchVersion, /^2\.11/)
  t.true(Array.isArray(json.checks))
  t.true(json.libtorchSearch.candidates.length >= 2, 'lists the places it looked')
  if (!json.device.cudaAvailable) t.truthy(json.checks.find((c: { name: string; fix?: string }) => c.name === 'CUDA' && c.fix))
})

test('the TypeScript option types are the ones generated from the Rust schema (snapshot of the public surface)', (t) => {
  // scripts/gen-types.mjs --check regenerates src/generated/options.ts from the committed schema, which
  // crates/emotion-core/tests/schema.rs keeps equal to the Rust types: a changed option shows in review.
  const r = spawnSync(process.execPath, [join(root, 'scripts', 'gen-types.mjs'), '--check'], { encoding: 'utf8' })
  t.is(r.status, 0, r.stderr)
})
