//! The reference log-mel CNN (`models::AudioCnn`).

use super::{check_layers, dense_count, linear_count, Architecture, Input, Kind, Net, Output};
use crate::error::Result;
use crate::models::{AudioCnn, AudioCnnConfig};
use crate::onnx::{graph::Graph, Weights};
use crate::train::config::TrainConfig;
use crate::train::data::{Batch, HostSet};
use crate::train::spec::{ModelInputs, ModelSpec};
use tch::nn::{self, ModuleT};

pub(super) struct AudioKind;

/// The CNN's architecture in a spec of kind audio (fusion's audio branch reads its own).
fn config(spec: &ModelSpec) -> &AudioCnnConfig {
    match &spec.architecture {
        Architecture::Audio(c) => c,
        other => unreachable!("an audio spec holds {other:?}"),
    }
}

pub(super) fn check_cnn(c: &AudioCnnConfig, prefix: &str) -> Result<()> {
    if c.channels.is_empty() || c.hidden.is_empty() {
        return Err(crate::Error::invalid(
            format!("{prefix}.channels"),
            "need at least one conv block and one hidden layer",
        ));
    }
    check_layers(
        &[(&format!("{prefix}.channels"), &c.channels), (&format!("{prefix}.hidden"), &c.hidden)],
        &[(&format!("{prefix}.dropout"), c.dropout), (&format!("{prefix}.convDropout"), c.conv_dropout)],
    )
}

/// Values of the CNN with its own output layer (conv weight and bias, batch norm's four vectors).
pub(super) fn cnn_count(c: &AudioCnnConfig, classes: i64) -> u128 {
    let mut total = 0;
    let mut input = 1i64;
    for &ch in &c.channels {
        total += (input.max(0) as u128 * 9 + 1) * ch.max(0) as u128 + 4 * ch.max(0) as u128;
        input = ch;
    }
    let (head, width) = dense_count(input, &c.hidden);
    total + head + linear_count(width, classes)
}

struct AudioNet(AudioCnn);

impl Net for AudioNet {
    fn forward(&self, batch: &Batch, train: bool) -> Output {
        Output::logits(self.0.forward_t(batch.mel.as_ref().expect("checked: the audio model's mel"), train))
    }
}

impl Kind for AudioKind {
    fn inputs(&self) -> &'static [Input] {
        &[Input::Mel]
    }

    fn architecture_options(&self) -> &'static str {
        "audio"
    }

    fn architecture(&self, options: &TrainConfig, _: &HostSet, _: &mut ModelInputs) -> Architecture {
        Architecture::Audio(options.audio.clone())
    }

    fn check(&self, spec: &ModelSpec) -> Result<()> {
        check_cnn(config(spec), "audio")
    }

    fn parameter_count(&self, spec: &ModelSpec) -> u128 {
        cnn_count(config(spec), spec.labels.len() as i64)
    }

    fn build(&self, root: &nn::Path, spec: &ModelSpec) -> Box<dyn Net> {
        Box::new(AudioNet(AudioCnn::new(root, config(spec), spec.labels.len() as i64)))
    }

    /// Measured faster channels-last on the CPU (oneDNN) and expected so on CUDA (cuDNN).
    fn channels_last(&self) -> bool {
        true
    }

    fn onnx(&self, spec: &ModelSpec, w: &Weights, g: &mut Graph, features: &str) -> Result<String> {
        let mel = spec.inputs.mel.as_ref().expect("checked: the audio model's mel");
        let front_end = mel.config.clone().unwrap_or_default();
        let shape = [front_end.n_mels, front_end.output_frames()];
        crate::models::audio_cnn::onnx(g, w, "", config(spec), features, shape)
    }
}
