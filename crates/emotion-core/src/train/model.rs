//! One of the three reference models behind one interface, built in a VarStore on a device.

use super::config::{ModelKind, TrainConfig};
use super::data::Batch;
use crate::models::{AudioCnn, EncoderHead, Fusion, TextLstm};
use tch::nn::{self, ModuleT};
use tch::Tensor;

// One value per training job: boxing the larger variants would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Model {
    Audio(AudioCnn),
    Text(TextLstm),
    Fusion(Fusion),
    Encoder(EncoderHead),
}

impl Model {
    pub fn build(root: &nn::Path, config: &TrainConfig) -> Model {
        let classes = config.labels.len() as i64;
        match config.model {
            ModelKind::Audio => Model::Audio(AudioCnn::new(root, &config.audio, classes)),
            ModelKind::Text => Model::Text(TextLstm::new(root, &config.text, config.vocab_size, classes)),
            ModelKind::Fusion => Model::Fusion(Fusion::new(
                root,
                &config.audio,
                &config.text,
                &config.fusion,
                config.vocab_size,
                classes,
            )),
            ModelKind::Encoder => Model::Encoder(EncoderHead::new(root, &config.encoder_head, classes)),
        }
    }

    /// Runs the CNN (audio, and fusion's audio branch) channels-last: `params`, the model's trainable
    /// variables, are re-laid out in place (the conv weights). Call before the optimiser is built.
    pub fn use_channels_last(&self, params: &mut [Tensor]) -> crate::Result<()> {
        super::mixed::params_to_channels_last(params)
    }

    /// Logits, and in training the encoder head's speaker-adversary logits when it has one.
    pub fn logits_with_adversary(&self, batch: &Batch, train: bool) -> (Tensor, Option<Tensor>) {
        match self {
            Model::Encoder(m) => {
                m.forward_with_adversary(batch.embedding.as_ref().expect("encoder model needs embeddings"), train)
            }
            _ => (self.logits(batch, train), None),
        }
    }

    /// Logits `[B, classes]` from the batch's mel `[B, M, T]`, tokens `[B, L]` or embeddings
    /// `[B, layers, width]` (`HostSet::validate` checked that the model's inputs are there).
    pub fn logits(&self, batch: &Batch, train: bool) -> Tensor {
        let (mel, tokens) = (batch.mel.as_ref(), batch.tokens.as_ref());
        match self {
            Model::Audio(m) => m.forward_t(mel.expect("audio model needs mel"), train),
            Model::Text(m) => m.forward_t(tokens.expect("text model needs tokens"), train),
            Model::Fusion(m) => {
                m.forward_pair(mel.expect("fusion needs mel"), tokens.expect("fusion needs tokens"), train)
            }
            Model::Encoder(m) => m.forward_t(batch.embedding.as_ref().expect("encoder model needs embeddings"), train),
        }
    }
}
