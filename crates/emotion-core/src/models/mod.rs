//! The reference architectures. Each has stable parameter paths so checkpoints load across versions.

pub mod audio_cnn;
pub mod encoder_head;
pub mod fusion;
pub mod text_lstm;

pub use audio_cnn::{AudioCnn, AudioCnnConfig};
pub use encoder_head::{EncoderHead, EncoderHeadConfig};
pub use fusion::{Fusion, FusionConfig};
pub use text_lstm::{TextLstm, TextLstmConfig};
