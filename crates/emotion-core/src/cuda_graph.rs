//! CUDA graph capture and replay of the training step, through the shim in `csrc/cuda/graph.cpp`.
//! That shim is a separate shared object (it needs `libtorch_cuda` symbols, which this crate does not
//! link); whoever loads the core opens it with RTLD_GLOBAL after `libtorch_cuda`, and the functions
//! are found here by name in the process's global scope. When they are absent, [`available`] says why
//! and training runs eagerly.

use crate::error::{Error, Result};
use libloading::os::unix::Library;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

type ErrBuf = *mut c_char;
struct Api {
    stream_enter: unsafe extern "C" fn(c_int, ErrBuf, c_int) -> *mut c_void,
    stream_exit: unsafe extern "C" fn(*mut c_void, ErrBuf, c_int) -> c_int,
    graph_new: unsafe extern "C" fn(ErrBuf, c_int) -> *mut c_void,
    graph_begin: unsafe extern "C" fn(*mut c_void, ErrBuf, c_int) -> c_int,
    graph_end: unsafe extern "C" fn(*mut c_void, ErrBuf, c_int) -> c_int,
    graph_abort: unsafe extern "C" fn(*mut c_void),
    graph_replay: unsafe extern "C" fn(*mut c_void, ErrBuf, c_int) -> c_int,
    graph_free: unsafe extern "C" fn(*mut c_void),
}

/// The file the package ships the shim in (built by scripts/cuda-graph.mjs).
pub const SHIM_FILE: &str = "emotion-pipeline-cuda-graph.linux-x64-gnu.so";

fn lookup() -> std::result::Result<Api, String> {
    // dlopen(NULL): the program and every library opened with RTLD_GLOBAL.
    let this = Library::this();
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the signature matches the `extern "C"` definition in csrc/cuda/graph.cpp.
            *unsafe { this.get(concat!($name, "\0").as_bytes()) }
                .map_err(|_| format!("{} is not loaded (symbol {} not found)", SHIM_FILE, $name))?
        };
    }
    Ok(Api {
        stream_enter: sym!("emotion_cuda_stream_enter"),
        stream_exit: sym!("emotion_cuda_stream_exit"),
        graph_new: sym!("emotion_cuda_graph_new"),
        graph_begin: sym!("emotion_cuda_graph_begin"),
        graph_end: sym!("emotion_cuda_graph_end"),
        graph_abort: sym!("emotion_cuda_graph_abort"),
        graph_replay: sym!("emotion_cuda_graph_replay"),
        graph_free: sym!("emotion_cuda_graph_free"),
    })
}

fn api() -> std::result::Result<&'static Api, String> {
    static API: OnceLock<Api> = OnceLock::new();
    if let Some(api) = API.get() {
        return Ok(api);
    }
    // Only a success is kept: the shim may be loaded after a first look.
    let found = lookup()?;
    Ok(API.get_or_init(|| found))
}

/// Whether graph capture can be used in this process, and why not.
pub fn available() -> std::result::Result<(), String> {
    api().map(|_| ())
}

/// Calls a shim function that reports failure through an error buffer.
fn checked(what: &str, call: impl FnOnce(ErrBuf, c_int) -> bool) -> Result<()> {
    let mut buf = [0 as c_char; 1024];
    if call(buf.as_mut_ptr(), buf.len() as c_int) {
        return Ok(());
    }
    // SAFETY: the shim writes a NUL-terminated message with snprintf into the buffer.
    let message = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
    Err(Error::Torch(format!("CUDA graph {what}: {message}")))
}

fn shim() -> Result<&'static Api> {
    api().map_err(|why| Error::CudaUnavailable(format!("CUDA graphs are unavailable: {why}")))
}

/// The calling thread's work on a CUDA device runs on a stream of libtorch's pool until [`exit`]
/// (capture cannot use the default stream); it first waits for work already queued on the old one.
///
/// [`exit`]: SideStream::exit
pub struct SideStream {
    handle: *mut c_void,
}

impl SideStream {
    pub fn enter(device: usize) -> Result<SideStream> {
        let api = shim()?;
        let mut handle = std::ptr::null_mut();
        // SAFETY: plain C call; a null handle comes with a message.
        checked("stream", |buf, len| {
            handle = unsafe { (api.stream_enter)(device as c_int, buf, len) };
            !handle.is_null()
        })?;
        Ok(SideStream { handle })
    }

    /// Waits for the stream's work and restores the previous stream.
    pub fn exit(mut self) -> Result<()> {
        self.close()
    }

    fn close(&mut self) -> Result<()> {
        if self.handle.is_null() {
            return Ok(());
        }
        let handle = std::mem::replace(&mut self.handle, std::ptr::null_mut());
        let api = shim()?;
        // SAFETY: the handle came from stream_enter and is released exactly once.
        checked("stream", |buf, len| unsafe { (api.stream_exit)(handle, buf, len) } == 0)
    }
}

impl Drop for SideStream {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// One captured sequence of CUDA work, replayed with the same memory addresses: inputs go into the
/// tensors the capture read (`copy_`), results are read from the tensors it wrote.
pub struct Graph {
    handle: *mut c_void,
    api: &'static Api,
}

impl Graph {
    pub fn new() -> Result<Graph> {
        let api = shim()?;
        let mut handle = std::ptr::null_mut();
        // SAFETY: plain C call; a null handle comes with a message.
        checked("create", |buf, len| {
            handle = unsafe { (api.graph_new)(buf, len) };
            !handle.is_null()
        })?;
        Ok(Graph { handle, api })
    }

    /// Records what `body` queues on the current stream; nothing runs until [`replay`](Graph::replay).
    /// A failed capture (an operation that syncs with the host, a shape the graph cannot hold) is
    /// closed so eager execution can go on, and returned as an error.
    pub fn capture<T>(&mut self, body: impl FnOnce() -> Result<T>) -> Result<T> {
        let api = self.api;
        let handle = self.handle;
        // SAFETY: the handle is live for self's lifetime.
        checked("capture", |buf, len| unsafe { (api.graph_begin)(handle, buf, len) } == 0)?;
        let out = crate::error::catch_panic(body);
        let ended = checked("capture", |buf, len| unsafe { (api.graph_end)(handle, buf, len) } == 0);
        match (out, ended) {
            (Ok(out), Ok(())) => Ok(out),
            (Err(e), _) | (Ok(_), Err(e)) => {
                unsafe { (api.graph_abort)(handle) };
                Err(e)
            }
        }
    }

    pub fn replay(&self) -> Result<()> {
        let (api, handle) = (self.api, self.handle);
        // SAFETY: the handle is live for self's lifetime.
        checked("replay", |buf, len| unsafe { (api.graph_replay)(handle, buf, len) } == 0)
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: released exactly once.
        unsafe { (self.api.graph_free)(self.handle) }
    }
}
