#!/usr/bin/env node
// `npm run pack:release [-- --no-build] [--out DIR]`: builds the addons and the TypeScript, syncs the
// version of every package (main, platform, Cargo workspace) to package.json's, and writes the two
// tarballs that `npm publish` takes into release/ (or --out):
//   emotion-pipeline-<v>.tgz                      TypeScript, CLI, loader, benches (no native code)
//   emotion-pipeline-linux-x64-gnu-<v>.tgz        @emotion-pipeline/linux-x64-gnu: the two .node files
//                                                 and the CUDA-graph shim (.so)
// The main package lists the platform package in optionalDependencies (napi-rs convention), so npm,
// pnpm and yarn install only the one matching os/cpu/libc; nothing runs at install time.
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'

const root = resolve(import.meta.dirname, '..')
const { values } = parseArgs({ options: { 'no-build': { type: 'boolean' }, out: { type: 'string' } } })
const out = resolve(values.out ?? join(root, 'release'))
const PLATFORM = { suffix: 'linux-x64-gnu', os: ['linux'], cpu: ['x64'], libc: ['glibc'] }
const ADDONS = ['emotion-pipeline.linux-x64-gnu.node', 'emotion-pipeline-loader.linux-x64-gnu.node']
// Built only against CUDA libtorch (scripts/cuda-graph.mjs); without it `cudaGraph` trains eagerly.
const CUDA_GRAPH = 'emotion-pipeline-cuda-graph.linux-x64-gnu.so'
const hasGraphShim = existsSync(join(root, 'bindings', CUDA_GRAPH))
if (!hasGraphShim)
  console.error(`[pack] warning: bindings/${CUDA_GRAPH} missing (CPU-only libtorch?): the package will train eagerly with cudaGraph`)
// Built where apt could fetch Gloo's headers (scripts/gloo.mjs); without it data-parallel training is refused.
const GLOO = 'emotion-pipeline-gloo.linux-x64-gnu.so'
const hasGloo = existsSync(join(root, 'bindings', GLOO))
if (!hasGloo) console.error(`[pack] warning: bindings/${GLOO} missing: the package will refuse data-parallel training`)
const NATIVE = [...ADDONS, ...(hasGraphShim ? [CUDA_GRAPH] : []), ...(hasGloo ? [GLOO] : [])]

if (!values['no-build']) execFileSync(process.execPath, [join(root, 'scripts', 'setup.mjs')], { stdio: 'inherit' })
for (const f of ADDONS) {
  if (!existsSync(join(root, 'bindings', f))) throw new Error(`bindings/${f} missing: run without --no-build`)
}

const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const version = pkg.version
const platformName = `@emotion-pipeline/${PLATFORM.suffix}`

// The Cargo workspace carries the same version (the addon reports it; crates stay in step with npm).
const cargoToml = join(root, 'Cargo.toml')
const cargo = readFileSync(cargoToml, 'utf8')
const synced = cargo.replace(/(\[workspace\.package\][^[]*?\nversion = ")[^"]+(")/, `$1${version}$2`)
if (synced !== cargo) {
  writeFileSync(cargoToml, synced)
  console.error(`[pack] Cargo workspace version set to ${version}`)
}

const stage = join(out, 'stage')
rmSync(stage, { recursive: true, force: true })
mkdirSync(stage, { recursive: true })

// Main package: everything but native code, exactly the paths package.json's `files` lists (the one
// definition of what the package holds; npm pack applies the same list again).
const mainDir = join(stage, 'main')
mkdirSync(mainDir)
// An entry is a path, or `dir/*.ext` (the only pattern it uses: npm's full glob rules are not needed),
// which takes the folder's files of that extension.
const expand = (entry) => {
  const star = /^(.*)\/\*(\.\w+)$/.exec(entry)
  if (!star) return existsSync(join(root, entry)) ? [entry] : []
  const dir = join(root, star[1])
  if (!existsSync(dir)) return []
  return readdirSync(dir)
    .filter((f) => f.endsWith(star[2]) && statSync(join(dir, f)).isFile())
    .map((f) => `${star[1]}/${f}`)
}
for (const entry of pkg.files) {
  const paths = expand(entry)
  if (paths.length === 0)
    throw new Error(
      `package.json files lists ${entry}, which matches nothing${entry.startsWith('dist') || entry.startsWith('bindings') ? ': run without --no-build' : ''}`,
    )
  for (const p of paths) cpSync(join(root, p), join(mainDir, p), { recursive: true })
}
const mainPkg = {
  name: pkg.name,
  version,
  description: pkg.description,
  license: pkg.license,
  type: pkg.type,
  main: pkg.main,
  types: pkg.types,
  exports: pkg.exports,
  bin: pkg.bin,
  files: pkg.files,
  engines: pkg.engines,
  dependencies: pkg.dependencies,
  optionalDependencies: { ...pkg.optionalDependencies, [platformName]: version },
}
writeFileSync(join(mainDir, 'package.json'), JSON.stringify(mainPkg, null, 2) + '\n')

// Platform package: the two addons, nothing else.
const platformDir = join(stage, PLATFORM.suffix)
mkdirSync(platformDir)
for (const f of NATIVE) cpSync(join(root, 'bindings', f), join(platformDir, f))
cpSync(join(root, 'LICENSE'), join(platformDir, 'LICENSE'))
writeFileSync(
  join(platformDir, 'README.md'),
  `# ${platformName}\n\nPrebuilt native addons of [emotion-pipeline](https://www.npmjs.com/package/emotion-pipeline) for Linux x64 (glibc ≥ 2.34).\nInstall \`emotion-pipeline\`, not this package. libtorch is not included: \`npx emotion-pipeline install-torch\`.\n`,
)
writeFileSync(
  join(platformDir, 'package.json'),
  JSON.stringify(
    {
      name: platformName,
      version,
      description: `${pkg.name} native addons for ${PLATFORM.suffix}`,
      license: pkg.license,
      os: PLATFORM.os,
      cpu: PLATFORM.cpu,
      libc: PLATFORM.libc,
      files: [...NATIVE, 'README.md', 'LICENSE'],
      engines: pkg.engines,
    },
    null,
    2,
  ) + '\n',
)

const pack = (dir) => {
  const [info] = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', out], { cwd: dir, encoding: 'utf8' }))
  return {
    file: join(out, info.filename),
    size: statSync(join(out, info.filename)).size,
    unpacked: info.unpackedSize,
    entries: info.entryCount,
  }
}
const result = { version, main: pack(mainDir), platform: pack(platformDir) }
rmSync(stage, { recursive: true, force: true })
console.error(`[pack] ${result.main.file}: ${(result.main.size / 2 ** 20).toFixed(2)} MiB (${result.main.entries} files)`)
console.error(`[pack] ${result.platform.file}: ${(result.platform.size / 2 ** 20).toFixed(2)} MiB (${result.platform.entries} files)`)
console.log(JSON.stringify(result))
