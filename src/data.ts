import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { packageRoot } from './native.js'
import { downloadedRavdess } from './ravdess-download.js'

/**
 * The RAVDESS folder: `$RAVDESS_DIR`, else `../shared/data/ravdess` beside the repository (a contributor's
 * checkout), else actors 1–20 of `emotion-pipeline download ravdess`; null if none.
 */
export function findRavdess(): string | null {
  const candidates = [process.env.RAVDESS_DIR, resolve(packageRoot, '..', 'shared', 'data', 'ravdess'), downloadedRavdess()]
  return candidates.find((dir): dir is string => !!dir && existsSync(dir)) ?? null
}
