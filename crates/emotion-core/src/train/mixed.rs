//! How a training job computes: its precision (fp32, or autocast in bf16/fp16 on CUDA and bf16 on the
//! CPU through the C++ shim in csrc/autocast.cpp) and the memory layout of the CNN (channels-last
//! through csrc/memory_format.cpp). tch 0.24 exposes neither CPU autocast nor memory formats.

use super::config::{Amp, MemoryFormat, ModelKind, Preset};
use crate::device::cpu_has_native_bf16;
use crate::error::{Error, Result};
use crate::shims::{
    emotion_cpu_autocast_enabled, emotion_cpu_autocast_enter, emotion_cpu_autocast_exit, emotion_cuda_autocast_is_bf16,
    emotion_is_channels_last, emotion_set_autocast_cache, emotion_set_cuda_autocast_bf16,
    emotion_set_data_channels_last, emotion_to_channels_last,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::os::raw::c_int;
use tch::{Device, Tensor};

/// The precision a job trains in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// fp16 autocast with loss scaling (CUDA).
    Fp16,
    /// bf16 autocast, no loss scaling (CUDA, and CPUs with native bf16).
    Bf16,
    Fp32,
}

/// Whether CUDA autocast regions currently run in bf16.
pub fn cuda_autocast_is_bf16() -> bool {
    // SAFETY: reads one dtype from libtorch.
    unsafe { emotion_cuda_autocast_is_bf16() != 0 }
}

/// Whether this thread is inside a CPU autocast region.
pub fn cpu_autocast_enabled() -> bool {
    // SAFETY: reads one thread-local flag from libtorch.
    unsafe { emotion_cpu_autocast_enabled() != 0 }
}

/// Leaves the CPU autocast region on drop, also when the forward pass panics.
struct CpuAutocast(c_int);

impl CpuAutocast {
    fn enter() -> CpuAutocast {
        // SAFETY: sets thread-local autocast state in libtorch; no pointers cross.
        CpuAutocast(unsafe { emotion_cpu_autocast_enter() })
    }
}

impl Drop for CpuAutocast {
    fn drop(&mut self) {
        // SAFETY: the matching exit of `enter`.
        unsafe { emotion_cpu_autocast_exit(self.0) }
    }
}

/// Autocast's cache of casted weights off on this thread until drop (what CUDA graph capture needs).
pub struct AutocastCacheOff(c_int);

impl AutocastCacheOff {
    pub fn enter() -> AutocastCacheOff {
        // SAFETY: sets thread-local autocast state in libtorch; no pointers cross.
        AutocastCacheOff(unsafe { emotion_set_autocast_cache(0) })
    }
}

impl Drop for AutocastCacheOff {
    fn drop(&mut self) {
        // SAFETY: restores the state `enter` found.
        unsafe { emotion_set_autocast_cache(self.0) };
    }
}

/// A job's precision and how its forward passes run.
#[derive(Debug, Clone, Copy)]
pub struct Mixed {
    pub precision: Precision,
    device: Device,
}

impl Mixed {
    /// The precision for `amp` on `device`. What cannot be honoured falls back to fp32 with a warning
    /// (`warn`), never an error: fp16 on the CPU, bf16 on a CPU without native bf16. `auto` on the CPU
    /// is bf16 where it is native, except for the reference preset, which stays fp32 there.
    pub fn choose(kind: ModelKind, amp: Amp, preset: Preset, device: Device, warn: &mut dyn FnMut(String)) -> Mixed {
        let name = kind.name();
        let precision = match (amp, device) {
            (Amp::Off, _) => Precision::Fp32,
            (Amp::Auto | Amp::Fp16, Device::Cuda(_)) => Precision::Fp16,
            (Amp::Bf16, Device::Cuda(_)) => Precision::Bf16,
            (Amp::Auto, _) if preset == Preset::Recommended && cpu_has_native_bf16() => Precision::Bf16,
            (Amp::Auto, _) => Precision::Fp32,
            (Amp::Bf16, _) if cpu_has_native_bf16() => Precision::Bf16,
            (Amp::Bf16, _) => {
                warn(format!("{name} model: amp 'bf16': this CPU has no native bf16 (AVX512-BF16); training in fp32"));
                Precision::Fp32
            }
            (Amp::Fp16, _) => {
                warn(format!("{name} model: amp 'fp16' needs CUDA; training in fp32 on the CPU"));
                Precision::Fp32
            }
        };
        Mixed::with(precision, device)
    }

    /// Exactly `precision` (a resumed job keeps the precision it started with).
    pub fn with(precision: Precision, device: Device) -> Mixed {
        if let (Device::Cuda(_), Precision::Fp16 | Precision::Bf16) = (device, precision) {
            // Global libtorch state: set for every job (training jobs take turns).
            // SAFETY: sets one dtype in libtorch; no pointers cross.
            unsafe { emotion_set_cuda_autocast_bf16((precision == Precision::Bf16) as c_int) }
        }
        Mixed { precision, device }
    }

    /// Whether losses are scaled (fp16 only).
    pub fn scales_loss(&self) -> bool {
        self.precision == Precision::Fp16
    }

    /// Runs `f` (a forward pass) in this precision.
    pub fn forward<T>(&self, f: impl FnOnce() -> T) -> T {
        match (self.precision, self.device) {
            (Precision::Fp32, _) => f(),
            (_, Device::Cuda(_)) => tch::autocast(true, f),
            _ => {
                let _region = CpuAutocast::enter();
                f()
            }
        }
    }
}

/// Whether the CNN runs channels-last for `format` on `device`. `auto`: channels-last, which measured
/// faster on both the CPU (oneDNN) and CUDA (cuDNN) for this CNN (`npm run bench:train`).
pub fn channels_last(format: MemoryFormat, kind: ModelKind) -> bool {
    kind.kind().channels_last() && matches!(format, MemoryFormat::Auto | MemoryFormat::ChannelsLast)
}

/// A channels-last copy of a 4-D tensor (the same tensor when it already is).
pub fn to_channels_last(t: &Tensor) -> Result<Tensor> {
    // SAFETY: tch's tensor handle is an `at::Tensor*`; the shim returns a new one we own, or null.
    let out = unsafe { emotion_to_channels_last(t.as_ptr().cast()) };
    if out.is_null() {
        return Err(Error::torch(format!("cannot lay out a tensor of shape {:?} channels-last", t.size())));
    }
    // SAFETY: a fresh `at::Tensor*` from `new`, now owned (and freed) by the returned Tensor.
    Ok(unsafe { Tensor::from_ptr(out.cast()) })
}

/// Re-lays every 4-D parameter (the conv weights) out channels-last, in place. Call before the
/// optimiser is built, so its state tensors take the same layout.
pub fn params_to_channels_last(params: &mut [Tensor]) -> Result<()> {
    for p in params.iter_mut().filter(|p| p.dim() == 4) {
        // SAFETY: `p` is a live `at::Tensor*`; the shim swaps its storage (`param.data = …`).
        if unsafe { emotion_set_data_channels_last(p.as_mut_ptr().cast()) } != 0 {
            return Err(Error::torch(format!("cannot lay out a parameter of shape {:?} channels-last", p.size())));
        }
    }
    Ok(())
}

pub fn is_channels_last(t: &Tensor) -> bool {
    // SAFETY: reads the strides of a live tensor.
    unsafe { emotion_is_channels_last(t.as_ptr().cast()) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn the_shim_sets_and_reads_the_cuda_autocast_dtype() {
        let _ = Mixed::with(Precision::Bf16, Device::Cuda(0));
        assert!(cuda_autocast_is_bf16());
        let _ = Mixed::with(Precision::Fp16, Device::Cuda(0));
        assert!(!cuda_autocast_is_bf16());
    }

    #[test]
    fn cpu_bf16_autocast_runs_matmuls_in_bf16_and_ends_with_the_region() {
        let _turn = crate::rng_turn();
        let a = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([8, 3], (Kind::Float, Device::Cpu));
        let mixed = Mixed::with(Precision::Bf16, Device::Cpu);
        let inside = mixed.forward(|| (cpu_autocast_enabled(), a.matmul(&b).kind()));
        assert_eq!(inside, (true, Kind::BFloat16));
        assert!(!cpu_autocast_enabled());
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| mixed.forward(|| panic!("boom"))));
        assert!(caught.is_err());
        assert!(!cpu_autocast_enabled(), "a panic inside the region still leaves it");
        assert_eq!(Mixed::with(Precision::Fp32, Device::Cpu).forward(|| a.matmul(&b).kind()), Kind::Float);
    }

    #[test]
    fn channels_last_keeps_values_and_changes_strides() {
        let _turn = crate::rng_turn();
        let x = Tensor::randn([2, 3, 4, 5], (Kind::Float, Device::Cpu));
        let y = to_channels_last(&x).unwrap();
        assert!(is_channels_last(&y) && !is_channels_last(&x));
        assert_eq!(y.stride(), vec![60, 1, 15, 3]);
        assert!(x.equal(&y));
        let mut params = vec![
            Tensor::randn([8, 3, 3, 3], (Kind::Float, Device::Cpu)),
            Tensor::randn([8], (Kind::Float, Device::Cpu)),
        ];
        let before = params[0].copy();
        params_to_channels_last(&mut params).unwrap();
        assert!(is_channels_last(&params[0]));
        assert!(params[0].equal(&before));
    }
}
