//! The networks and their architecture options (the reference three, the encoder head, the probe). Each has stable parameter paths so checkpoints load across versions.

pub mod audio_cnn;
pub mod encoder_head;
pub mod fusion;
pub mod linear_probe;
pub mod text_lstm;

pub use audio_cnn::{AudioCnn, AudioCnnConfig};
pub use encoder_head::{mix_layers, EncoderHead, EncoderHeadConfig};
pub use fusion::{Fusion, FusionConfig};
pub use linear_probe::{LinearProbe, ProbeConfig};
pub use text_lstm::{TextLstm, TextLstmConfig};
