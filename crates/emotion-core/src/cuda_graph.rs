//! CUDA graph capture and replay of the training step, through the shim in `csrc/cuda/graph.cpp`.
//! That shim is a separate shared object (it needs `libtorch_cuda` symbols, which this crate does not
//! link); whoever loads the core opens it with RTLD_GLOBAL after `libtorch_cuda`, and the functions
//! are found here by name in the process's global scope. When they are absent, [`available`] says why
//! and training runs eagerly.

use crate::error::{Error, Result};
use crate::shims::{found, shim_fn};
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

fn lookup(this: &Library) -> std::result::Result<Api, String> {
    Ok(Api {
        stream_enter: shim_fn!(this, SHIM_FILE, "emotion_cuda_stream_enter"),
        stream_exit: shim_fn!(this, SHIM_FILE, "emotion_cuda_stream_exit"),
        graph_new: shim_fn!(this, SHIM_FILE, "emotion_cuda_graph_new"),
        graph_begin: shim_fn!(this, SHIM_FILE, "emotion_cuda_graph_begin"),
        graph_end: shim_fn!(this, SHIM_FILE, "emotion_cuda_graph_end"),
        graph_abort: shim_fn!(this, SHIM_FILE, "emotion_cuda_graph_abort"),
        graph_replay: shim_fn!(this, SHIM_FILE, "emotion_cuda_graph_replay"),
        graph_free: shim_fn!(this, SHIM_FILE, "emotion_cuda_graph_free"),
    })
}

fn api() -> std::result::Result<&'static Api, String> {
    static API: OnceLock<Api> = OnceLock::new();
    found(&API, lookup)
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
    let message = crate::error::without_backtrace(&message);
    Err(Error::torch(format!("CUDA graph {what}: {message}")))
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
        if let Err(e) = checked("capture", |buf, len| unsafe { (api.graph_begin)(handle, buf, len) } == 0) {
            // SAFETY: as above; closes whatever part of the capture had begun.
            unsafe { (api.graph_abort)(handle) };
            return Err(e);
        }
        let out = crate::error::catch_panic(body);
        let ended = checked("capture", |buf, len| unsafe { (api.graph_end)(handle, buf, len) } == 0);
        match (out, ended) {
            (Ok(out), Ok(())) => Ok(out),
            (Err(e), _) | (Ok(_), Err(e)) => {
                // SAFETY: as above.
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

/// What [`self_test`] saw: the shim's capture, replay and failed-capture paths on a real device.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GraphSelfTest {
    /// The mean of `2x + 1` read after replays of one captured graph with x = 1, 2, 3 (3, 5, 7).
    pub replayed: Vec<f64>,
    /// The error of a capture that reads a value on the host (it must fail); `None` if it did not.
    pub failed_capture: Option<String>,
    /// `sum(2x)` for x = ones(4), computed eagerly right after the failed capture (8).
    pub eager_after_failure: f64,
}

/// Captures `y = 2x + 1` once and replays it with new inputs, then lets a capture fail on purpose and
/// checks eager work goes on: the smallest check of the graph shim on a CUDA device (`test:gpu`).
pub fn self_test(device: tch::Device) -> Result<GraphSelfTest> {
    use tch::{Kind, Tensor};
    let tch::Device::Cuda(index) = device else {
        return Err(Error::invalid("device", "CUDA graphs need a CUDA device"));
    };
    let stream = SideStream::enter(index)?;
    let mut x = Tensor::f_zeros([4], (Kind::Float, device))?;
    let mut y = Tensor::f_zeros([4], (Kind::Float, device))?;
    let mut graph = Graph::new()?;
    graph.capture(|| Ok(y.f_copy_(&x.f_mul_scalar(2.0)?.f_add_scalar(1.0)?)?))?;
    let mut replayed = Vec::new();
    for value in [1.0, 2.0, 3.0] {
        let _ = x.f_fill_(value)?;
        graph.replay()?;
        replayed.push(y.f_mean(Kind::Float)?.f_double_value(&[])?);
    }
    let mut failing = Graph::new()?;
    let failed_capture =
        failing.capture(|| Ok(x.f_sum(Kind::Float)?.f_double_value(&[])?)).err().map(|e| e.to_string());
    let eager_after_failure = x.f_fill_(1.0)?.f_mul_scalar(2.0)?.f_sum(Kind::Float)?.f_double_value(&[])?;
    drop((failing, graph));
    stream.exit()?;
    Ok(GraphSelfTest { replayed, failed_capture, eager_after_failure })
}
