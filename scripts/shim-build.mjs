// The build step the shared-object shims (scripts/cuda-graph.mjs, scripts/gloo.mjs) share: compile
// with the C++ compiler unless the stamp beside the output records the same command, libtorch and
// sources; never leave a half-built or stale shim behind a failed build.
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'

/** The flags every shim is compiled with, against libtorch's headers under `include`. */
export function shimFlags(include) {
  return [
    '-std=c++17',
    '-O2',
    '-fPIC',
    '-shared',
    '-w',
    '-D_GLIBCXX_USE_CXX11_ABI=1',
    '-I',
    include,
    '-I',
    `${include}/torch/csrc/api/include`,
  ]
}

/**
 * Builds `out` with `c++ <args> -o <tmp>` (`args` without the output), unless its stamp matches;
 * `check(tmp)` may refuse the result. `sources` and `extra` go into the stamp. Returns `out`.
 */
export function compileShim({ root, out, args, lib, sources, extra = {}, label, log, check = () => {} }) {
  const tmp = `${out}.tmp-${process.pid}`
  const stamp = `${out}.stamp`
  const want = JSON.stringify({
    args,
    lib: lib.root,
    version: lib.version,
    sources: sources.map((f) => statSync(f).mtimeMs),
    ...extra,
  })
  if (existsSync(out) && existsSync(stamp) && readFileSync(stamp, 'utf8') === want) return out
  log(`building the ${label}…`)
  try {
    execFileSync(process.env.CXX || 'c++', [...args, '-o', tmp], { cwd: root, stdio: 'inherit' })
    check(tmp)
  } catch (err) {
    for (const f of [out, stamp, tmp]) rmSync(f, { force: true })
    throw err
  }
  renameSync(tmp, out)
  writeFileSync(stamp, want)
  return out
}
