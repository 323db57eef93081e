import { EmotionPipelineError } from './errors.js'
import { native } from './native.js'

/** Runs a native job with a cancel token tied to `signal`; an aborted job rejects with `CANCELLED`. */
export async function withCancel<T>(
  signal: AbortSignal | undefined,
  job: (token: InstanceType<typeof native.CancelToken>) => Promise<T>,
): Promise<T> {
  if (signal?.aborted) throw new EmotionPipelineError('CANCELLED', 'cancelled (the signal was aborted before this step began)')
  const token = new native.CancelToken()
  const onAbort = () => token.cancel()
  signal?.addEventListener('abort', onAbort, { once: true })
  try {
    return await job(token)
  } finally {
    signal?.removeEventListener('abort', onAbort)
  }
}
