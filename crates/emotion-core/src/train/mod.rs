//! Training the audio CNN, text BiLSTM and fusion models, and using trained ones.

pub mod augment;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod engine;
pub mod mixed;
pub mod model;
pub mod predict;
pub mod preset;

pub use config::{Amp, ModelKind, TrainConfig};
pub use data::HostSet;
pub use engine::{train, Sets, TrainEvent, TrainResult};
