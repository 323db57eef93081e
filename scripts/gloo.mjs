// Builds the Gloo process-group shim (crates/emotion-core/csrc/gloo/process_group.cpp) into its own
// shared object, bindings/emotion-pipeline-gloo.linux-x64-gnu.so, against the libtorch the addons link.
// c10d's ProcessGroupGloo is compiled into libtorch_cpu.so, but the wheel ships no Gloo headers, and
// the class declaration includes them: they come from Debian's libgloo-dev package, downloaded with
// `apt-get download` and unpacked into the cache once (nothing of Gloo is copied into the repository).
// Only declarations are used: the built object must not reference or define any `gloo::` function
// (checked with nm), and the shim pins the layouts it allocates with static_asserts. Without apt
// (another distribution) the shim is not built and data-parallel training is refused with the reason.
// See docs/DISTRIBUTED.md.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { cacheDir } from './libtorch.mjs'
import { compileShim, shimFlags } from './shim-build.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
export const GLOO_FILE = 'emotion-pipeline-gloo.linux-x64-gnu.so'
const SOURCE = join(root, 'crates', 'emotion-core', 'csrc', 'gloo', 'process_group.cpp')
const SHARED = ['guarded.hpp', 'process_group.hpp'].map((f) => join(root, 'crates', 'emotion-core', 'csrc', f))
const PACKAGE = 'libgloo-dev'

/** Gloo's headers from the distribution's libgloo-dev, unpacked under the cache; their include dir. */
function glooIncludeDir(log) {
  const dir = join(cacheDir(), 'gloo-headers')
  const marker = join(dir, '.complete')
  if (!existsSync(marker)) {
    log(`fetching Gloo's headers (Debian ${PACKAGE}, ~50 kB) for the Gloo shim…`)
    const partial = `${dir}.partial-${process.pid}`
    rmSync(partial, { recursive: true, force: true })
    mkdirSync(partial, { recursive: true })
    const download = () => execFileSync('apt-get', ['download', PACKAGE], { cwd: partial, stdio: ['ignore', 'ignore', 'pipe'] })
    try {
      try {
        download()
      } catch (err) {
        // A fresh machine (CI) may have no package lists yet: as root, fetch them once and retry.
        if (process.getuid?.() !== 0) throw err
        log('apt has no package lists: apt-get update…')
        execFileSync('apt-get', ['update', '-qq'], { stdio: ['ignore', 'ignore', 'inherit'] })
        download()
      }
    } catch (err) {
      rmSync(partial, { recursive: true, force: true })
      throw new Error(
        `\`apt-get download ${PACKAGE}\` failed (Debian or Ubuntu with apt is needed to build the Gloo shim): ${err.message.split('\n')[0]}`,
      )
    }
    const deb = readdirSync(partial).find((f) => f.startsWith(`${PACKAGE}_`) && f.endsWith('.deb'))
    if (!deb) throw new Error(`apt-get download ${PACKAGE} left no .deb in ${partial}`)
    execFileSync('dpkg-deb', ['-x', join(partial, deb), join(partial, 'root')], { stdio: 'inherit' })
    writeFileSync(marker.replace(dir, partial), deb)
    rmSync(dir, { recursive: true, force: true })
    renameSync(partial, dir)
  }
  const include = join(dir, 'root', 'usr', 'include')
  if (!existsSync(join(include, 'gloo', 'context.h'))) throw new Error(`gloo/context.h not found in ${include}`)
  return include
}

/** Fails when the built object references or defines a function of Gloo's own (declarations only). */
function checkNoGlooSymbols(file) {
  const symbols = execFileSync('nm', ['-DC', file], { encoding: 'utf8', maxBuffer: 64 << 20 })
  const gloo = symbols.split('\n').filter((line) => /^\s*(?:[0-9a-f]+\s+)?[A-Za-z]\s+gloo::/.test(line))
  if (gloo.length) throw new Error(`${file} uses Gloo's own code, not libtorch's:\n${gloo.slice(0, 5).join('\n')}`)
}

/** Builds the shim when its source, the flags, the headers or libtorch changed; returns the file. */
export function buildGloo(lib, { log = (m) => console.error(m) } = {}) {
  const out = join(root, 'bindings', GLOO_FILE)
  const glooInclude = glooIncludeDir(log)
  const args = [
    ...shimFlags(join(lib.root, 'include')),
    // The wheel's c10d headers hide ProcessGroupGloo unless the build says it has Gloo.
    '-DUSE_C10D_GLOO',
    '-I',
    glooInclude,
    SOURCE,
    // By SONAME, no rpath: the loader opens libtorch by absolute path before the shim (as for the addon).
    '-L',
    lib.libDir,
    '-ltorch_cpu',
    '-lc10',
  ]
  const headers = readFileSync(join(cacheDir(), 'gloo-headers', '.complete'), 'utf8')
  return compileShim({
    root,
    out,
    args,
    lib,
    sources: [SOURCE, ...SHARED],
    extra: { headers },
    label: 'Gloo shim',
    log,
    check: checkNoGlooSymbols,
  })
}
