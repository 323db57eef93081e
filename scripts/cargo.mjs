#!/usr/bin/env node
// `cargo` with LIBTORCH pointing at the provisioned libtorch: node scripts/cargo.mjs test -p emotion-core
import { spawnSync } from 'node:child_process'
import { buildEnv, resolveLibtorch } from './libtorch.mjs'

const result = spawnSync('cargo', process.argv.slice(2), { stdio: 'inherit', env: buildEnv(resolveLibtorch()) })
process.exit(result.status ?? 1)
