//! The reference transcript BiLSTM (`models::TextLstm`).

use super::{check_layers, linear_count, Architecture, Input, Kind, Net, Output};
use crate::error::Result;
use crate::models::{TextLstm, TextLstmConfig};
use crate::train::config::TrainConfig;
use crate::train::data::{Batch, HostSet};
use crate::train::spec::{ModelInputs, ModelSpec};
use tch::nn::{self, ModuleT};

pub(super) struct TextKind;

fn config(spec: &ModelSpec) -> &TextLstmConfig {
    match &spec.architecture {
        Architecture::Text(c) => c,
        other => unreachable!("a text spec holds {other:?}"),
    }
}

pub(super) fn check_lstm(c: &TextLstmConfig, prefix: &str) -> Result<()> {
    check_layers(
        &[
            (&format!("{prefix}.embedding"), &[c.embedding]),
            (&format!("{prefix}.hidden"), &[c.hidden]),
            (&format!("{prefix}.layers"), &[c.layers]),
            (&format!("{prefix}.head"), &[c.head]),
        ],
        &[(&format!("{prefix}.dropout"), c.dropout)],
    )
}

/// Values of the BiLSTM with its own output layer.
pub(super) fn lstm_count(c: &TextLstmConfig, vocab: i64, classes: i64) -> u128 {
    let (e, h) = (c.embedding.max(0) as u128, c.hidden.max(0) as u128);
    let mut total = vocab.max(0) as u128 * e;
    for layer in 0..c.layers.max(0) {
        let input = if layer == 0 { e } else { 2 * h };
        // Per direction: w_ih [4H, in], w_hh [4H, H], b_ih and b_hh [4H].
        total += 2 * (4 * h * input + 4 * h * h + 8 * h);
    }
    total + linear_count(2 * c.hidden, c.head) + linear_count(c.head, classes)
}

struct TextNet(TextLstm);

impl Net for TextNet {
    fn forward(&self, batch: &Batch, train: bool) -> Output {
        Output::logits(self.0.forward_t(batch.tokens.as_ref().expect("checked: the text model's tokens"), train))
    }
}

impl Kind for TextKind {
    fn inputs(&self) -> &'static [Input] {
        &[Input::Tokens]
    }

    fn architecture_options(&self) -> &'static str {
        "text"
    }

    fn architecture(&self, options: &TrainConfig, _: &HostSet, _: &mut ModelInputs) -> Architecture {
        Architecture::Text(options.text.clone())
    }

    fn check(&self, spec: &ModelSpec) -> Result<()> {
        check_lstm(config(spec), "text")
    }

    fn parameter_count(&self, spec: &ModelSpec) -> u128 {
        lstm_count(config(spec), spec.vocab_size(), spec.labels.len() as i64)
    }

    fn build(&self, root: &nn::Path, spec: &ModelSpec) -> Box<dyn Net> {
        Box::new(TextNet(TextLstm::new(root, config(spec), spec.vocab_size(), spec.labels.len() as i64)))
    }

    fn graph_obstacle(&self) -> Option<&'static str> {
        Some("the text model's LSTM is not captured")
    }
}
