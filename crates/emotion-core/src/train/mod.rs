//! Training models of every kind (`kinds`), and using trained ones.

pub mod augment;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod engine;
pub mod kinds;
pub mod mixed;
pub mod predict;
pub mod predict_audio;
pub mod preset;
pub mod settings;
pub mod spec;

pub use config::{Amp, ModelKind, TrainConfig};
pub use data::HostSet;
pub use engine::{train, train_in, Sets, TrainEvent, TrainResult};
pub use settings::{Job, RunSettings, TrainingSettings};
pub use spec::ModelSpec;
