// Loads the napi-rs addon (bindings/) once. Everything native goes through here.
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import type * as Native from '../bindings/index.js'

const require = createRequire(import.meta.url)
export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..')

function load(): typeof Native {
  try {
    return require(join(packageRoot, 'bindings', 'index.js'))
  } catch (err) {
    const why = err instanceof Error ? err.message.split('\n')[0] : String(err)
    throw new Error(
      `emotion-pipeline: the native addon did not load (${why}). ` +
        `Build it with \`npm run build\`; if libtorch cannot be found, run \`emotion-pipeline doctor\`.`,
      { cause: err },
    )
  }
}

export const native: typeof Native = load()
export type { Native }
