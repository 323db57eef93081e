import type { MelOptions } from './audio.js'
import { awaitNative, callNative } from './errors.js'
import type { DeviceMelTiming, GraphSelfTest, GroupSelfTest } from './generated/results.js'
import { native } from './native.js'
import type { DeviceSpec } from './device.js'

/** Sends `data` through libtorch as a tensor of `shape` on `device` and back: a smoke test of the chain. */
export function tensorRoundTrip(data: Float32Array, shape: number[], device: DeviceSpec = 'cpu') {
  return callNative(() => native.tensorRoundTrip(data, shape, device))
}

/**
 * Log-mel throughput with `batch` waveforms already on `device` (decode and host-to-device transfer
 * excluded; the transfer of one batch is timed separately): the benchmark's on-device figure.
 */
export function timeMelOnDevice(
  options: { mel?: MelOptions; device?: DeviceSpec; batch?: number; repeats?: number } = {},
): DeviceMelTiming {
  const { mel, device = 'cpu', batch = 256, repeats = 5 } = options
  return JSON.parse(
    callNative(() => native.timeMelOnDevice(mel ? JSON.stringify(mel) : undefined, device, batch, repeats)),
  ) as DeviceMelTiming
}

/**
 * Captures `y = 2x + 1` in a CUDA graph on `device`, replays it with x = 1, 2, 3, then lets a capture
 * fail on purpose and computes eagerly after it: the smallest check of the CUDA-graph shim.
 */
/**
 * Runs each collective data-parallel training uses on a `gloo` or `nccl` process group in a world of
 * one process (a free local port) on `device`: the check of the shims (NCCL needs a GPU host).
 */
export async function processGroupSelfTest(backend: 'gloo' | 'nccl', device: DeviceSpec = 'cpu'): Promise<GroupSelfTest> {
  return JSON.parse(await awaitNative(native.processGroupSelfTest(backend, device))) as GroupSelfTest
}

export function cudaGraphSelfTest(device: DeviceSpec = 'cuda'): GraphSelfTest {
  return JSON.parse(callNative(() => native.cudaGraphSelfTest(device))) as GraphSelfTest
}
