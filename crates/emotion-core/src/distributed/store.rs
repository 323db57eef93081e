//! c10d's `TCPStore` (the rendezvous of PyTorch's process groups and of torchrun), through the shim in
//! `csrc/store.cpp`: one server (rank 0, or torchrun's agent) and a client per rank; string keys,
//! byte values, atomic counters, blocking waits with a timeout.

use crate::error::{Error, Result};
use crate::shims;
use std::ffi::{c_void, CString};
use std::os::raw::{c_char, c_int};
use std::time::Duration;

/// A connection to the store. c10d's store serialises its own calls, so one may be shared between
/// threads.
pub struct Store {
    handle: *mut c_void,
    address: String,
}

// SAFETY: TCPStore guards its socket with its own mutex; the handle is only freed on drop.
unsafe impl Send for Store {}
// SAFETY: as above: every call goes through TCPStore's locked client.
unsafe impl Sync for Store {}

const ERROR_LEN: usize = 1024;

fn c_string(what: &str, text: &str) -> Result<CString> {
    CString::new(text).map_err(|_| Error::invalid(what, format!("contains a NUL byte: {text:?}")))
}

fn message(buffer: &[u8]) -> String {
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).lines().next().unwrap_or("").to_string()
}

impl Store {
    /// Connects to (or, with `server`, opens) the store at `host:port`. A server counts `world_size`
    /// connections and, with `wait_workers`, returns only when all have joined; every blocking call
    /// gives up after `timeout`.
    pub fn connect(host: &str, port: u16, server: bool, world_size: usize, timeout: Duration) -> Result<Store> {
        let c_host = c_string("MASTER_ADDR", host)?;
        let mut error = vec![0u8; ERROR_LEN];
        // SAFETY: the host string and error buffer outlive the call; a null handle means failure.
        let handle = unsafe {
            shims::emotion_store_new(
                c_host.as_ptr(),
                port as c_int,
                server as c_int,
                world_size as c_int,
                0,
                timeout.as_millis() as i64,
                error.as_mut_ptr() as *mut c_char,
                ERROR_LEN as c_int,
            )
        };
        let address = format!("{host}:{port}");
        if handle.is_null() {
            let why = message(&error);
            let hint = if why.contains("EADDRINUSE") || why.contains("address already in use") {
                format!("port {port} is in use: give another MASTER_PORT")
            } else if server {
                "could not open it".into()
            } else {
                "could not reach it (is rank 0 running, and MASTER_ADDR/MASTER_PORT right?)".into()
            };
            return Err(Error::Distributed(format!("rendezvous store at {address}: {hint} ({why})")));
        }
        Ok(Store { handle, address })
    }

    fn call(&self, what: &str, key: &str, f: impl FnOnce(*const c_char, *mut c_char) -> c_int) -> Result<()> {
        let c_key = c_string("key", key)?;
        let mut error = vec![0u8; ERROR_LEN];
        if f(c_key.as_ptr(), error.as_mut_ptr() as *mut c_char) != 0 {
            return Err(Error::Distributed(format!("store {} {what} `{key}`: {}", self.address, message(&error))));
        }
        Ok(())
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        self.call("set", key, |k, e| {
            // SAFETY: `value` is valid for its length; key and error live for the call.
            unsafe {
                shims::emotion_store_set(self.handle, k, value.as_ptr(), value.len() as i64, e, ERROR_LEN as c_int)
            }
        })
    }

    /// The value of `key`, waiting for it up to the store's timeout.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        let (mut out, mut len) = (std::ptr::null_mut::<u8>(), 0i64);
        self.call("get", key, |k, e| {
            // SAFETY: out and len are written by the shim on success only.
            unsafe { shims::emotion_store_get(self.handle, k, &mut out, &mut len, e, ERROR_LEN as c_int) }
        })?;
        // SAFETY: the shim malloc'd `len` bytes (at least 1) at `out`; copied, then freed by the shim.
        let bytes = unsafe { std::slice::from_raw_parts(out, len as usize).to_vec() };
        // SAFETY: `out` came from the shim's malloc.
        unsafe { shims::emotion_store_free_bytes(out) };
        Ok(bytes)
    }

    /// Adds `delta` to the counter `key` (created at 0); returns the new value.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64> {
        let mut out = 0i64;
        self.call("add", key, |k, e| {
            // SAFETY: out lives for the call.
            unsafe { shims::emotion_store_add(self.handle, k, delta, &mut out, e, ERROR_LEN as c_int) }
        })?;
        Ok(out)
    }

    pub fn check(&self, key: &str) -> Result<bool> {
        let mut out: c_int = 0;
        self.call("check", key, |k, e| {
            // SAFETY: out lives for the call.
            unsafe { shims::emotion_store_check(self.handle, k, &mut out, e, ERROR_LEN as c_int) }
        })?;
        Ok(out != 0)
    }

    /// The store as c10d's `c10d::Store*`, for a process group made over it (which takes its own
    /// reference, so the group may outlive this connection).
    pub(crate) fn raw(&self) -> *mut c_void {
        // SAFETY: the handle is live until drop.
        unsafe { shims::emotion_store_raw(self.handle) }
    }

    /// Waits until `key` exists, up to `timeout`.
    pub fn wait(&self, key: &str, timeout: Duration) -> Result<()> {
        self.call("wait for", key, |k, e| {
            // SAFETY: key and error live for the call.
            unsafe { shims::emotion_store_wait(self.handle, k, timeout.as_millis() as i64, e, ERROR_LEN as c_int) }
        })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: the handle came from emotion_store_new and is freed once.
        unsafe { shims::emotion_store_free(self.handle) };
    }
}
