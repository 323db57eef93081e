//! The torch-free half of the addon pair. The main addon links `libtorch_cpu.so` and `libc10.so` by
//! SONAME without an rpath; the dynamic loader satisfies those entries from libraries that are already
//! loaded, so this addon opens libtorch's libraries by absolute path, in dependency order, with
//! `RTLD_GLOBAL` before the main addon is required. A library that fails to open is reported, never
//! fatal: the caller decides (no libtorch → `LIBTORCH_NOT_FOUND`; no `libtorch_cuda` → CPU only).

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
use napi_derive::napi;

#[napi(object)]
pub struct PreloadOutcome {
    pub path: String,
    pub loaded: bool,
    /// `dlerror()`'s message when the library did not load.
    pub error: Option<String>,
}

/// Opens each library with `RTLD_NOW | RTLD_GLOBAL` and keeps it loaded for the life of the process.
/// Stops at the first failure when `stop_on_error` is set; the outcomes list what was tried.
#[napi]
pub fn preload(paths: Vec<String>, stop_on_error: bool) -> Vec<PreloadOutcome> {
    let mut outcomes = Vec::with_capacity(paths.len());
    for path in paths {
        // SAFETY: opening a shared library runs its initialisers; these are libtorch's own libraries,
        // opened in the order its dependencies require, exactly as `import torch` does.
        match unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_GLOBAL) } {
            Ok(library) => {
                // Never unload: libtorch registers global state (operators, device hooks) at load time.
                std::mem::forget(library);
                outcomes.push(PreloadOutcome { path, loaded: true, error: None });
            }
            Err(e) => {
                outcomes.push(PreloadOutcome { path, loaded: false, error: Some(e.to_string()) });
                if stop_on_error {
                    break;
                }
            }
        }
    }
    outcomes
}

/// Version of the C library this process runs on, e.g. `2.36` (for `doctor`).
#[napi]
pub fn glibc_version() -> String {
    extern "C" {
        fn gnu_get_libc_version() -> *const std::os::raw::c_char;
    }
    // SAFETY: returns a pointer to a static NUL-terminated string owned by glibc.
    unsafe { std::ffi::CStr::from_ptr(gnu_get_libc_version()) }.to_string_lossy().into_owned()
}
