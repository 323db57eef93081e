//! The reference text model: token embedding (64) → 2-layer BiLSTM (hidden 128) → final forward and
//! backward states (256) → FC 256→128→classes with dropout.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT, RNN};
use tch::Tensor;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
/// The transcript model: token embedding, bidirectional LSTM, dense head.
pub struct TextLstmConfig {
    /// Token embedding width.
    pub embedding: i64,
    /// LSTM hidden width per direction.
    pub hidden: i64,
    /// Stacked LSTM layers.
    pub layers: i64,
    /// Width of the head's hidden layer: the embedding the fusion model uses.
    pub head: i64,
    /// Dropout before the head.
    pub dropout: f64,
}

impl Default for TextLstmConfig {
    fn default() -> Self {
        TextLstmConfig { embedding: 64, hidden: 128, layers: 2, head: 128, dropout: 0.5 }
    }
}

#[derive(Debug)]
pub struct TextLstm {
    embedding: nn::Embedding,
    lstm: nn::LSTM,
    head: nn::Linear,
    out: nn::Linear,
    config: TextLstmConfig,
}

impl TextLstm {
    /// Parameter paths: `embedding`, `lstm`, `head`, `out`.
    pub fn new(p: &nn::Path, config: &TextLstmConfig, vocab: i64, classes: i64) -> TextLstm {
        let embedding = nn::embedding(p / "embedding", vocab, config.embedding, Default::default());
        let rnn =
            nn::RNNConfig { num_layers: config.layers, bidirectional: true, batch_first: true, ..Default::default() };
        let lstm = nn::lstm(p / "lstm", config.embedding, config.hidden, rnn);
        let head = nn::linear(p / "head", 2 * config.hidden, config.head, Default::default());
        let out = nn::linear(p / "out", config.head, classes, Default::default());
        TextLstm { embedding, lstm, head, out, config: config.clone() }
    }

    pub fn embedding_width(&self) -> i64 {
        self.config.head
    }

    /// Token ids `[B, L]` (int64) → `[B, head]`.
    pub fn embed(&self, tokens: &Tensor, train: bool) -> Tensor {
        // [B, L] → [B, L, E]
        let x = tokens.apply(&self.embedding);
        // h: [layers·2, B, H]; the last layer's forward and backward final states.
        let (_, state) = self.lstm.seq(&x);
        let h = &state.0 .0;
        let layers = self.config.layers;
        let last = Tensor::cat(&[h.get(2 * layers - 2), h.get(2 * layers - 1)], 1); // [B, 2H]
        last.apply(&self.head).relu().dropout(self.config.dropout, train)
    }
}

impl ModuleT for TextLstm {
    fn forward_t(&self, tokens: &Tensor, train: bool) -> Tensor {
        self.embed(tokens, train).apply(&self.out)
    }
}
