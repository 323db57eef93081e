//! The declarations of the C++ shims in `csrc/` (compiled by build.rs into this crate), in one place:
//! libtorch internals that tch does not expose (fused Adam, autocast state, memory format, the caching
//! CPU allocator). Each caller wraps its calls in a safe function and states why the call is sound.
//! The CUDA-graph shim is not here: it is a shared object of its own, found at run time
//! (`cuda_graph.rs`).

use std::ffi::c_void;
use std::os::raw::{c_char, c_int};

// Optimiser (csrc/optim.cpp).
extern "C" {
    #[allow(clippy::too_many_arguments)]
    pub fn emotion_fused_adam(
        params: *const *mut c_void,
        grads: *const *mut c_void,
        exp_avg: *const *mut c_void,
        exp_avg_sq: *const *mut c_void,
        steps: *const *mut c_void,
        n: c_int,
        found_inf: *mut c_void,
        inv_scale: *mut c_void,
        lr_tensor: *mut c_void,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        error: *mut c_char,
        error_len: c_int,
    ) -> c_int;
    pub fn emotion_clear_grads(params: *const *mut c_void, n: c_int);
    pub fn emotion_zero_grads(params: *const *mut c_void, n: c_int);
    pub fn emotion_set_grad(param: *mut c_void, grad: *mut c_void);
}

// c10d's TCPStore (csrc/store.cpp).
extern "C" {
    #[allow(clippy::too_many_arguments)]
    pub fn emotion_store_new(
        host: *const c_char,
        port: c_int,
        is_server: c_int,
        world_size: c_int,
        wait_workers: c_int,
        timeout_ms: i64,
        error: *mut c_char,
        error_len: c_int,
    ) -> *mut c_void;
    pub fn emotion_store_free(handle: *mut c_void);
    pub fn emotion_store_set(
        handle: *mut c_void,
        key: *const c_char,
        value: *const u8,
        len: i64,
        error: *mut c_char,
        error_len: c_int,
    ) -> c_int;
    pub fn emotion_store_get(
        handle: *mut c_void,
        key: *const c_char,
        out: *mut *mut u8,
        out_len: *mut i64,
        error: *mut c_char,
        error_len: c_int,
    ) -> c_int;
    pub fn emotion_store_free_bytes(bytes: *mut u8);
    pub fn emotion_store_add(
        handle: *mut c_void,
        key: *const c_char,
        delta: i64,
        out: *mut i64,
        error: *mut c_char,
        error_len: c_int,
    ) -> c_int;
    pub fn emotion_store_check(
        handle: *mut c_void,
        key: *const c_char,
        out: *mut c_int,
        error: *mut c_char,
        error_len: c_int,
    ) -> c_int;
    pub fn emotion_store_wait(
        handle: *mut c_void,
        key: *const c_char,
        timeout_ms: i64,
        error: *mut c_char,
        error_len: c_int,
    ) -> c_int;
}

// Caching CPU allocator (csrc/cpu_cache.cpp).
extern "C" {
    pub fn emotion_cpu_cache_install(limit_bytes: u64) -> i32;
    pub fn emotion_cpu_cache_release();
    pub fn emotion_cpu_cache_stats(out: *mut u64, reset: i32);
}

// Autocast state and memory format (csrc/autocast.cpp, csrc/memory_format.cpp).
extern "C" {
    pub fn emotion_set_cuda_autocast_bf16(bf16: c_int);
    pub fn emotion_cuda_autocast_is_bf16() -> c_int;
    pub fn emotion_cpu_autocast_enter() -> c_int;
    pub fn emotion_cpu_autocast_exit(was: c_int);
    pub fn emotion_cpu_autocast_enabled() -> c_int;
    pub fn emotion_set_autocast_cache(enabled: c_int) -> c_int;
    pub fn emotion_to_channels_last(t: *const c_void) -> *mut c_void;
    pub fn emotion_set_data_channels_last(t: *mut c_void) -> c_int;
    pub fn emotion_is_channels_last(t: *const c_void) -> c_int;
}

// The store's `c10d::Store*` for a process group (csrc/store.cpp) and DDP's gradient bucketing
// (csrc/buckets.cpp). The process groups themselves live in a shared object of their own
// (`distributed/group.rs`).
extern "C" {
    pub fn emotion_store_raw(handle: *mut c_void) -> *mut c_void;
    pub fn emotion_bucket_assignment(
        tensors: *const *mut c_void,
        n: c_int,
        first_bytes: i64,
        cap_bytes: i64,
        bucket_of: *mut c_int,
        error: *mut c_char,
        error_len: c_int,
    ) -> c_int;
}

/// The function table of a shim built as a shared object of its own (the CUDA-graph and Gloo shims),
/// found by name in the process's global scope (whoever loads the core opens it with RTLD_GLOBAL).
/// Only a success is kept: the shim may be loaded after a first look; `lookup` says why it failed.
pub(crate) fn found<T: Send + Sync>(
    cell: &'static std::sync::OnceLock<T>,
    lookup: fn(&libloading::os::unix::Library) -> Result<T, String>,
) -> Result<&'static T, String> {
    if let Some(api) = cell.get() {
        return Ok(api);
    }
    // dlopen(NULL): the program and every library opened with RTLD_GLOBAL.
    let found = lookup(&libloading::os::unix::Library::this())?;
    Ok(cell.get_or_init(|| found))
}

/// `shim_fn!(library, "file", "symbol")`: the function `symbol` of the shim `file`, or why not. The
/// caller's field type states the signature, which must match the shim's `extern "C"` definition.
macro_rules! shim_fn {
    ($this:expr, $file:expr, $name:literal) => {
        // SAFETY: the field's signature matches the `extern "C"` definition in the shim's source.
        *unsafe { $this.get(concat!($name, "\0").as_bytes()) }
            .map_err(|_| format!("{} is not loaded (symbol {} not found)", $file, $name))?
    };
}
pub(crate) use shim_fn;
