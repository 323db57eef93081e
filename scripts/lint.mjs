#!/usr/bin/env node
// `npm run lint` (and the first step of `npm test`): rustfmt and clippy on the Rust workspace, Biome on
// the TypeScript and scripts, and no import cycles in either language (check-cycles.mjs). Warnings are errors. Clippy runs with the addon build's target and
// profile (scripts/cargo.mjs), so libtorch's C++ wrapper is not compiled a second time.
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'

const root = join(import.meta.dirname, '..')
const steps = [
  ['cargo', ['fmt', '--all', '--', '--check']],
  [process.execPath, [join(root, 'scripts', 'cargo.mjs'), 'clippy', '--release', '--workspace', '--all-targets', '--', '-D', 'warnings']],
  [join(root, 'node_modules', '.bin', 'biome'), ['check', '--error-on-warnings']],
  [process.execPath, [join(root, 'scripts', 'check-cycles.mjs')]],
]
for (const [cmd, args] of steps) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' })
  if (r.status !== 0) {
    console.error(`[lint] failed: ${[cmd, ...args].join(' ')}`)
    process.exit(r.status ?? 1)
  }
}
console.error('[lint] rustfmt, clippy, biome and the import-cycle check: clean')
