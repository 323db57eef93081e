// What a user does: pack the main and platform packages, `npm install` the tarballs into an empty
// project with no Rust toolchain and no repository on PATH, then use the installed package.
// libtorch: the contributor venv this repository already set up (through $LIBTORCH) and a CPU-only
// libtorch made by `install-torch --cpu` in a temporary cache (pip serves the wheels from its cache
// after the first run).
import test from 'ava'
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { delimiter, join, resolve } from 'node:path'
import { locateLibtorch } from '../src/libtorch.js'
import { haveRavdess, NO_DATA, ravdessDir, tempDir } from './helpers.js'

const root = resolve(import.meta.dirname, '..')
const MAX_PLATFORM_BYTES = 20 * 2 ** 20
const MAX_MAIN_BYTES = 3 * 2 ** 20

/** PATH without any folder that holds cargo or rustc, and with nothing of the repository. */
function pathWithoutToolchain(): string {
  return (process.env.PATH ?? '')
    .split(delimiter)
    .filter((dir) => dir && !existsSync(join(dir, 'cargo')) && !existsSync(join(dir, 'rustc')) && !resolve(dir).startsWith(root))
    .join(delimiter)
}

/** The environment of a user's shell: no libtorch variables, no LD_LIBRARY_PATH, no toolchain. */
function userEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: pathWithoutToolchain(), ...extra }
  for (const name of ['LD_LIBRARY_PATH', 'LIBTORCH', 'EMOTION_PIPELINE_LIBTORCH', 'VIRTUAL_ENV', 'CARGO_HOME', 'RUSTUP_HOME']) {
    if (!(name in extra)) delete env[name]
  }
  return env
}

interface Project {
  dir: string
  cli: string
  sizes: { main: number; platform: number }
}

let project: Promise<Project> | undefined

/** Packs and installs once for all tests of this file. */
function installedProject(): Promise<Project> {
  project ??= (async () => {
    const work = tempDir('ep-install-')
    const started = Date.now()
    const packed = JSON.parse(
      execFileSync(process.execPath, [join(root, 'scripts', 'pack-release.mjs'), '--no-build', '--out', join(work, 'release')], {
        encoding: 'utf8',
      }),
    )
    const dir = join(work, 'project')
    mkdirSync(dir)
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'user-project', private: true, type: 'module' }))
    const env = userEnv()
    t0log(`packed in ${((Date.now() - started) / 1000).toFixed(1)} s`)
    execFileSync(
      'npm',
      ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', packed.platform.file, packed.main.file],
      { cwd: dir, env, stdio: 'pipe' },
    )
    t0log(`packed and installed in ${((Date.now() - started) / 1000).toFixed(1)} s`)
    return {
      dir,
      cli: join(dir, 'node_modules', '.bin', 'emotion-pipeline'),
      sizes: { main: packed.main.size, platform: packed.platform.size },
    }
  })()
  return project
}

const logs: string[] = []
function t0log(line: string) {
  logs.push(line)
}

/** A dataset of two actors, as a user would point at a folder. */
function twoActors(): string {
  const dir = tempDir('ep-two-actors-')
  for (const actor of ['Actor_01', 'Actor_02']) symlinkSync(join(ravdessDir, actor), join(dir, actor))
  return dir
}

function run(p: Project, args: string[], env: NodeJS.ProcessEnv) {
  return spawnSync(p.cli, args, { cwd: p.dir, env, encoding: 'utf8', timeout: 240_000 })
}

/** Trains the audio model 1 epoch on two actors with the installed CLI, then predicts one clip. */
function trainAndPredict(
  t: {
    is: (a: unknown, b: unknown, m?: string) => void
    regex: (s: string, r: RegExp, m?: string) => void
    log: (...a: unknown[]) => void
  },
  p: Project,
  env: NodeJS.ProcessEnv,
) {
  const out = join(tempDir('ep-install-run-'), 'run')
  const trained = run(
    p,
    ['train', '--data', twoActors(), '--out', out, '--models', 'audio', '--epochs', '1', '--device', 'cpu', '--quiet'],
    env,
  )
  t.is(trained.status, 0, trained.stderr)
  const metrics = JSON.parse(execFileSync('cat', [join(out, 'metrics.json')], { encoding: 'utf8' }))
  t.regex(JSON.stringify(metrics), /"accuracy"/)
  const clip = join(ravdessDir, 'Actor_01', readdirSync(join(ravdessDir, 'Actor_01')).sort()[0])
  const predicted = run(p, ['predict', '--run', out, clip], env)
  t.is(predicted.status, 0, predicted.stderr)
  t.regex(predicted.stdout, /neutral|calm|happy|sad|angry|fearful|disgust|surprised/)
}

test.serial('packages: main and platform tarballs within their size limits', async (t) => {
  const p = await installedProject()
  t.log(`main ${(p.sizes.main / 2 ** 20).toFixed(2)} MiB (limit 3), platform ${(p.sizes.platform / 2 ** 20).toFixed(2)} MiB (limit 20)`)
  for (const line of logs) t.log(line)
  t.true(p.sizes.main <= MAX_MAIN_BYTES)
  t.true(p.sizes.platform <= MAX_PLATFORM_BYTES)
  t.true(existsSync(join(p.dir, 'node_modules', '@emotion-pipeline', 'linux-x64-gnu', 'emotion-pipeline.linux-x64-gnu.node')))
  t.false(
    existsSync(join(p.dir, 'node_modules', 'emotion-pipeline', 'bindings', 'emotion-pipeline.linux-x64-gnu.node')),
    'no native code in the main package',
  )
})

test.serial('1. doctor --json names the libtorch it found ($LIBTORCH)', async (t) => {
  const p = await installedProject()
  const lib = locateLibtorch().found!
  const r = run(p, ['doctor', '--json'], userEnv({ LIBTORCH: lib.root }))
  t.is(r.status, 0, r.stderr)
  const report = JSON.parse(r.stdout)
  t.is(report.device.libtorch.source, '$LIBTORCH')
  t.is(report.device.libtorch.path, lib.libDir)
  t.is(report.addon.from, '@emotion-pipeline/linux-x64-gnu')
  // The platform package ships the CUDA-graph shim that this build made, and the core finds it loaded.
  const shim = 'emotion-pipeline-cuda-graph.linux-x64-gnu.so'
  const built = existsSync(join(root, 'bindings', shim))
  t.is(existsSync(join(p.dir, 'node_modules', '@emotion-pipeline', 'linux-x64-gnu', shim)), built)
  t.is(report.device.cudaGraphs, built && existsSync(join(lib.libDir, 'libtorch_cuda.so')))
})

test.serial('2. train 1 epoch on two actors and predict one clip from the installed package', async (t) => {
  if (!haveRavdess) {
    t.log(`SKIPPED: ${NO_DATA}`)
    return t.pass()
  }
  const p = await installedProject()
  trainAndPredict(t, p, userEnv({ LIBTORCH: locateLibtorch().found!.root }))
})

test.serial('3. with every libtorch source hidden: import works, calls reject LIBTORCH_NOT_FOUND, the CLI exits non-zero', async (t) => {
  const p = await installedProject()
  // No python3 either: PATH holds only node.
  const bin = tempDir('ep-only-node-')
  symlinkSync(process.execPath, join(bin, 'node'))
  const env = userEnv({ PATH: bin, EMOTION_PIPELINE_CACHE: tempDir('ep-empty-cache-') })
  const script = `
    const m = await import('emotion-pipeline')
    let code = null
    try { await m.trainPipeline({ data: '/nowhere', out: '/tmp/nowhere' }) } catch (e) { code = e.code; console.error(e.message) }
    const report = m.doctor()
    console.log(JSON.stringify({ code, doctor: report.checks.find((c) => c.name === 'libtorch'), alive: true }))`
  const r = spawnSync(join(bin, 'node'), ['--input-type=module', '-e', script], { cwd: p.dir, env, encoding: 'utf8' })
  t.is(r.status, 0, r.stderr)
  const out = JSON.parse(r.stdout)
  t.is(out.code, 'LIBTORCH_NOT_FOUND')
  t.regex(r.stderr, /npx emotion-pipeline install-torch --c(pu|uda)/, 'the message gives the command that fixes it')
  t.false(out.doctor.ok)
  t.true(out.alive)
  const cli = spawnSync(join(bin, 'node'), [p.cli, 'train', '--data', '/nowhere', '--out', '/tmp/nowhere'], {
    cwd: p.dir,
    env,
    encoding: 'utf8',
  })
  t.not(cli.status, 0)
  t.regex(cli.stderr, /LIBTORCH_NOT_FOUND/)
  const doctor = spawnSync(join(bin, 'node'), [p.cli, 'doctor'], { cwd: p.dir, env, encoding: 'utf8' })
  t.is(doctor.status, 1)
  t.regex(doctor.stdout, /✘ libtorch/)
})

test.serial(
  '4 + 5. install-torch --cpu gives a CPU libtorch without the heavy CUDA libraries, and a plain import trains on it',
  async (t) => {
    if (!haveRavdess) {
      t.log(`SKIPPED: ${NO_DATA}`)
      return t.pass()
    }
    const p = await installedProject()
    const cache = tempDir('ep-user-cache-')
    const env = userEnv({ EMOTION_PIPELINE_CACHE: cache })
    const started = Date.now()
    const installed = run(p, ['install-torch', '--cpu'], env)
    t.is(installed.status, 0, installed.stderr)
    const dir = join(cache, 'torch-2.11.0')
    const nvidia = join(dir, 'nvidia')
    const libs = readdirSync(join(nvidia, 'cu13', 'lib'))
    t.deepEqual(readdirSync(nvidia), ['cu13'])
    t.true(libs.includes('libcudart.so.13') && libs.includes('libcupti.so.13'))
    for (const heavy of ['libcublas.so.13', 'libcufft.so.12', 'libcusparse.so.12']) t.false(libs.includes(heavy), heavy)
    t.false(existsSync(join(nvidia, 'cudnn')))
    const bytes = du(dir)
    t.log(`install-torch --cpu: ${(bytes / 2 ** 30).toFixed(2)} GiB on disk, ${((Date.now() - started) / 1000).toFixed(1)} s`)

    const doctor = JSON.parse(run(p, ['doctor', '--json'], env).stdout)
    t.is(doctor.device.libtorch.source, 'install-torch cache')
    t.regex(doctor.device.cudaProblem, /libtorch_cuda\.so did not load/, 'doctor says why CUDA is off')

    // 5: a plain import in a fresh node, LD_LIBRARY_PATH unset, trains.
    const out = join(tempDir('ep-import-run-'), 'run')
    const script = `
    import { trainPipeline } from 'emotion-pipeline'
    const r = await trainPipeline({ data: ${JSON.stringify(twoActors())}, out: ${JSON.stringify(out)}, models: ['audio'], epochs: 1, device: 'cpu' })
    console.log(JSON.stringify({ accuracy: r.models.audio.test.accuracy, ld: process.env.LD_LIBRARY_PATH ?? null }))`
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: p.dir, env, encoding: 'utf8', timeout: 240_000 })
    t.is(r.status, 0, r.stderr)
    const result = JSON.parse(r.stdout.trim().split('\n').pop()!)
    t.is(result.ld, null)
    t.true(readdirSync(join(cache, 'features')).length > 0, 'the feature cache lives under $EMOTION_PIPELINE_CACHE')
    t.true(result.accuracy >= 0 && result.accuracy <= 1)

    trainAndPredict(t, p, env)
  },
)

function du(dir: string): number {
  let total = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    total += entry.isDirectory() ? du(path) : entry.isFile() ? statSync(path).size : 0
  }
  return total
}
