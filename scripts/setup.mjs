#!/usr/bin/env node
// Everything `npm test` and `npm run demo` need on a fresh clone: npm packages, libtorch, the
// release addon (bindings/), the compiled TypeScript (dist/), the offline Whisper model, the encoders and
// (where apt-get can install it) the headless chromium of the browser-page test.
// Each step is skipped when up to date.
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { buildEnv, hostTarget, resolveLibtorch } from './libtorch.mjs'
import { buildCudaGraph } from './cuda-graph.mjs'
import { buildGloo } from './gloo.mjs'
import { ensureChromium } from './browser.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const log = (message) => console.error(`[setup] ${message}`)
const run = (cmd, args, env = process.env) => execFileSync(cmd, args, { cwd: root, stdio: 'inherit', env })

/** What the installed packages were resolved from: the manifests' contents (npm rewrites the lock file on every install, so its time says nothing). */
function manifestsDigest() {
  const hash = createHash('sha256')
  for (const f of ['package.json', 'package-lock.json']) {
    const file = join(root, f)
    hash.update(existsSync(file) ? readFileSync(file) : `no ${f}`)
  }
  return hash.digest('hex')
}

function ensureNodeModules() {
  const stamp = join(root, 'node_modules', '.emotion-pipeline-installed')
  if (existsSync(stamp) && readFileSync(stamp, 'utf8') === manifestsDigest()) return
  log('installing npm packages…')
  // onnxruntime-node (via transformers.js) would try to download CUDA binaries: its CPU build ships inside.
  const env = { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip', ONNXRUNTIME_NODE_INSTALL_CUDA: 'skip' }
  // `npm install`, not `npm ci`: npm 11's lock omits other platforms' optional packages and `ci` then refuses.
  run('npm', ['install', '--no-audit', '--no-fund'], env)
  writeFileSync(stamp, manifestsDigest())
}

/** The two addons: the torch-free loader (cargo, copied to its .node name) and the main addon (napi). */
function buildAddons(lib) {
  log(`building the native addons against libtorch ${lib.version} (${lib.source}: ${lib.root})…`)
  const env = buildEnv(lib)
  const target = hostTarget()
  run('cargo', ['build', '--release', '--target', target, '-p', 'emotion-loader'], env)
  replaceFile(
    join(root, 'target', target, 'release', 'libemotion_loader.so'),
    join(root, 'bindings', 'emotion-pipeline-loader.linux-x64-gnu.node'),
  )
  const staging = join(root, 'target', 'napi-out')
  mkdirSync(staging, { recursive: true })
  const napiArgs = ['build', '--platform', '--release', '--target', target, '--manifest-path', 'crates/emotion-napi/Cargo.toml']
  run(join(root, 'node_modules', '.bin', 'napi'), [...napiArgs, '--output-dir', staging, '--no-js', '--dts', 'index.d.ts'], env)
  replaceFile(join(staging, 'emotion-pipeline.linux-x64-gnu.node'), join(root, 'bindings', 'emotion-pipeline.linux-x64-gnu.node'))
  replaceFile(join(staging, 'index.d.ts'), join(root, 'bindings', 'index.d.ts'))
}

/**
 * Copies to a temporary name, then renames: a process that has the old addon loaded keeps its
 * (unlinked) file, where writing over it in place corrupts its mapped code (a SIGSEGV seen when a
 * rebuild ran beside a long test).
 */
function replaceFile(from, to) {
  const tmp = `${to}.tmp-${process.pid}`
  copyFileSync(from, tmp)
  renameSync(tmp, to)
}

// The Python references some tests compare with (optimum's Whisper export, the onnx checker), pinned to
// versions that export Whisper together; installed into the contributor venv, never into the product.
const REFERENCE_PACKAGES = ['transformers==4.52.4', 'optimum==1.26.1', 'onnx==1.18.0', 'onnxruntime==1.22.0']

function ensureReferencePackages(python) {
  if (!python) return
  try {
    execFileSync(python, ['-c', 'import transformers, optimum.exporters.onnx, onnx, onnxruntime'], { stdio: 'ignore' })
  } catch {
    log(`installing the Python references (${REFERENCE_PACKAGES.join(' ')}) into the contributor venv…`)
    try {
      run(python, ['-m', 'pip', 'install', '--disable-pip-version-check', '-q', ...REFERENCE_PACKAGES])
    } catch (err) {
      log(`warning: the Python references could not be installed (${err.message.split('\n')[0]}); their tests will skip`)
    }
  }
}

function buildTypeScript() {
  log('compiling TypeScript (option types generated from the Rust schema first)…')
  run(process.execPath, [join(root, 'scripts', 'gen-types.mjs')])
  run(join(root, 'node_modules', '.bin', 'tsc'), ['-p', 'tsconfig.json'])
}

try {
  ensureNodeModules()
  const lib = resolveLibtorch({ log })
  buildAddons(lib)
  try {
    buildCudaGraph(lib, { log })
  } catch (err) {
    // Optional: without the shim `cudaGraph` trains eagerly with a warning; everything else works.
    log(`warning: the CUDA-graph shim was not built (${err.message.split('\n')[0].slice(0, 200)}); cudaGraph will train eagerly`)
  }
  try {
    buildGloo(lib, { log })
  } catch (err) {
    // Optional: without the shim data-parallel training is refused with the reason; the rest works.
    log(`warning: the Gloo shim was not built (${err.message.split('\n')[0].slice(0, 200)}); data-parallel training will be unavailable`)
  }
  buildTypeScript()
  // The model installers are product code (`emotion-pipeline install-models`), compiled just now.
  const { installWhisperModel } = await import('../dist/whisper-install.js')
  const { ENCODER_NAMES, installEncoder } = await import('../dist/encoder-install.js')
  await installWhisperModel({ log })
  ensureReferencePackages(lib.python)
  for (const name of ENCODER_NAMES) await installEncoder(name, { log })
  ensureChromium(log)
} catch (err) {
  console.error(`[setup] failed: ${err.message}`)
  process.exit(1)
}
