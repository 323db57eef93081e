//! The caching CPU allocator (csrc/cpu_cache.cpp): freed CPU tensors of 1 MiB and more are kept for
//! reuse instead of going back to the kernel, which would zero their pages again on the next step.
//! Jobs hold a [`JobCache`] while they run; the cache is emptied 2 s after the last one ends, so
//! calls in a loop keep reusing it and an idle process keeps no extra memory.
//!
//! `EMOTION_PIPELINE_CPU_CACHE`: `off` (or `0`) keeps libtorch's default behaviour, a number is the
//! cap of the free cache in MiB; the default cap is a quarter of the machine's memory, at most 8 GiB.

use crate::shims::{emotion_cpu_cache_install, emotion_cpu_cache_release, emotion_cpu_cache_stats};
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Counters of the caching allocator since the last [`stats`] call with `reset`.
#[derive(Debug, Clone, Copy, Default, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CpuCacheStats {
    /// Allocations of ≥ 1 MiB served from the cache.
    pub hits: u64,
    /// Allocations of ≥ 1 MiB that went to the system.
    pub misses: u64,
    /// Bytes in cached-size blocks in use now.
    pub live_bytes: u64,
    /// Bytes kept free for reuse now.
    pub cached_bytes: u64,
    /// Most bytes held (in use + kept) at once.
    pub peak_bytes: u64,
}

/// `EMOTION_PIPELINE_CPU_CACHE` is unset, `off`, `0` or a whole number of MiB; anything else is refused
/// by name (the binding checks it when the addon loads, before any job would quietly ignore it).
pub fn check_env() -> crate::Result<()> {
    match std::env::var("EMOTION_PIPELINE_CPU_CACHE") {
        Ok(v) if v != "off" && v.trim().parse::<u64>().is_err() => Err(crate::Error::invalid(
            "EMOTION_PIPELINE_CPU_CACHE",
            format!("must be 'off', 0 or a cap in MiB (e.g. 2048), got '{v}'"),
        )),
        _ => Ok(()),
    }
}

/// The free-cache cap in bytes from `EMOTION_PIPELINE_CPU_CACHE`; 0 means off.
fn limit_from_env() -> u64 {
    let default = || {
        let total = meminfo_bytes("MemTotal").unwrap_or(8 << 30);
        (total / 4).min(8 << 30)
    };
    match std::env::var("EMOTION_PIPELINE_CPU_CACHE") {
        Ok(v) if v == "off" || v == "0" => 0,
        Ok(v) => v.trim().parse::<u64>().map(|mib| mib << 20).unwrap_or_else(|_| default()),
        Err(_) => default(),
    }
}

/// A field of `/proc/meminfo` (`MemTotal`, `MemAvailable`, …) in bytes, when the kernel says.
pub(crate) fn meminfo_bytes(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Whether the caching allocator is on (installed once per process, on the first job).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let limit = limit_from_env();
        // SAFETY: installs a process-wide allocator in libtorch; no pointers cross.
        limit > 0 && unsafe { emotion_cpu_cache_install(limit) } == 0
    })
}

static RUNNING_JOBS: AtomicUsize = AtomicUsize::new(0);
/// Counts job starts, so a delayed release can tell whether a job ran in the meantime.
static JOB_STARTS: AtomicUsize = AtomicUsize::new(0);
/// How long the cache outlives the last job: calls in a loop (`extractMel` batch by batch) keep
/// reusing it, an idle process gives it back.
const IDLE_RELEASE: Duration = Duration::from_secs(2);

/// Held by a job while it runs; the cache is emptied when no job has run for [`IDLE_RELEASE`].
pub struct JobCache(());

impl JobCache {
    pub fn enter() -> JobCache {
        let _ = enabled();
        JOB_STARTS.fetch_add(1, Ordering::SeqCst);
        RUNNING_JOBS.fetch_add(1, Ordering::SeqCst);
        JobCache(())
    }
}

impl Drop for JobCache {
    fn drop(&mut self) {
        if RUNNING_JOBS.fetch_sub(1, Ordering::SeqCst) != 1 || !enabled() {
            return;
        }
        let starts = JOB_STARTS.load(Ordering::SeqCst);
        let idle = move || RUNNING_JOBS.load(Ordering::SeqCst) == 0 && JOB_STARTS.load(Ordering::SeqCst) == starts;
        let spawned = std::thread::Builder::new().name("cpu-cache-release".into()).spawn(move || {
            std::thread::sleep(IDLE_RELEASE);
            if idle() {
                release();
            }
        });
        if spawned.is_err() {
            release();
        }
    }
}

/// [`release`], unless a job (training, extraction) is running: its blocks stay cached for it.
pub fn release_when_idle() {
    if enabled() && RUNNING_JOBS.load(Ordering::SeqCst) == 0 {
        release();
    }
}

/// Returns every cached block to the system.
pub fn release() {
    // SAFETY: frees blocks no tensor holds; thread-safe in the shim.
    unsafe { emotion_cpu_cache_release() }
}

/// The allocator's counters; `reset` starts the hit/miss counts and the peak afresh.
pub fn stats(reset: bool) -> CpuCacheStats {
    let mut out = [0u64; 5];
    // SAFETY: the shim writes five counters into `out`.
    unsafe { emotion_cpu_cache_stats(out.as_mut_ptr(), reset as i32) };
    CpuCacheStats { hits: out[0], misses: out[1], live_bytes: out[2], cached_bytes: out[3], peak_bytes: out[4] }
}
