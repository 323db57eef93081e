//! Device selection and a report of what libtorch and CUDA this process sees.

use crate::error::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Parses `'auto' | 'cpu' | 'cuda' | 'cuda:N'`. `auto` picks CUDA device 0 when available.
/// An explicit CUDA request without a usable GPU fails with `CudaUnavailable` (no silent fallback).
pub fn parse_device(spec: &str) -> Result<tch::Device> {
    let spec = spec.trim().to_ascii_lowercase();
    match spec.as_str() {
        "auto" => Ok(if tch::Cuda::is_available() { tch::Device::Cuda(0) } else { tch::Device::Cpu }),
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => cuda_device(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(index)) => cuda_device(index),
            _ => Err(Error::invalid("device", format!("expected 'auto', 'cpu', 'cuda' or 'cuda:N', got '{spec}'"))),
        },
    }
}

/// The device of a data-parallel rank with index `local_rank` on its machine: `auto` and `cuda` mean
/// a GPU of its own (`cuda:LOCAL_RANK`, torchrun's convention) where there is CUDA; `cuda:N` and `cpu`
/// stay as given.
pub fn rank_device(spec: &str, local_rank: usize) -> Result<String> {
    let spec = spec.trim().to_ascii_lowercase();
    let cuda = tch::Cuda::is_available();
    match spec.as_str() {
        "auto" if !cuda => Ok("cpu".into()),
        // No CUDA: `parse_device` says so (CUDA_UNAVAILABLE).
        "cuda" if !cuda => Ok(spec),
        "auto" | "cuda" => {
            let count = tch::Cuda::device_count() as usize;
            if local_rank >= count {
                return Err(Error::invalid(
                    "device",
                    format!(
                        "LOCAL_RANK {local_rank} has no CUDA device of its own ({count} visible): start at most {count} \
                         processes per machine, or train on the CPU (device 'cpu')"
                    ),
                ));
            }
            Ok(format!("cuda:{local_rank}"))
        }
        _ => Ok(spec),
    }
}

fn cuda_device(index: usize) -> Result<tch::Device> {
    let count = tch::Cuda::device_count() as usize;
    if !tch::Cuda::is_available() || count == 0 {
        return Err(Error::CudaUnavailable(format!(
            "device 'cuda:{index}' requested but libtorch sees no CUDA device ({}); run `emotion-pipeline doctor`",
            cuda_probe_summary()
        )));
    }
    if index >= count {
        return Err(Error::invalid("device", format!("cuda:{index} does not exist: {count} CUDA device(s) visible")));
    }
    Ok(tch::Device::Cuda(index))
}

/// Free memory of a CUDA device in bytes, from the driver; `None` when it cannot say.
pub fn cuda_free_memory(index: usize) -> Option<u64> {
    cuda_driver::free_memory(index as u32)
}

/// Human name of a tch device, e.g. `cpu`, `cuda:0`.
pub fn device_name(device: tch::Device) -> String {
    match device {
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        tch::Device::Mps => "mps".into(),
        tch::Device::Vulkan => "vulkan".into(),
        _ => "cpu".into(),
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuDevice {
    pub index: u32,
    pub name: String,
    pub total_memory_bytes: u64,
    /// Free now, as the driver reports it (0 when it cannot say).
    pub free_memory_bytes: u64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LibtorchInfo {
    /// Directory of the libtorch shared libraries actually loaded by this process.
    pub path: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    pub torch_version: String,
    pub cuda_available: bool,
    pub cuda_device_count: u32,
    pub devices: Vec<GpuDevice>,
    pub cudnn_version: Option<u32>,
    pub libtorch: LibtorchInfo,
    /// Why CUDA is not usable, in words, when it is not.
    pub cuda_problem: Option<String>,
    pub cpu_threads: u32,
    /// Whether the CPU computes bf16 natively (AVX512-BF16), so `amp: 'auto'` trains in bf16 on it.
    pub cpu_native_bf16: bool,
    /// Whether the CUDA-graph shim's functions are loaded (`cudaGraph` training can capture on a GPU).
    pub cuda_graphs: bool,
}

/// Whether the CPU computes in bf16 natively (AVX512-BF16 on x86, the BF16 extension on Arm); without
/// it libtorch emulates bf16, which is slower than fp32. `EMOTION_PIPELINE_NO_CPU_BF16=1` answers no
/// (to compare precisions, or to test the fallback on a CPU that has it).
pub fn cpu_has_native_bf16() -> bool {
    if std::env::var_os("EMOTION_PIPELINE_NO_CPU_BF16").is_some_and(|v| v != "0") {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512bf16");
    #[cfg(target_arch = "aarch64")]
    return std::arch::is_aarch64_feature_detected!("bf16");
    #[allow(unreachable_code)]
    false
}

pub fn device_info() -> DeviceInfo {
    let lib_dir = loaded_libtorch_dir();
    let cuda_available = tch::Cuda::is_available();
    let count = if cuda_available { tch::Cuda::device_count().max(0) as u32 } else { 0 };
    let devices = (0..count).map(cuda_driver::gpu).collect();
    DeviceInfo {
        torch_version: lib_dir.as_deref().and_then(torch_version_near).unwrap_or_else(|| "unknown".into()),
        cuda_available,
        cuda_device_count: count,
        devices,
        cudnn_version: if cuda_available { cuda_driver::cudnn_version() } else { None },
        libtorch: LibtorchInfo { path: lib_dir.map(|p| p.display().to_string()).unwrap_or_else(|| "unknown".into()) },
        cuda_problem: if cuda_available { None } else { Some(cuda_probe_summary()) },
        cpu_threads: tch::get_num_threads().max(0) as u32,
        cpu_native_bf16: cpu_has_native_bf16(),
        cuda_graphs: crate::cuda_graph::available().is_ok(),
    }
}

/// Reads /proc/self/maps to find where libtorch_cpu.so was loaded from.
fn loaded_libtorch_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.ends_with("/libtorch_cpu.so"))
        .and_then(|path| Path::new(path).parent().map(Path::to_path_buf))
}

/// The pip wheel keeps `version.py` one level above `lib/`: `__version__ = '2.11.0+cu130'`.
fn torch_version_near(lib_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(lib_dir.parent()?.join("version.py")).ok()?;
    let line = text.lines().find(|l| l.starts_with("__version__"))?;
    Some(line.split(['\'', '"']).nth(1)?.to_string())
}

/// One line that says why CUDA is not usable: no torch_cuda linked, no driver, or no device.
pub fn cuda_probe_summary() -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    if !maps.contains("libtorch_cuda.so") {
        return "libtorch_cuda.so is not loaded: this libtorch is CPU-only, or it did not load (emotion-pipeline doctor says why)".into();
    }
    match cuda_driver::driver_device_count() {
        Err(why) => format!("NVIDIA driver not usable ({why})"),
        Ok(0) => "the NVIDIA driver reports no GPU".into(),
        Ok(n) => {
            format!("the driver sees {n} GPU(s) but libtorch cannot use them (driver too old for this CUDA build?)")
        }
    }
}

/// Minimal use of the CUDA driver API (stable C signatures) for names and memory, which tch does
/// not expose. Loaded at run time so CPU-only machines need nothing.
mod cuda_driver {
    use super::GpuDevice;
    use libloading::{Library, Symbol};
    use std::os::raw::{c_char, c_int, c_uint};

    fn driver() -> Result<Library, String> {
        // SAFETY: libcuda's initialisers are safe to run; we only call documented entry points.
        let lib = unsafe { Library::new("libcuda.so.1") }.map_err(|e| format!("libcuda.so.1: {e}"))?;
        unsafe {
            let init: Symbol<unsafe extern "C" fn(c_uint) -> c_int> = lib.get(b"cuInit").map_err(|e| e.to_string())?;
            let rc = init(0);
            if rc != 0 {
                return Err(format!("cuInit returned {rc}"));
            }
        }
        Ok(lib)
    }

    pub fn driver_device_count() -> Result<u32, String> {
        let lib = driver()?;
        unsafe {
            let count_fn: Symbol<unsafe extern "C" fn(*mut c_int) -> c_int> =
                lib.get(b"cuDeviceGetCount").map_err(|e| e.to_string())?;
            let mut n = 0;
            match count_fn(&mut n) {
                0 => Ok(n.max(0) as u32),
                rc => Err(format!("cuDeviceGetCount returned {rc}")),
            }
        }
    }

    pub fn gpu(index: u32) -> GpuDevice {
        let (name, total_memory_bytes) = driver()
            .ok()
            .and_then(|lib| unsafe {
                let get: Symbol<unsafe extern "C" fn(*mut c_int, c_int) -> c_int> = lib.get(b"cuDeviceGet").ok()?;
                let name_fn: Symbol<unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int> =
                    lib.get(b"cuDeviceGetName").ok()?;
                let mem_fn: Symbol<unsafe extern "C" fn(*mut usize, c_int) -> c_int> =
                    lib.get(b"cuDeviceTotalMem_v2").ok()?;
                let mut dev = 0;
                if get(&mut dev, index as c_int) != 0 {
                    return None;
                }
                let mut buf = [0 as c_char; 256];
                name_fn(buf.as_mut_ptr(), buf.len() as c_int, dev);
                let name = std::ffi::CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned();
                let mut bytes = 0usize;
                mem_fn(&mut bytes, dev);
                Some((name, bytes as u64))
            })
            .unwrap_or_else(|| ("unknown".into(), 0));
        let free_memory_bytes = free_memory(index).unwrap_or(0);
        GpuDevice { index, name, total_memory_bytes, free_memory_bytes }
    }

    /// Free bytes on a device (`cuMemGetInfo` inside the device's primary context, the one the CUDA
    /// runtime and so libtorch use); `None` when the driver cannot say.
    pub fn free_memory(index: u32) -> Option<u64> {
        type Ctx = *mut std::ffi::c_void;
        let lib = driver().ok()?;
        unsafe {
            let get: Symbol<unsafe extern "C" fn(*mut c_int, c_int) -> c_int> = lib.get(b"cuDeviceGet").ok()?;
            let retain: Symbol<unsafe extern "C" fn(*mut Ctx, c_int) -> c_int> =
                lib.get(b"cuDevicePrimaryCtxRetain").ok()?;
            let release: Symbol<unsafe extern "C" fn(c_int) -> c_int> =
                lib.get(b"cuDevicePrimaryCtxRelease_v2").ok()?;
            let push: Symbol<unsafe extern "C" fn(Ctx) -> c_int> = lib.get(b"cuCtxPushCurrent_v2").ok()?;
            let pop: Symbol<unsafe extern "C" fn(*mut Ctx) -> c_int> = lib.get(b"cuCtxPopCurrent_v2").ok()?;
            let info: Symbol<unsafe extern "C" fn(*mut usize, *mut usize) -> c_int> =
                lib.get(b"cuMemGetInfo_v2").ok()?;
            let mut dev = 0;
            let mut ctx: Ctx = std::ptr::null_mut();
            if get(&mut dev, index as c_int) != 0 || retain(&mut ctx, dev) != 0 {
                return None;
            }
            let (mut free, mut total) = (0usize, 0usize);
            let ok = push(ctx) == 0 && {
                let rc = info(&mut free, &mut total);
                let mut popped: Ctx = std::ptr::null_mut();
                pop(&mut popped);
                rc == 0
            };
            release(dev);
            ok.then_some(free as u64)
        }
    }

    /// libtorch has already loaded cuDNN when CUDA works; ask it for its version.
    pub fn cudnn_version() -> Option<u32> {
        for name in ["libcudnn.so.9", "libcudnn.so.8", "libcudnn.so"] {
            if let Ok(lib) = unsafe { Library::new(name) } {
                let version = unsafe {
                    let f: Symbol<unsafe extern "C" fn() -> usize> = lib.get(b"cudnnGetVersion").ok()?;
                    f()
                };
                return Some(version as u32);
            }
        }
        None
    }
}
