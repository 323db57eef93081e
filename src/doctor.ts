// `doctor()`: what this installation can do and the fix for what is missing, one small check each.
// Checks marked `required` are what the default model needs: `emotion-pipeline doctor` exits 1 when one fails.
import { createHash } from 'node:crypto'
import { closeSync, openSync, readSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { deviceInfo, REQUIRED_TORCH } from './device.js'
import type { DeviceInfo } from './device.js'
import { DEFAULT_ENCODER, ENCODERS, installedEncoderDir, isEncoderInstalled } from './encoder-install.js'
import type { EncoderName } from './encoder-install.js'
import { EmotionPipelineError } from './errors.js'
import { installTorchCommand, locateLibtorch } from './libtorch.js'
import type { LibtorchSearch } from './libtorch.js'
import { findAddon, nativeState, PLATFORM_PACKAGE } from './native.js'
import { isWhisperModelBuilt, whisperModelDir } from './whisper-install.js'

export interface DoctorCheck {
  name: string
  ok: boolean
  /** The default (recommended) model cannot train without it: `doctor` exits 1 when it fails. */
  required: boolean
  detail: string
  fix?: string
}

export interface DoctorReport {
  /** Every place libtorch was looked for, in order, and why each unused one was skipped. */
  libtorchSearch: LibtorchSearch
  /** Where the prebuilt addon was found. */
  addon?: { dir: string; from: string }
  glibc?: string
  /** What libtorch and CUDA the loaded addon sees; absent when libtorch could not be loaded. */
  device?: DeviceInfo
  /** The coded error that stopped loading, when one did. */
  error?: { code: string; message: string }
  checks: DoctorCheck[]
}

type NativeState = ReturnType<typeof nativeState>

/** Checks the installation and says how to fix what is missing. Never throws. */
export function doctor(): DoctorReport {
  let device: DeviceInfo | undefined
  let error: { code: string; message: string } | undefined
  try {
    device = deviceInfo()
  } catch (err) {
    const e = err instanceof EmotionPipelineError ? err : new EmotionPipelineError('INTERNAL', String(err))
    error = { code: e.code, message: e.message }
  }
  const state = nativeState()
  const libtorchSearch = state?.search ?? locateLibtorch()
  const addon = state?.addon ?? findAddon()
  const checks = [
    addonCheck(addon),
    libtorchCheck(device, libtorchSearch, error),
    ...(device ? cudaChecks(device, state) : []),
    ...(device ? [glooCheck(state)] : []),
    whisperCheck(),
    transformersCheck(),
    encoderCheck(),
  ]
  return { libtorchSearch, addon, glibc: state?.glibc, device, error, checks }
}

function addonCheck(addon: DoctorReport['addon']): DoctorCheck {
  return {
    name: 'addon',
    ok: addon !== undefined,
    required: true,
    detail: addon ? `${addon.dir} (${addon.from})` : `no prebuilt addon (package ${PLATFORM_PACKAGE})`,
    fix: addon
      ? undefined
      : `npm install emotion-pipeline on Linux x64 (glibc ≥ 2.34) without --omit=optional, or build from source: npm run build`,
  }
}

function libtorchCheck(device: DeviceInfo | undefined, search: LibtorchSearch, error: DoctorReport['error']): DoctorCheck {
  const found = search.found
  return {
    name: 'libtorch',
    ok: device !== undefined,
    required: true,
    detail: device
      ? `${device.torchVersion} from ${device.libtorch.path} (via ${device.libtorch.source})`
      : found
        ? `found ${found.version} at ${found.root} (via ${found.via}) but it did not load: ${error?.message}`
        : error?.code === 'LIBTORCH_NOT_FOUND'
          ? `libtorch ${REQUIRED_TORCH} not found in any of the places below`
          : (error?.message ?? `libtorch ${REQUIRED_TORCH} not found`),
    fix: device ? undefined : installTorchCommand(),
  }
}

/** CUDA itself, and where it is there, CUDA graphs and cuDNN. */
function cudaChecks(device: DeviceInfo, state: NativeState): DoctorCheck[] {
  const cuda: DoctorCheck = {
    name: 'CUDA',
    ok: device.cudaAvailable,
    required: false,
    detail: device.cudaAvailable
      ? device.devices.map((d) => `cuda:${d.index} ${d.name}, ${(d.totalMemoryBytes / 2 ** 30).toFixed(1)} GiB`).join('; ')
      : (device.cudaProblem ?? 'not available'),
    fix: device.cudaAvailable
      ? undefined
      : state?.cuda.problem?.includes('did not load') || state?.cuda.problem?.includes('CPU-only')
        ? `training runs on the CPU; for a GPU: npx emotion-pipeline install-torch --cuda`
        : 'training runs on the CPU; for a GPU install an NVIDIA driver that supports CUDA 13 (libcuda.so.1) and check `nvidia-smi`',
  }
  if (!device.cudaAvailable) return [cuda]
  const graph = state?.cudaGraph
  return [
    cuda,
    {
      name: 'CUDA graphs',
      ok: graph?.loaded === true,
      required: false,
      detail: graph?.loaded
        ? 'shim loaded (TrainOptions.cudaGraph)'
        : `unavailable: ${graph?.problem ?? 'not loaded'}; cudaGraph trains eagerly`,
      fix: graph?.loaded
        ? undefined
        : 'reinstall emotion-pipeline (the platform package ships the shim), or build from source: npm run build',
    },
    {
      name: 'cuDNN',
      ok: device.cudnnVersion !== undefined,
      required: false,
      detail: device.cudnnVersion !== undefined ? String(device.cudnnVersion) : 'not found',
      fix: device.cudnnVersion !== undefined ? undefined : 'npx emotion-pipeline install-torch --cuda',
    },
  ]
}

function glooCheck(state: NativeState | undefined): DoctorCheck {
  const gloo = state?.gloo
  return {
    name: 'Data-parallel training (Gloo)',
    ok: gloo?.loaded === true,
    required: false,
    detail: gloo?.loaded ? 'shim loaded (train --nproc-per-node, distributed)' : `unavailable: ${gloo?.problem ?? 'not loaded'}`,
    fix: gloo?.loaded
      ? undefined
      : 'reinstall emotion-pipeline (the platform package ships the shim), or build from source on Debian/Ubuntu: npm run build',
  }
}

function whisperCheck(): DoctorCheck {
  const dir = whisperModelDir()
  const ok = isWhisperModelBuilt()
  return {
    name: 'whisper',
    ok,
    required: false,
    detail: ok
      ? `tiny.en in ${dir} (text and fusion models)`
      : `no offline Whisper model in ${dir}: only needed for the text and fusion models`,
    fix: ok ? undefined : 'npx emotion-pipeline install-models',
  }
}

/** Whether the optional transformers.js (the text branch's Whisper) resolves from this package. */
function transformersCheck(): DoctorCheck {
  let at: string | undefined
  try {
    at = import.meta.resolve('@huggingface/transformers').replace(/^file:\/\//, '')
  } catch {
    at = undefined
  }
  return {
    name: 'transformers.js',
    ok: at !== undefined,
    required: false,
    detail: at
      ? `@huggingface/transformers at ${at} (transcription for the text and fusion models)`
      : '@huggingface/transformers is not installed: only the text and fusion models (Whisper transcripts) need it',
    fix: at
      ? undefined
      : 'npm install @huggingface/transformers --onnxruntime-node-install=skip (an optional dependency that npm skips when its install fails, e.g. offline), or pass transcripts yourself',
  }
}

function encoderCheck(): DoctorCheck {
  const dir = installedEncoderDir(DEFAULT_ENCODER)
  const installed = isEncoderInstalled(DEFAULT_ENCODER)
  // The file itself, not only its install marker: one flipped bit changes every state it computes.
  const damaged = installed ? encoderDamage(DEFAULT_ENCODER) : undefined
  const ok = installed && !damaged
  return {
    name: 'encoder',
    ok,
    required: true,
    detail: ok
      ? `${DEFAULT_ENCODER} in ${dir} (the recommended encoder model; SHA-256 verified)`
      : damaged
        ? `${DEFAULT_ENCODER} in ${dir} is damaged: ${damaged}`
        : `${DEFAULT_ENCODER} is not installed in ${dir}: the recommended encoder model needs it`,
    fix: ok ? undefined : `${damaged ? `rm -r ${dir} && ` : ''}npx emotion-pipeline install-models --encoder ${DEFAULT_ENCODER}`,
  }
}

/** Why an installed encoder's model.bin is not the file the installer promised (size, SHA-256), or undefined. */
function encoderDamage(name: EncoderName): string | undefined {
  const file = join(installedEncoderDir(name), 'model.bin')
  const expected = ENCODERS[name]
  const size = statSync(file, { throwIfNoEntry: false })?.size
  if (size !== expected.bytes) return `model.bin has ${size ?? 'no'} bytes, not ${expected.bytes}`
  const hash = createHash('sha256')
  const fd = openSync(file, 'r')
  try {
    const chunk = Buffer.alloc(8 << 20)
    for (let n = readSync(fd, chunk); n > 0; n = readSync(fd, chunk)) hash.update(chunk.subarray(0, n))
  } finally {
    closeSync(fd)
  }
  const sha = hash.digest('hex')
  return sha === expected.sha256 ? undefined : `model.bin has SHA-256 ${sha}, not ${expected.sha256}`
}

export function formatDoctor(report: DoctorReport): string {
  const lines = ['emotion-pipeline doctor', '']
  for (const c of report.checks) {
    lines.push(`${c.ok ? '✔' : c.required ? '✘' : '·'} ${c.name.padEnd(15)} ${c.detail}`)
    if (c.fix) lines.push(`  ${' '.repeat(15)} fix: ${c.fix}`)
  }
  lines.push('', 'libtorch search order:')
  for (const c of report.libtorchSearch.candidates) {
    lines.push(`  ${c.skipped ? '·' : '→'} ${c.via.padEnd(34)} ${c.skipped ? `skipped: ${c.skipped}` : `used: ${c.path}`}`)
  }
  if (report.glibc) lines.push('', `glibc ${report.glibc}`)
  if (report.device) lines.push(`CPU threads used by libtorch: ${report.device.cpuThreads}`)
  return lines.join('\n')
}
