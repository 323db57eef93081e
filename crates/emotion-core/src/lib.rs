//! emotion-core: speech emotion recognition on libtorch. Pure Rust + tch; knows nothing of Node.

pub mod atomic;
pub mod audio;
pub mod control;
pub mod cpu_cache;
pub mod cuda_graph;
pub mod dataset;
pub mod device;
pub mod digest;
pub mod distributed;
pub mod encoder;
pub mod error;
pub mod export;
pub mod infer;
pub mod metrics;
pub mod models;
pub mod onnx;
pub mod optim;
mod pool;
pub mod schema;
mod shims;
pub mod train;

pub use error::{Error, Result};

/// libtorch's intra-op thread count is process-global, and results depend on it (a reduction split
/// over 2 threads rounds differently than over 1). Jobs that compute (training, feature extraction)
/// take turns and set their own count, so a job's numbers never depend on what ran before it: an
/// encoder-model job sets 1 thread, and states extracted after it used to differ (and were cached).
pub(crate) fn job_turn() -> std::sync::MutexGuard<'static, ()> {
    JOB_TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

static JOB_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// [`job_turn`], given up with `Cancelled` when `cancel` is set while waiting: a prediction queued
/// behind a training job in the same process can be cancelled before its turn comes.
pub(crate) fn job_turn_unless_cancelled(cancel: &control::CancelFlag) -> Result<std::sync::MutexGuard<'static, ()>> {
    loop {
        match JOB_TURN.try_lock() {
            Ok(guard) => return Ok(guard),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => return Ok(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {
                cancel.check()?;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// The cores this process may use: `OMP_NUM_THREADS` when set (as PyTorch reads it; a launcher of
/// several processes on one machine sets it to each one's share), else every core.
pub fn cores() -> usize {
    std::env::var("OMP_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Sets libtorch's intra-op threads to every core this process may use ([`cores`]; what extraction
/// runs with); call in a `job_turn`.
pub(crate) fn use_all_cores() {
    tch::set_num_threads(cores() as i32);
}

/// libtorch's default random generator is process-global. Code that seeds it and then draws from it
/// (a training step's dropout and augmentation, a model's initial weights) holds this turn, so a draw
/// on another thread (building a model to load a checkpoint into) cannot fall in between and change
/// a training run.
pub(crate) fn generator_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Unit tests that draw from libtorch's process-global generator take turns: a test that seeds it and
/// checks a draw is repeatable fails when another test thread draws in between.
#[cfg(test)]
pub(crate) fn rng_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
