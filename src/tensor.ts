import { callNative } from './errors.js'
import { native } from './native.js'
import type { DeviceSpec } from './device.js'

/** Sends `data` through libtorch as a tensor of `shape` on `device` and back: a smoke test of the chain. */
export function tensorRoundTrip(data: Float32Array, shape: number[], device: DeviceSpec = 'cpu') {
  return callNative(() => native.tensorRoundTrip(data, shape, device))
}
