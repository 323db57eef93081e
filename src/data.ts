import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { packageRoot } from './native.js'

/** The RAVDESS folder: `$RAVDESS_DIR`, else `../shared/data/ravdess` beside the repository; null if absent. */
export function findRavdess(): string | null {
  const candidates = [process.env.RAVDESS_DIR, resolve(packageRoot, '..', 'shared', 'data', 'ravdess')]
  return candidates.find((dir): dir is string => !!dir && existsSync(dir)) ?? null
}
