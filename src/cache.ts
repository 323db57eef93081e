import { homedir } from 'node:os'
import { join } from 'node:path'

/** The one root of every per-user cache this library keeps: features, transcripts, models, libtorch. */
export function cacheRoot(): string {
  return process.env.EMOTION_PIPELINE_CACHE || join(homedir(), '.cache', 'emotion-pipeline')
}
