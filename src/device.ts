import { callNative } from './errors.js'
import { native, nativeState } from './native.js'
import { REQUIRED_TORCH } from './libtorch.js'
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
