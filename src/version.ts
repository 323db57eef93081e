import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { packageRoot } from './native.js'

let version: string | undefined

/** This package's version (package.json), as runs record it and `--version` prints it. */
export function packageVersion(): string {
  version ??= (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version
  return version
}
