import { callNative, EmotionPipelineError } from './errors.js'
import { findAddon, native, nativeState, PLATFORM_PACKAGE } from './native.js'
import { installTorchCommand, locateLibtorch, REQUIRED_TORCH } from './libtorch.js'
import type { LibtorchSearch } from './libtorch.js'
import { isWhisperModelBuilt, whisperModelDir } from './whisper-install.js'
import { DEFAULT_ENCODER, installedEncoderDir, isEncoderInstalled } from './encoder-install.js'
import type { DeviceInfo as CoreDeviceInfo, GpuDevice } from './generated/results.js'

export type { GpuDevice }

/** What libtorch and CUDA this process sees: the core's `DeviceInfo`, plus how libtorch was found. */
export interface DeviceInfo extends Omit<CoreDeviceInfo, 'libtorch' | 'cudnnVersion' | 'cudaProblem'> {
  cudnnVersion?: number
  libtorch: CoreDeviceInfo['libtorch'] & {
    /** How it was found: `$EMOTION_PIPELINE_LIBTORCH`, `$LIBTORCH`, `$VIRTUAL_ENV`, `python3`, `install-torch cache`, … */
    source: string
  }
  /** Why CUDA is not usable, when it is not. */
  cudaProblem?: string
}

/** `'auto' | 'cpu' | 'cuda' | 'cuda:N'` */
export type DeviceSpec = 'auto' | 'cpu' | 'cuda' | `cuda:${number}`

/** What libtorch and CUDA this process sees. */
export function deviceInfo(): DeviceInfo {
  const info = JSON.parse(callNative(() => native.deviceInfo())) as CoreDeviceInfo
  const state = nativeState()
  // The loader knows why libtorch_cuda did not load (a missing CUDA library); the core only sees that it is absent.
  const cudaProblem = info.cudaAvailable ? undefined : (state?.cuda.problem ?? info.cudaProblem ?? undefined)
  return {
    ...info,
    cudnnVersion: info.cudnnVersion ?? undefined,
    libtorch: { path: info.libtorch.path, source: state?.libtorch?.via ?? 'unknown' },
    cudaProblem,
  }
}

export { REQUIRED_TORCH }

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
  const checks: DoctorCheck[] = []
  checks.push({
    name: 'addon',
    ok: addon !== undefined,
    required: true,
    detail: addon ? `${addon.dir} (${addon.from})` : `no prebuilt addon (package ${PLATFORM_PACKAGE})`,
    fix: addon
      ? undefined
      : `npm install emotion-pipeline on Linux x64 (glibc ≥ 2.34) without --omit=optional, or build from source: npm run build`,
  })
  const found = libtorchSearch.found
  checks.push({
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
  })
  if (device) {
    checks.push({
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
    })
    if (device.cudaAvailable) {
      const graph = state?.cudaGraph
      checks.push({
        name: 'CUDA graphs',
        ok: graph?.loaded === true,
        required: false,
        detail: graph?.loaded
          ? 'shim loaded (TrainOptions.cudaGraph)'
          : `unavailable: ${graph?.problem ?? 'not loaded'}; cudaGraph trains eagerly`,
        fix: graph?.loaded
          ? undefined
          : 'reinstall emotion-pipeline (the platform package ships the shim), or build from source: npm run build',
      })
      checks.push({
        name: 'cuDNN',
        ok: device.cudnnVersion !== undefined,
        required: false,
        detail: device.cudnnVersion !== undefined ? String(device.cudnnVersion) : 'not found',
        fix: device.cudnnVersion !== undefined ? undefined : 'npx emotion-pipeline install-torch --cuda',
      })
    }
  }
  const whisper = whisperModelDir()
  const whisperOk = isWhisperModelBuilt()
  checks.push({
    name: 'whisper',
    ok: whisperOk,
    required: false,
    detail: whisperOk
      ? `tiny.en in ${whisper} (text and fusion models)`
      : `no offline Whisper model in ${whisper}: only needed for the text and fusion models`,
    fix: whisperOk ? undefined : 'npx emotion-pipeline install-models',
  })
  const transformers = transformersJs()
  checks.push({
    name: 'transformers.js',
    ok: transformers.ok,
    required: false,
    detail: transformers.detail,
    fix: transformers.ok
      ? undefined
      : 'npm install @huggingface/transformers --onnxruntime-node-install=skip (an optional dependency that npm skips when its install fails, e.g. offline), or pass transcripts yourself',
  })
  const encoderDir = installedEncoderDir(DEFAULT_ENCODER)
  const encoderOk = isEncoderInstalled(DEFAULT_ENCODER)
  checks.push({
    name: 'encoder',
    ok: encoderOk,
    required: true,
    detail: encoderOk
      ? `${DEFAULT_ENCODER} in ${encoderDir} (the recommended encoder model)`
      : `${DEFAULT_ENCODER} is not installed in ${encoderDir}: the recommended encoder model needs it`,
    fix: encoderOk ? undefined : `npx emotion-pipeline install-models --encoder ${DEFAULT_ENCODER}`,
  })
  return { libtorchSearch, addon, glibc: state?.glibc, device, error, checks }
}

/** Whether the optional transformers.js (the text branch's Whisper) resolves from this package. */
function transformersJs(): { ok: boolean; detail: string } {
  try {
    const at = import.meta.resolve('@huggingface/transformers')
    return {
      ok: true,
      detail: `@huggingface/transformers at ${at.replace(/^file:\/\//, '')} (transcription for the text and fusion models)`,
    }
  } catch {
    return {
      ok: false,
      detail: '@huggingface/transformers is not installed: only the text and fusion models (Whisper transcripts) need it',
    }
  }
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
