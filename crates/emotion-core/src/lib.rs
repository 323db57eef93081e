//! emotion-core: speech emotion recognition on libtorch. Pure Rust + tch; knows nothing of Node.

pub mod atomic;
pub mod audio;
pub mod control;
pub mod cpu_cache;
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
