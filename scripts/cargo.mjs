#!/usr/bin/env node
// `cargo` with LIBTORCH pointing at the provisioned libtorch: node scripts/cargo.mjs test -p emotion-core
// Adds `--target <host>` (as `napi build` passes it) so tests reuse the addon build's artifacts instead
// of compiling libtorch's C++ wrapper a second time.
import { spawnSync } from 'node:child_process'
import { buildEnv, hostTarget, resolveLibtorch } from './libtorch.mjs'

const args = process.argv.slice(2)
if (['build', 'test', 'run', 'bench', 'clippy', 'check'].includes(args[0]) && !args.includes('--target')) {
  args.splice(1, 0, '--target', hostTarget())
}
const result = spawnSync('cargo', args, { stdio: 'inherit', env: buildEnv(resolveLibtorch()) })
process.exit(result.status ?? 1)
