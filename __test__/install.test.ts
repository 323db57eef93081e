// What a user does: pack the main and platform packages, `npm install` the tarballs into an empty
// project with no Rust toolchain and no repository on PATH, then follow the README's install section
// literally in an empty cache: `install-torch --cpu`, `install-models --encoder whisper-base`, `doctor`,
// then train the default model from the CLI and from a TypeScript file compiled with `tsc --strict`
// against the installed types (no skipLibCheck), and predict. Every command the README names runs here
// from the tarball: download (against a local Zenodo), demo without data, bench, install-models.
import test, { type ExecutionContext } from 'ava'
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { basename, delimiter, join, resolve } from 'node:path'
import { cacheRoot } from '../src/cache.js'
import { locateLibtorch } from '../src/libtorch.js'
import {
  haveRavdess,
  haveWavs,
  listAudio,
  NO_DATA,
  NO_WAVS,
  ravdessDir,
  referencePython,
  runAsync,
  skip,
  tempDir,
  wavDir,
} from './helpers.js'
import { startHubServer } from './hub-server.js'
import { makeArchive, zenodo } from './zenodo.js'

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
    // As the README says for machines that cannot reach onnxruntime-node's CUDA download (this one):
    // without it npm drops the optional transformers.js when that postinstall fails.
    execFileSync(
      'npm',
      [
        'install',
        '--no-audit',
        '--no-fund',
        '--prefer-offline',
        '--loglevel=error',
        '--onnxruntime-node-install=skip',
        packed.platform.file,
        packed.main.file,
      ],
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
  // The README's links to docs/ resolve inside the installed package (npm shows no repository).
  const installed = join(p.dir, 'node_modules', 'emotion-pipeline')
  const links = [...readFileSync(join(installed, 'README.md'), 'utf8').matchAll(/\]\((docs\/[\w/-]+\.(?:md|json))[#)]/g)].map((m) => m[1])
  t.true(links.length >= 8, `${links.length} links`)
  for (const link of new Set(links)) t.true(existsSync(join(installed, link)), link)
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
  // And the Gloo shim (data-parallel training), loaded from there.
  t.true(existsSync(join(p.dir, 'node_modules', '@emotion-pipeline', 'linux-x64-gnu', 'emotion-pipeline-gloo.linux-x64-gnu.so')))
  const gloo = (report.checks as { name: string; ok: boolean; detail: string }[]).find((c) => c.name === 'Data-parallel training (Gloo)')
  t.true(gloo?.ok, gloo?.detail)
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

/** The README's install section, step by step, in one empty user cache. */
test.serial(
  '2. the README literally: install-torch --cpu, install-models --encoder whisper-base, doctor, train the default model, predict',
  async (t) => {
    if (!haveRavdess) return skip(t, NO_DATA)
    const p = await installedProject()
    const cache = tempDir('ep-user-cache-')
    const env = userEnv({ EMOTION_PIPELINE_CACHE: cache })
    const timed = (label: string, args: string[]) => {
      const started = Date.now()
      const r = run(p, args, env)
      t.is(r.status, 0, `${label}: ${r.stderr}`)
      t.log(`${label}: ${((Date.now() - started) / 1000).toFixed(1)} s`)
      return r
    }
    timed('install-torch --cpu', ['install-torch', '--cpu'])
    const dir = join(cache, 'torch-2.11.0')
    const nvidia = join(dir, 'nvidia')
    const libs = readdirSync(join(nvidia, 'cu13', 'lib'))
    t.deepEqual(readdirSync(nvidia), ['cu13'])
    t.true(libs.includes('libcudart.so.13') && libs.includes('libcupti.so.13'))
    for (const heavy of ['libcublas.so.13', 'libcufft.so.12', 'libcusparse.so.12']) t.false(libs.includes(heavy), heavy)
    t.false(existsSync(join(nvidia, 'cudnn')))
    t.log(`install-torch --cpu: ${(du(dir) / 2 ** 30).toFixed(2)} GiB on disk`)

    // Before the encoder is installed, doctor names it as the missing piece of the default model.
    const before = run(p, ['doctor'], env)
    t.is(before.status, 1)
    t.regex(before.stdout, /✘ encoder .*\n.*fix: npx emotion-pipeline install-models --encoder whisper-base/)
    timed('install-models --encoder whisper-base', ['install-models', '--encoder', 'whisper-base'])
    t.log(`encoder: ${(du(join(cache, 'encoders')) / 1e6).toFixed(0)} MB on disk`)
    const doctor = timed('doctor', ['doctor', '--json'])
    const report = JSON.parse(doctor.stdout)
    t.is(report.device.libtorch.source, 'install-torch cache')
    t.regex(report.device.cudaProblem, /libtorch_cuda\.so did not load/, 'doctor says why CUDA is off')
    t.true(report.checks.find((c: { name: string }) => c.name === 'encoder').ok)
    t.truthy(
      report.checks.find((c: { name: string }) => c.name === 'transformers.js'),
      'doctor reports the optional transformers.js',
    )

    // The default model (no --models) from the CLI, then a prediction from its run directory.
    const out = join(tempDir('ep-install-run-'), 'run')
    const trained = timed('train (default model, CLI)', ['train', '--data', twoActors(), '--out', out, '--epochs', '2', '--json'])
    const result = JSON.parse(trained.stdout.trim().split('\n').pop()!)
    t.deepEqual(Object.keys(result.models), ['encoder'])
    t.true(result.models.encoder.test.accuracy >= 0 && result.models.encoder.test.accuracy <= 1)
    const clip = join(ravdessDir, 'Actor_01', readdirSync(join(ravdessDir, 'Actor_01')).sort()[0])
    const predicted = timed('predict', ['predict', '--run', out, clip])
    t.regex(predicted.stdout, /\t(neutral|calm|happy|sad|angry|fearful|disgust|surprised)\t/)
    const timelineOut = join(tempDir('ep-tl-'), 'timeline')
    const timeline = timed('predict --timeline', ['predict', '--run', out, '--timeline', '--out', timelineOut, clip])
    t.is(timeline.status, 0, timeline.stderr)
    for (const ext of ['csv', 'json', 'svg', 'png']) t.true(existsSync(join(timelineOut, `${basename(clip)}.timeline.${ext}`)), ext)

    // Export: an ONNX file with its sidecar, and the browser folder (the page and onnxruntime-web's files
    // come from the installed packages); the exported model runs in onnxruntime-node (the repository's:
    // a user installs their own runtime).
    const exportDir = tempDir('ep-install-export-')
    const exported = JSON.parse(timed('export', ['export', '--run', out, '--out', join(exportDir, 'm.onnx'), '--json']).stdout)
    t.like(exported, { modelKind: 'encoder', sampleRate: 16000 })
    const site = JSON.parse(timed('export --browser', ['export', '--run', out, '--browser', join(exportDir, 'site'), '--json']).stdout)
    for (const f of ['index.html', 'app.js', 'recorder-worklet.js', 'ort/ort-wasm-simd-threaded.wasm'])
      t.true(existsSync(join(site.dir, f)), f)
    const probabilities = runInOnnxRuntime(t, p, env, exported.path)
    t.is(probabilities.length, 8)
    t.true(Math.abs(probabilities.reduce((a, b) => a + b, 0) - 1) < 1e-4)

    // The same from TypeScript: compiled with tsc --strict against the installed .d.ts (no skipLibCheck).
    const ts = typeScriptUser(p, twoActors(), join(tempDir('ep-ts-run-'), 'run'), clip)
    const r = spawnSync(process.execPath, [ts], { cwd: p.dir, env, encoding: 'utf8', timeout: 240_000 })
    t.is(r.status, 0, r.stderr)
    const fromTs = JSON.parse(r.stdout.trim().split('\n').pop()!)
    t.deepEqual(fromTs.models, ['encoder'])
    t.regex(fromTs.label, /^(neutral|calm|happy|sad|angry|fearful|disgust|surprised)$/)
    t.like(fromTs, { same: true, top: 2, timeline: 1, streamed: 2 })
    t.regex(fromTs.csv, /^start,end,speech,voiced,label,neutral,/)
    t.is(fromTs.ld, null, 'no LD_LIBRARY_PATH needed')
    t.true(readdirSync(join(cache, 'features')).length > 0, 'the feature cache lives under $EMOTION_PIPELINE_CACHE')

    checkCacheCommands(t, p, env, cache)
  },
)

/** Writes a user's TypeScript program, compiles it with tsc --strict (no skipLibCheck) and returns the JS. */
function typeScriptUser(p: Project, data: string, out: string, clip: string): string {
  const dir = join(p.dir, 'ts')
  mkdirSync(dir, { recursive: true })
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, outDir: 'out', types: ['node'] },
      files: ['main.ts'],
    }),
  )
  writeFileSync(
    join(dir, 'main.ts'),
    `import { readFileSync } from 'node:fs'
import { loadRun, timelineCsv, trainPipeline, type PipelineEvent, type PipelineResult, type Segment, type Timeline } from 'emotion-pipeline'
const warnings: string[] = []
const run: PipelineResult = await trainPipeline({
  data: ${JSON.stringify(data)},
  out: ${JSON.stringify(out)},
  epochs: 2,
  onProgress: (e: PipelineEvent) => { if (e.type === 'warning') warnings.push(e.message) },
})
const accuracy: number | undefined = run.models.encoder?.test?.accuracy
const model = await loadRun(run.runDir)
const [fromPath, fromBuffer] = await model.predict([${JSON.stringify(clip)}, readFileSync(${JSON.stringify(clip)})], { topK: 2 })
if (fromPath.error || fromBuffer.error) throw new Error('a prediction failed')
const timeline: Timeline = await model.timeline(${JSON.stringify(clip)})
const stream = await model.stream({ sampleRate: 16000 })
const streamed: Segment[] = [...(await stream.push(new Float32Array(16000 * 5))), ...(await stream.end())]
console.log(JSON.stringify({
  models: Object.keys(run.models), accuracy, label: fromPath.label, same: fromPath.label === fromBuffer.label, top: fromPath.scores.length,
  timeline: timeline.segments.length, streamed: streamed.length, csv: timelineCsv(timeline).split('\\n')[0],
  warnings, ld: process.env.LD_LIBRARY_PATH ?? null,
}))
`,
  )
  execFileSync(
    'npm',
    ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', '-D', 'typescript@~5.9.3', '@types/node@^20.19.0'],
    {
      cwd: p.dir,
      env: userEnv(),
      stdio: 'pipe',
    },
  )
  execFileSync(process.execPath, [join(p.dir, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(dir, 'tsconfig.json')], {
    cwd: dir,
    encoding: 'utf8',
  })
  return join(dir, 'out', 'main.js')
}

test.serial('require(), --version, help of every command, and bench from the installed package', async (t) => {
  const p = await installedProject()
  const env = userEnv()
  const required = spawnSync(process.execPath, ['-e', "const m = require('emotion-pipeline'); console.log(typeof m.trainPipeline)"], {
    cwd: p.dir,
    env,
    encoding: 'utf8',
  })
  t.is(required.status, 0, required.stderr)
  t.is(required.stdout.trim(), 'function')
  const version = run(p, ['--version'], env)
  t.is(version.stdout.trim(), JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version)
  for (const command of ['train', 'cv', 'predict', 'doctor', 'install-torch', 'install-models', 'download', 'bench', 'demo', 'cache']) {
    const help = run(p, [command, '--help'], env)
    t.is(help.status, 0, `${command} --help: ${help.stderr}`)
    t.regex(help.stdout, new RegExp(`emotion-pipeline ${command}`), command)
  }
  // bench without data says what it needs; with --data it runs (the Python reference is skipped without torch).
  const noData = run(
    p,
    ['bench', 'mel'],
    userEnv({ RAVDESS_DIR: join(tempDir('ep-none-'), 'missing'), EMOTION_PIPELINE_CACHE: tempDir('ep-c-') }),
  )
  t.is(noData.status, 1)
  t.regex(noData.stderr, /INVALID_OPTION.*`--data`.*download ravdess/)
  if (!haveRavdess) return skip(t, NO_DATA)
  const bench = run(
    p,
    ['bench', 'mel', '--data', join(ravdessDir, 'Actor_01'), '--clips', '8', '--repeats', '1'],
    userEnv({ LIBTORCH: locateLibtorch().found!.root }),
  )
  t.is(bench.status, 0, bench.stderr)
  const mel = JSON.parse(bench.stdout)
  t.true(mel.clips === 8)
  // Without a Python reference the JSON says why, not a bare null.
  t.true(mel.torchaudio !== null || /^skipped: no Python with torch/.test(mel.torchaudioSkipped), JSON.stringify(mel.torchaudioSkipped))
})

test.serial('cv --nproc-per-node 2 from the installed package: two ranks on the store the shipped addon holds', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const p = await installedProject()
  const out = join(tempDir('ep-install-cv-'), 'cv')
  const args = ['cv', '--data', ravdessDir, '--out', out, '--models', 'audio', '--folds', '3', '--epochs', '1', '--device', 'cpu']
  const small = JSON.stringify({ audio: { audio: { channels: [8, 16], hidden: [16, 8] } } })
  const env = userEnv({ LIBTORCH: locateLibtorch().found!.root, EMOTION_PIPELINE_CACHE: tempDir('ep-install-cv-cache-') })
  const r = run(p, [...args, '--max-items', '96', '--train', small, '--nproc-per-node', '2', '--json'], env)
  t.is(r.status, 0, r.stderr.slice(-2000))
  t.regex(r.stderr, /\[rank 1\] /)
  t.deepEqual(JSON.parse(r.stdout.trim().split('\n').pop()!).finished, [0, 1, 2])
})

test.serial('train --nproc-per-node 2 from the installed package: data-parallel on the Gloo shim the platform package ships', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const p = await installedProject()
  const out = join(tempDir('ep-install-ddp-'), 'run')
  const small = JSON.stringify({ audio: { audio: { channels: [8, 16], hidden: [16, 8] } } })
  const env = userEnv({ LIBTORCH: locateLibtorch().found!.root, EMOTION_PIPELINE_CACHE: tempDir('ep-install-ddp-cache-') })
  const args = ['train', '--data', join(ravdessDir, 'Actor_01'), '--out', out, '--models', 'audio', '--epochs', '2', '--device', 'cpu']
  const r = run(p, [...args, '--max-items', '40', '--train', small, '--nproc-per-node', '2', '--json'], env)
  t.is(r.status, 0, r.stderr.slice(-2000))
  const result = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
    models: { audio: { dataParallel: { worldSize: number; bytesPerStep: number } } }
  }
  t.is(result.models.audio.dataParallel.worldSize, 2)
  t.true(result.models.audio.dataParallel.bytesPerStep > 0)
  t.true(existsSync(join(out, 'models', 'audio', 'best.safetensors')))
})

test.serial('demo without data: offers the download on a terminal, prints the command otherwise; download ravdess', async (t) => {
  if (!haveWavs) return skip(t, NO_WAVS)
  const p = await installedProject()
  const cache = tempDir('ep-dl-user-')
  // The encoder and libtorch the demo trains with; the data comes from the (local) Zenodo.
  symlinkSync(join(cacheRoot(), 'encoders'), join(cache, 'encoders'))
  const env = userEnv({ EMOTION_PIPELINE_CACHE: cache, LIBTORCH: locateLibtorch().found!.root })
  const plain = run(p, ['demo'], env)
  t.is(plain.status, 1)
  t.regex(plain.stderr, /RAVDESS not found: download it with `npx emotion-pipeline download ravdess`/)
  const archive = makeArchive()
  const server = await zenodo(archive.bytes)
  try {
    const withZenodo = { ...env, EMOTION_PIPELINE_ZENODO_API: server.api }
    // `script` gives the demo a terminal; it answers the prompt from stdin.
    const declined = await runAsync('script', ['-qec', `${p.cli} demo`, '/dev/null'], { cwd: p.dir, env: withZenodo, input: 'n\n' })
    t.is(declined.status, 1)
    t.regex(declined.stdout, /Download its speech archive now from Zenodo \(record 1188976, CC BY-NC-SA 4\.0\)\? \[y\/N\]/)
    t.regex(declined.stdout, /Not downloading/)
    const out = join(tempDir('ep-demo-'), 'demo')
    const accepted = await runAsync('script', ['-qec', `${p.cli} demo --out ${out}`, '/dev/null'], {
      cwd: p.dir,
      env: withZenodo,
      input: 'y\n',
    })
    t.is(accepted.status, 0, accepted.stdout)
    t.regex(accepted.stdout, /Livingstone SR, Russo FA \(2018\)/)
    t.regex(accepted.stdout, /The data: RAVDESS actors 1–20 of the download, as every figure in the README/)
    t.true(existsSync(join(out, 'metrics.json')))
    const again = await runAsync(p.cli, ['download', 'ravdess', '--json'], { cwd: p.dir, env: withZenodo })
    t.is(again.status, 0, again.stderr)
    const result = JSON.parse(again.stdout.trim().split('\n').pop()!)
    t.is(result.dir, join(cache, 'datasets', 'ravdess'))
    t.is(result.clips, archive.clips)
    t.true(result.cached)
  } finally {
    server.close()
  }
})

test.serial('install-models (Whisper for the text branch) from the installed package, with no Python on the PATH', async (t) => {
  const p = await installedProject()
  const cache = tempDir('ep-whisper-user-')
  // PATH without python3: the native core (libtorch installed, as every use of the library needs) writes the ONNX.
  const bin = tempDir('ep-no-python-')
  symlinkSync(process.execPath, join(bin, 'node'))
  const lib = locateLibtorch().found!.root
  const r = run(p, ['install-models', '--json'], userEnv({ EMOTION_PIPELINE_CACHE: cache, PATH: bin, LIBTORCH: lib }))
  t.is(r.status, 0, r.stderr)
  const dir = JSON.parse(r.stdout.trim().split('\n').pop()!).whisper
  t.is(dir, join(cache, 'whisper', 'whisper-tiny.en'))
  t.true(existsSync(join(dir, 'onnx', 'encoder_model.onnx')) && existsSync(join(dir, 'onnx', 'decoder_model_merged.onnx')))
  // transformers.js transcribes with it, from the installed package.
  if (!haveWavs) return t.log(NO_WAVS)
  const script = join(p.dir, 'transcribe.mjs')
  const clip = listAudio(wavDir)[0]
  writeFileSync(
    script,
    `import { transcribe } from 'emotion-pipeline'
const [r] = await transcribe([${JSON.stringify(clip)}], { modelDir: ${JSON.stringify(dir)}, cacheDir: null })
console.log(JSON.stringify(r.text))`,
  )
  const env = userEnv({ EMOTION_PIPELINE_CACHE: cache, LIBTORCH: lib })
  const heard = spawnSync(process.execPath, [script], { cwd: p.dir, env, encoding: 'utf8' })
  t.is(heard.status, 0, heard.stderr)
  t.regex(JSON.parse(heard.stdout), /kids are talking by the door/i)
})

function du(dir: string): number {
  let total = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    total += entry.isDirectory() ? du(path) : entry.isFile() ? statSync(path).size : 0
  }
  return total
}

test.serial(
  'the Hub route from the installed package: train and predict with an encoder from a Hub-like server (HF_ENDPOINT)',
  async (t) => {
    if (!haveRavdess) return skip(t, NO_DATA)
    const python = referencePython()
    if (!python) return skip(t, 'no Python with torch 2.11 to write the Hugging Face layout fixture: skipped')
    const repo = join(tempDir('ep-hf-install-'), 'repo')
    execFileSync(python, [resolve(import.meta.dirname, 'fixtures', 'whisper_hf.py'), repo, '--random', '80'])
    const files = Object.fromEntries(readdirSync(repo).map((f) => [f, readFileSync(join(repo, f))]))
    const server = await startHubServer({ 'test-org/whisper-random': { commit: 'c'.repeat(40), files } })
    try {
      const p = await installedProject()
      const hfCache = tempDir('ep-hf-cache-')
      const env = userEnv({ HF_ENDPOINT: server.url, HF_HUB_CACHE: hfCache, LIBTORCH: locateLibtorch().found!.root })
      const out = join(tempDir('ep-hub-run-'), 'run')
      const args = [
        'train',
        '--data',
        twoActors(),
        '--out',
        out,
        '--models',
        'probe',
        '--encoder',
        'test-org/whisper-random',
        '--epochs',
        '1',
        '--quiet',
      ]
      const trained = await runAsync(p.cli, args, { cwd: p.dir, env })
      t.is(trained.status, 0, trained.stderr)
      t.true(existsSync(join(hfCache, 'models--test-org--whisper-random', 'snapshots', 'c'.repeat(40), 'model.safetensors')))
      const clip = join(ravdessDir, 'Actor_01', readdirSync(join(ravdessDir, 'Actor_01')).sort()[0])
      const predicted = await runAsync(p.cli, ['predict', '--run', out, '--model', 'probe', '--json', clip], { cwd: p.dir, env })
      t.is(predicted.status, 0, predicted.stderr)
      t.regex(JSON.parse(predicted.stdout).label, /^(neutral|calm|happy|sad|angry|fearful|disgust|surprised)$/)
      // install-models with a Hub name, into another empty Hugging Face cache.
      const otherCache = tempDir('ep-hf-cache2-')
      const installed = await runAsync(p.cli, ['install-models', '--encoder', 'test-org/whisper-random', '--json'], {
        cwd: p.dir,
        env: { ...env, HF_HUB_CACHE: otherCache },
      })
      t.is(installed.status, 0, installed.stderr)
      const dir = JSON.parse(installed.stdout.trim().split('\n').pop()!).encoders['test-org/whisper-random']
      t.true(existsSync(join(dir, 'model.safetensors')) && dir.startsWith(otherCache), dir)
    } finally {
      await server.close()
    }
  },
)

/** What the cache holds, and cleaning one part of it, from the installed CLI. */
function checkCacheCommands(t: ExecutionContext, p: Project, env: NodeJS.ProcessEnv, cache: string) {
  const listed = JSON.parse(run(p, ['cache', 'list', '--json'], env).stdout)
  const bytesOf = (part: string) =>
    listed.entries.filter((e: { part: string }) => e.part === part).reduce((n: number, e: { bytes: number }) => n + e.bytes, 0)
  t.true(bytesOf('encoders') >= 145e6 && bytesOf('features') > 0, JSON.stringify(listed))
  const cleaned = run(p, ['cache', 'clean', '--what', 'features', '--json'], env)
  t.is(cleaned.status, 0, cleaned.stderr)
  t.false(existsSync(join(cache, 'features')))
  t.true(existsSync(join(cache, 'encoders')), 'the other parts stay')
}

/** A user's own onnxruntime-node (the repository's here) running an exported file: its 8 scores. */
function runInOnnxRuntime(t: ExecutionContext, p: Project, env: NodeJS.ProcessEnv, model: string): number[] {
  const ortUser = join(p.dir, 'run-onnx.mjs')
  writeFileSync(
    ortUser,
    `import * as ort from ${JSON.stringify(import.meta.resolve('onnxruntime-node'))}
const s = await ort.InferenceSession.create(process.argv[2])
const r = await s.run({ samples: new ort.Tensor('float32', new Float32Array(32000).map((_, i) => Math.sin(i / 9) * 0.1), [1, 32000]) })
console.log(JSON.stringify(Array.from(r.scores.data)))`,
  )
  const ortRun = spawnSync(process.execPath, [ortUser, model], { cwd: p.dir, env, encoding: 'utf8' })
  t.is(ortRun.status, 0, ortRun.stderr)
  return JSON.parse(ortRun.stdout) as number[]
}
