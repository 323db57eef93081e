//! The reference fusion model: audio CNN embedding (256) ⊕ text BiLSTM embedding (128) →
//! FC 384→256→128→classes with batch norm, ReLU and dropout. Both branches train with it.

use super::audio_cnn::{AudioCnn, AudioCnnConfig};
use super::text_lstm::{TextLstm, TextLstmConfig};
use crate::distributed::sync_bn::batch_norm;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::nn;
use tch::Tensor;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
/// Audio and text embeddings concatenated (256 + 128 = 384 by default), then dense layers.
pub struct FusionConfig {
    /// Hidden widths after the concatenation.
    pub hidden: Vec<i64>,
    /// Dropout before each dense layer.
    pub dropout: f64,
    /// Keep batch norm in inference mode while training.
    pub freeze_batch_norm: bool,
}

impl Default for FusionConfig {
    fn default() -> Self {
        FusionConfig { hidden: vec![256, 128], dropout: 0.5, freeze_batch_norm: false }
    }
}

#[derive(Debug)]
pub struct Fusion {
    pub audio: AudioCnn,
    pub text: TextLstm,
    layers: Vec<(nn::Linear, nn::BatchNorm)>,
    out: nn::Linear,
    dropout: f64,
    freeze_batch_norm: bool,
}

impl Fusion {
    /// Parameter paths: `audio.*`, `text.*` (as the branch models), `head.{i}.fc`, `head.{i}.bn`, `out`.
    pub fn new(
        p: &nn::Path,
        audio: &AudioCnnConfig,
        text: &TextLstmConfig,
        config: &FusionConfig,
        vocab: i64,
        classes: i64,
    ) -> Fusion {
        let audio = AudioCnn::new(&(p / "audio"), audio, classes);
        let text = TextLstm::new(&(p / "text"), text, vocab, classes);
        let mut width = audio.embedding_width() + text.embedding_width();
        let mut layers = Vec::new();
        for (i, &h) in config.hidden.iter().enumerate() {
            let lp = p / "head" / i;
            layers.push((
                nn::linear(&lp / "fc", width, h, Default::default()),
                nn::batch_norm1d(&lp / "bn", h, Default::default()),
            ));
            width = h;
        }
        let out = nn::linear(p / "out", width, classes, Default::default());
        Fusion { audio, text, layers, out, dropout: config.dropout, freeze_batch_norm: config.freeze_batch_norm }
    }

    /// Mel `[B, M, T]` and tokens `[B, L]` → logits `[B, classes]`.
    pub fn forward_pair(&self, mel: &Tensor, tokens: &Tensor, train: bool) -> Tensor {
        // [B, 256] ⊕ [B, 128] → [B, 384]
        let mut x = Tensor::cat(&[self.audio.embed(mel, train), self.text.embed(tokens, train)], 1);
        for (fc, bn) in &self.layers {
            x = batch_norm(bn, &x.apply(fc), train && !self.freeze_batch_norm).relu().dropout(self.dropout, train);
        }
        x.apply(&self.out)
    }
}
