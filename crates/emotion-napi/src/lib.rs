//! Node binding of emotion-core. Thin: options in, one core call, results out.

mod audio;
mod dataset;
mod errors;
mod export;
mod infer;
mod job;
mod system;
mod train;
mod world;

pub use audio::*;
pub use dataset::*;
pub use export::*;
pub use infer::*;
pub use system::*;
pub use train::*;
pub use world::*;
