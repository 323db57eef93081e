import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { callNative } from './errors.js'
import { native } from './native.js'

export interface GpuDevice {
  index: number
  name: string
  totalMemoryBytes: number
}

export interface DeviceInfo {
  /** Version of the libtorch loaded by this process, e.g. `2.11.0+cu130`. */
  torchVersion: string
  cudaAvailable: boolean
  cudaDeviceCount: number
  devices: GpuDevice[]
  cudnnVersion?: number
  libtorch: {
    /** Folder of the libtorch shared libraries this process loaded. */
    path: string
    /** How the build found libtorch: `LIBTORCH`, `python` (active virtualenv) or `cache-venv`. */
    source: string
    python?: string
  }
  /** Why CUDA is not usable, when it is not. */
  cudaProblem?: string
  cpuThreads: number
}

/** `'auto' | 'cpu' | 'cuda' | 'cuda:N'` */
export type DeviceSpec = 'auto' | 'cpu' | 'cuda' | `cuda:${number}`

/** What libtorch and CUDA this process sees. */
export function deviceInfo(): DeviceInfo {
  return callNative(() => native.deviceInfo()) as DeviceInfo
}

export const REQUIRED_TORCH = '2.11.0'

export interface DoctorCheck {
  name: string
  ok: boolean
  detail: string
  fix?: string
}

/** Checks the installation and says how to fix what is missing. */
export function doctorChecks(info: DeviceInfo = deviceInfo()): DoctorCheck[] {
  const checks: DoctorCheck[] = []
  const versionOk = info.torchVersion.startsWith(REQUIRED_TORCH)
  checks.push({
    name: 'libtorch',
    ok: versionOk,
    detail: `${info.torchVersion} from ${info.libtorch.path} (found via ${info.libtorch.source})`,
    fix: versionOk
      ? undefined
      : `tch 0.24 needs PyTorch ${REQUIRED_TORCH}: unset LIBTORCH or point it at torch==${REQUIRED_TORCH}, then \`npm run build\``,
  })
  const cudaLinked = existsSync(join(info.libtorch.path, 'libtorch_cuda.so'))
  checks.push({
    name: 'libtorch CUDA build',
    ok: cudaLinked,
    detail: cudaLinked ? 'libtorch_cuda.so present' : 'CPU-only libtorch',
    fix: cudaLinked ? undefined : `install the CUDA wheel (pip install torch==${REQUIRED_TORCH}) and rebuild`,
  })
  checks.push({
    name: 'CUDA',
    ok: info.cudaAvailable,
    detail: info.cudaAvailable
      ? info.devices.map((d) => `cuda:${d.index} ${d.name}, ${(d.totalMemoryBytes / 2 ** 30).toFixed(1)} GiB`).join('; ')
      : (info.cudaProblem ?? 'not available'),
    fix: info.cudaAvailable
      ? undefined
      : 'training runs on the CPU; for a GPU install an NVIDIA driver that supports CUDA 13 (libcuda.so.1) and check `nvidia-smi`',
  })
  if (info.cudaAvailable) {
    checks.push({
      name: 'cuDNN',
      ok: info.cudnnVersion !== undefined,
      detail: info.cudnnVersion !== undefined ? String(info.cudnnVersion) : 'not found',
      fix: info.cudnnVersion !== undefined ? undefined : 'install nvidia-cudnn-cu13 beside torch',
    })
  }
  return checks
}

export function formatDoctor(info: DeviceInfo, checks: DoctorCheck[]): string {
  const lines = ['emotion-pipeline doctor', '']
  for (const c of checks) {
    lines.push(`${c.ok ? '✔' : '✘'} ${c.name.padEnd(20)} ${c.detail}`)
    if (c.fix) lines.push(`  ${' '.repeat(20)} fix: ${c.fix}`)
  }
  lines.push('', `CPU threads used by libtorch: ${info.cpuThreads}`)
  return lines.join('\n')
}
