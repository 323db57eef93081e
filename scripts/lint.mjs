#!/usr/bin/env node
// `npm run lint` (and the first step of `npm test`): rustfmt and clippy on the Rust workspace, Biome on
// the TypeScript and scripts, and no import cycles in either language (check-cycles.mjs). Warnings are errors.
// The size limits of the standards: no function over 80 lines (clippy's too_many_lines with clippy.toml's
// threshold, Biome's noExcessiveLinesPerFunction) and no hand-written file over 600 lines (below). Clippy runs with the addon build's target and
// profile (scripts/cargo.mjs), so libtorch's C++ wrapper is not compiled a second time.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

const root = join(import.meta.dirname, '..')
const steps = [
  ['cargo', ['fmt', '--all', '--', '--check']],
  [
    process.execPath,
    [
      join(root, 'scripts', 'cargo.mjs'),
      'clippy',
      '--release',
      '--workspace',
      '--all-targets',
      '--',
      '-D',
      'warnings',
      '-W',
      'clippy::too_many_lines',
    ],
  ],
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
const MAX_FILE_LINES = 600
// Tracked files and new ones git does not ignore; generated code is exempt.
const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: root, encoding: 'utf8' })
  .split('\0')
  .filter((f) => /\.(rs|ts|mjs|js|cpp|hpp|md|py|sh|html)$/.test(f) && !f.startsWith('src/generated/') && existsSync(join(root, f)))
const lines = (text) => text.split('\n').length - (text.endsWith('\n') ? 1 : 0)
const long = files.map((f) => [f, lines(readFileSync(join(root, f), 'utf8'))]).filter(([, n]) => n > MAX_FILE_LINES)
if (long.length) {
  for (const [f, n] of long) console.error(`[lint] ${f}: ${n} lines (at most ${MAX_FILE_LINES}; split it)`)
  process.exit(1)
}
console.error('[lint] rustfmt, clippy, biome, the import-cycle check and the size limits: clean')
