//! The head on a frozen speech encoder's pooled states (`models::EncoderHead`), with its optional
//! speaker adversary.

use super::{check_embedding, check_layers, dense_count, linear_count, Architecture, Input, Kind, Net, Output};
use crate::error::{Error, Result};
use crate::models::{EncoderHead, EncoderHeadConfig};
use crate::onnx::{graph::Graph, Weights};
use crate::train::config::TrainConfig;
use crate::train::data::{Batch, HostSet};
use crate::train::spec::{ModelInputs, ModelSpec};
use tch::nn;

pub(super) struct EncoderKind;

fn config(spec: &ModelSpec) -> &EncoderHeadConfig {
    match &spec.architecture {
        Architecture::Encoder(c) => c,
        other => unreachable!("an encoder spec holds {other:?}"),
    }
}

struct EncoderNet(EncoderHead);

impl Net for EncoderNet {
    fn forward(&self, batch: &Batch, train: bool) -> Output {
        let states = batch.embedding.as_ref().expect("checked: the encoder model's embedding");
        let (logits, speakers) = self.0.forward_with_adversary(states, train);
        Output { logits, speakers }
    }
}

impl Kind for EncoderKind {
    fn inputs(&self) -> &'static [Input] {
        &[Input::Embedding]
    }

    fn architecture_options(&self) -> &'static str {
        "encoderHead"
    }

    /// The head's input shape from the options when set, else from the data; `groups` from the
    /// options when not 1, else from the encoder's pooling; the adversary's speakers from the rows.
    fn architecture(&self, options: &TrainConfig, train: &HostSet, inputs: &mut ModelInputs) -> Architecture {
        let mut head = options.encoder_head.clone();
        if let Some(e) = inputs.embedding.as_mut() {
            if head.input_layers != 0 || head.input_width != 0 {
                (e.layers, e.width) = (head.input_layers, head.input_width);
            }
            if head.groups != 1 {
                e.groups = head.groups;
            }
            (head.input_layers, head.input_width, head.groups) = (e.layers, e.width, e.groups);
        }
        if let (0, Some(ids)) = (head.speakers, &train.speaker_ids) {
            head.speakers = ids.iter().copied().max().map_or(0, |m| m + 1);
        }
        Architecture::Encoder(head)
    }

    /// The head's input shape, groups and speakers, as the data fixed them.
    fn write_back(&self, spec: &ModelSpec, options: &mut TrainConfig) {
        options.encoder_head = config(spec).clone();
    }

    fn check(&self, spec: &ModelSpec) -> Result<()> {
        let head = config(spec);
        let e = spec.inputs.embedding.as_ref().expect("checked: the encoder model's embedding input");
        check_embedding("encoderHead", e)?;
        if (head.input_layers, head.input_width, head.groups) != (e.layers, e.width, e.groups) {
            return Err(Error::invalid(
                "encoderHead.inputLayers",
                "the head's input shape differs from its embedding input",
            ));
        }
        check_layers(&[("encoderHead.hidden", &head.hidden)], &[("encoderHead.dropout", head.dropout)])?;
        if !(head.speaker_adversary >= 0.0 && head.speaker_adversary.is_finite()) {
            return Err(Error::invalid(
                "encoderHead.speakerAdversary",
                format!("must be a number ≥ 0 (0: no adversary), got {}", head.speaker_adversary),
            ));
        }
        if head.speaker_adversary > 0.0 && !(2..=1 << 20).contains(&head.speakers) {
            return Err(Error::invalid(
                "encoderHead.speakers",
                format!(
                    "the speaker adversary needs at least 2 speakers to tell apart, got {} (train() counts them \
                     from train.speakerIds, the speaker of each training row)",
                    head.speakers
                ),
            ));
        }
        Ok(())
    }

    fn parameter_count(&self, spec: &ModelSpec) -> u128 {
        let head = config(spec);
        let (dense, width) = dense_count(head.input_width * head.groups.max(1), &head.hidden);
        let adversary = if head.speaker_adversary > 0.0 { linear_count(width, head.speakers.max(2)) } else { 0 };
        head.input_layers.max(0) as u128 + dense + linear_count(width, spec.labels.len() as i64) + adversary
    }

    fn build(&self, root: &nn::Path, spec: &ModelSpec) -> Box<dyn Net> {
        Box::new(EncoderNet(EncoderHead::new(root, config(spec), spec.labels.len() as i64)))
    }

    /// Its small head ran faster on one thread, and 7× faster on a busy CPU (docs/RESULTS.md).
    fn default_threads(&self) -> Option<usize> {
        Some(1)
    }

    fn speakers(&self, spec: &ModelSpec) -> Option<i64> {
        let head = config(spec);
        (head.speaker_adversary > 0.0).then_some(head.speakers)
    }

    /// The speaker adversary is training-only: the graph has the emotion head alone.
    fn onnx(&self, spec: &ModelSpec, w: &Weights, g: &mut Graph, states: &str) -> Result<String> {
        crate::models::encoder_head::head_onnx(g, w, config(spec), states)
    }
}
