//! A c10d process group over a joined [`World`]'s store: Gloo (libtorch_cpu's `ProcessGroupGloo`,
//! reached through the shim `csrc/gloo/process_group.cpp`, a shared object of its own because it is
//! compiled against Gloo's headers, which the torch wheel lacks) or NCCL (libtorch_cuda's
//! `ProcessGroupNCCL`, through `csrc/cuda/nccl.cpp` in the CUDA shim). Whoever loads the core opens
//! the shims with RTLD_GLOBAL; their functions are found here by name, and without them a
//! data-parallel job is refused with the reason. Collectives: in-place all-reduce (sum, max, min) and
//! broadcast of one dense tensor, and a sum autograd differentiates (synchronised batch norm).

use super::World;
use crate::error::{Error, Result};
use crate::shims::{found, shim_fn};
use libloading::os::unix::Library;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;
use tch::{Device, Tensor};

/// The file the package ships the Gloo shim in (built by scripts/gloo.mjs).
pub const GLOO_SHIM_FILE: &str = "emotion-pipeline-gloo.linux-x64-gnu.so";

/// Which c10d backend a group runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Host memory, any device (CUDA tensors go through the CPU).
    Gloo,
    /// CUDA memory in place, every rank on a GPU of its own.
    Nccl,
}

type ErrBuf = *mut c_char;
struct Api {
    new: unsafe extern "C" fn(
        *mut c_void,
        *const c_char,
        c_int,
        c_int,
        *const c_char,
        *const c_char,
        c_int,
        i64,
        ErrBuf,
        c_int,
    ) -> *mut c_void,
    free: unsafe extern "C" fn(*mut c_void),
    allreduce: unsafe extern "C" fn(*mut c_void, *mut c_void, c_int, ErrBuf, c_int) -> c_int,
    broadcast: unsafe extern "C" fn(*mut c_void, *mut c_void, c_int, ErrBuf, c_int) -> c_int,
    allreduce_grad: unsafe extern "C" fn(*mut c_void, *mut c_void, ErrBuf, c_int) -> *mut c_void,
}

fn gloo(this: &Library) -> std::result::Result<Api, String> {
    Ok(Api {
        new: shim_fn!(this, GLOO_SHIM_FILE, "emotion_gloo_new"),
        free: shim_fn!(this, GLOO_SHIM_FILE, "emotion_gloo_free"),
        allreduce: shim_fn!(this, GLOO_SHIM_FILE, "emotion_gloo_allreduce"),
        broadcast: shim_fn!(this, GLOO_SHIM_FILE, "emotion_gloo_broadcast"),
        allreduce_grad: shim_fn!(this, GLOO_SHIM_FILE, "emotion_gloo_allreduce_grad"),
    })
}

fn nccl(this: &Library) -> std::result::Result<Api, String> {
    let file = crate::cuda_graph::SHIM_FILE;
    Ok(Api {
        new: shim_fn!(this, file, "emotion_nccl_new"),
        free: shim_fn!(this, file, "emotion_nccl_free"),
        allreduce: shim_fn!(this, file, "emotion_nccl_allreduce"),
        broadcast: shim_fn!(this, file, "emotion_nccl_broadcast"),
        allreduce_grad: shim_fn!(this, file, "emotion_nccl_allreduce_grad"),
    })
}

fn api(backend: Backend) -> std::result::Result<&'static Api, String> {
    static GLOO: OnceLock<Api> = OnceLock::new();
    static NCCL: OnceLock<Api> = OnceLock::new();
    match backend {
        Backend::Gloo => found(&GLOO, gloo),
        Backend::Nccl => found(&NCCL, nccl),
    }
}

/// Whether process groups of `backend` can be made in this process, and why not.
pub fn available(backend: Backend) -> std::result::Result<(), String> {
    api(backend).map(|_| ())
}

/// How an all-reduce combines the ranks' values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum = 0,
    Max = 1,
    Min = 2,
}

const ERROR_LEN: usize = 2048;

fn message(buffer: &[c_char]) -> String {
    // SAFETY: the shim writes a NUL-terminated message with snprintf into the zeroed buffer.
    let text = unsafe { CStr::from_ptr(buffer.as_ptr()) }.to_string_lossy();
    crate::error::without_backtrace(&text).to_string()
}

/// One process group: every rank of the world makes it, then calls the same collectives in the same
/// order. Collectives block until every rank has called them (or the group's timeout).
pub struct ProcessGroup {
    handle: *mut c_void,
    api: &'static Api,
    pub rank: usize,
    pub size: usize,
    pub backend: Backend,
    /// Where its collectives read and write: the CPU for Gloo, this rank's GPU for NCCL.
    pub device: Device,
}

// SAFETY: c10d's process group is used from one thread at a time here (the training thread, or
// autograd's backward on that thread's behalf); the handle is only freed on drop.
unsafe impl Send for ProcessGroup {}
// SAFETY: as above; `&ProcessGroup` is only read to call collectives in program order.
unsafe impl Sync for ProcessGroup {}

impl ProcessGroup {
    /// A group over `world`'s store (keys under `<attempt>/pg/<name>/`) on `backend`, this rank's
    /// collectives on `device` for NCCL (its own GPU). Gloo binds to the interface
    /// `GLOO_SOCKET_IFNAME` names when set (as PyTorch's), else to 127.0.0.1 for a job on this
    /// machine, else to the address this machine's hostname resolves to.
    pub fn new(world: &World, name: &str, backend: Backend, device: Device) -> Result<ProcessGroup> {
        let api = api(backend).map_err(|why| {
            Error::invalid("distributed", format!("data-parallel training over {backend:?} needs its shim: {why}"))
        })?;
        let device = match (backend, device) {
            (Backend::Nccl, Device::Cuda(i)) => Device::Cuda(i),
            (Backend::Nccl, other) => {
                return Err(Error::invalid("distributedBackend", format!("nccl needs a CUDA device, not {other:?}")))
            }
            (Backend::Gloo, _) => Device::Cpu,
        };
        let index = if let Device::Cuda(i) = device { i as c_int } else { -1 };
        let o = &world.options;
        let c = |what: &str, s: &str| {
            CString::new(s).map_err(|_| Error::invalid(what.to_string(), format!("contains a NUL byte: {s:?}")))
        };
        let prefix = c("distributed", &world.key(&format!("pg/{name}/")))?;
        let iface = c("GLOO_SOCKET_IFNAME", &std::env::var("GLOO_SOCKET_IFNAME").unwrap_or_default())?;
        let local =
            ["127.0.0.1", "localhost", "::1"].contains(&o.master_addr.as_str()) && o.world_size == o.local_world_size;
        let host = c("MASTER_ADDR", if local { "127.0.0.1" } else { "" })?;
        let mut error = [0 as c_char; ERROR_LEN];
        // SAFETY: the store pointer is live (the world owns it; c10d takes its own reference), the
        // strings and the error buffer outlive the call; a null handle means failure.
        let handle = unsafe {
            (api.new)(
                world.store.raw(),
                prefix.as_ptr(),
                o.rank as c_int,
                o.world_size as c_int,
                iface.as_ptr(),
                host.as_ptr(),
                index,
                (o.timeout_seconds * 1000.0) as i64,
                error.as_mut_ptr(),
                ERROR_LEN as c_int,
            )
        };
        if handle.is_null() {
            return Err(Error::Distributed(format!("{backend:?} process group `{name}`: {}", message(&error))));
        }
        Ok(ProcessGroup { handle, api, rank: o.rank, size: o.world_size, backend, device })
    }

    fn check(&self, what: &str, call: impl FnOnce(ErrBuf) -> c_int) -> Result<()> {
        let mut error = [0 as c_char; ERROR_LEN];
        if call(error.as_mut_ptr()) == 0 {
            return Ok(());
        }
        Err(Error::Distributed(format!("{what} failed on rank {}: {}", self.rank, message(&error))))
    }

    /// Combines `tensor` (dense, contiguous, on [`ProcessGroup::device`]) over the ranks, in place.
    pub fn all_reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<()> {
        self.check("all-reduce", |e| {
            // SAFETY: a live `at::Tensor*` and a live group; the shim reports failures through `e`.
            unsafe {
                (self.api.allreduce)(self.handle, tensor.as_ptr() as *mut c_void, op as c_int, e, ERROR_LEN as c_int)
            }
        })
    }

    /// Overwrites `tensor` on every rank with rank `root`'s.
    pub fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<()> {
        self.check("broadcast", |e| {
            // SAFETY: as for `all_reduce`.
            unsafe {
                (self.api.broadcast)(self.handle, tensor.as_ptr() as *mut c_void, root as c_int, e, ERROR_LEN as c_int)
            }
        })
    }

    /// The sum over ranks of `tensor`, differentiable: its gradient is the sum over ranks of the
    /// output's gradient (the backward pass calls a collective too, so every rank must backpropagate).
    pub fn all_reduce_sum_differentiable(&self, tensor: &Tensor) -> Result<Tensor> {
        let mut error = [0 as c_char; ERROR_LEN];
        // SAFETY: a live tensor and group; a non-null result is a new `at::Tensor*` we own.
        let out = unsafe {
            (self.api.allreduce_grad)(
                self.handle,
                tensor.as_ptr() as *mut c_void,
                error.as_mut_ptr(),
                ERROR_LEN as c_int,
            )
        };
        if out.is_null() {
            return Err(Error::Distributed(format!("all-reduce failed on rank {}: {}", self.rank, message(&error))));
        }
        // SAFETY: `out` came from `new at::Tensor` in the shim; tch frees it on drop.
        Ok(unsafe { Tensor::from_ptr(out.cast()) })
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: the handle came from the shim's constructor and is freed once.
        unsafe { (self.api.free)(self.handle) };
    }
}

/// DDP's bucketing of `tensors` (c10d's `compute_bucket_assignment_by_size`, first bucket 1 MiB, then
/// 25 MiB): the indices in each bucket, buckets in order.
pub fn buckets(tensors: &[Tensor]) -> Result<Vec<Vec<usize>>> {
    let ptrs: Vec<*mut c_void> = tensors.iter().map(|t| t.as_ptr() as *mut c_void).collect();
    let mut bucket_of = vec![-1 as c_int; tensors.len()];
    let mut error = [0 as c_char; ERROR_LEN];
    // SAFETY: live tensors; the shim writes one bucket index per tensor.
    let status = unsafe {
        crate::shims::emotion_bucket_assignment(
            ptrs.as_ptr(),
            ptrs.len() as c_int,
            1 << 20,
            25 << 20,
            bucket_of.as_mut_ptr(),
            error.as_mut_ptr(),
            ERROR_LEN as c_int,
        )
    };
    if status != 0 {
        return Err(Error::torch(format!("gradient buckets: {}", message(&error))));
    }
    let count = bucket_of.iter().map(|&b| b + 1).max().unwrap_or(0).max(0) as usize;
    let mut out = vec![Vec::new(); count];
    for (i, &b) in bucket_of.iter().enumerate() {
        if b < 0 {
            return Err(Error::torch(format!("gradient buckets: tensor {i} was not assigned")));
        }
        out[b as usize].push(i);
    }
    Ok(out)
}
