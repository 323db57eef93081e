//! The reference fusion of the CNN and BiLSTM embeddings (`models::Fusion`), both branches trained.

use super::audio::{check_cnn, cnn_count};
use super::text::{check_lstm, lstm_count};
use super::{check_layers, linear_count, Architecture, Input, Kind, Net, Output};
use crate::error::Result;
use crate::models::Fusion;
use crate::train::config::TrainConfig;
use crate::train::data::{Batch, HostSet};
use crate::train::spec::{ModelInputs, ModelSpec};
use tch::nn;

pub(super) struct FusionKind;

struct FusionNet(Fusion);

impl Net for FusionNet {
    fn forward(&self, batch: &Batch, train: bool) -> Output {
        let mel = batch.mel.as_ref().expect("checked: the fusion model's mel");
        let tokens = batch.tokens.as_ref().expect("checked: the fusion model's tokens");
        Output::logits(self.0.forward_pair(mel, tokens, train))
    }
}

impl Kind for FusionKind {
    fn inputs(&self) -> &'static [Input] {
        &[Input::Mel, Input::Tokens]
    }

    fn architecture_options(&self) -> &'static str {
        "audio, text and fusion"
    }

    fn architecture(&self, options: &TrainConfig, _: &HostSet, _: &mut ModelInputs) -> Architecture {
        Architecture::Fusion {
            audio: options.audio.clone(),
            text: options.text.clone(),
            fusion: options.fusion.clone(),
        }
    }

    fn check(&self, spec: &ModelSpec) -> Result<()> {
        let Architecture::Fusion { audio, text, fusion } = &spec.architecture else { unreachable!() };
        check_cnn(audio, "audio")?;
        check_lstm(text, "text")?;
        check_layers(&[("fusion.hidden", &fusion.hidden)], &[("fusion.dropout", fusion.dropout)])
    }

    fn parameter_count(&self, spec: &ModelSpec) -> u128 {
        let Architecture::Fusion { audio, text, fusion } = &spec.architecture else { unreachable!() };
        let classes = spec.labels.len() as i64;
        let mut total = cnn_count(audio, classes) + lstm_count(text, spec.vocab_size(), classes);
        let mut width = audio.hidden.first().copied().unwrap_or(0) + text.head;
        for &h in &fusion.hidden {
            total += linear_count(width, h) + 4 * h.max(0) as u128;
            width = h;
        }
        total + linear_count(width, classes)
    }

    fn build(&self, root: &nn::Path, spec: &ModelSpec) -> Box<dyn Net> {
        let Architecture::Fusion { audio, text, fusion } = &spec.architecture else { unreachable!() };
        let classes = spec.labels.len() as i64;
        Box::new(FusionNet(Fusion::new(root, audio, text, fusion, spec.vocab_size(), classes)))
    }

    fn channels_last(&self) -> bool {
        true
    }

    fn graph_obstacle(&self) -> Option<&'static str> {
        Some("the fusion model's LSTM is not captured")
    }
}
