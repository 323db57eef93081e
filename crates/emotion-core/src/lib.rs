//! emotion-core: speech emotion recognition on libtorch. Pure Rust + tch; knows nothing of Node.

pub mod atomic;
pub mod audio;
pub mod control;
pub mod cpu_cache;
pub mod cuda_graph;
pub mod dataset;
pub mod device;
pub mod encoder;
pub mod error;
pub mod metrics;
pub mod models;
pub mod optim;
pub mod schema;
pub mod train;

pub use error::{Error, Result};

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
