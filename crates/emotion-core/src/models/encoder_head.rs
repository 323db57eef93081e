//! The head on a frozen encoder's pooled states: each layer's vector normalised (layer norm without
//! parameters: Whisper's layers differ in scale by orders of magnitude), a learned softmax-weighted
//! sum over layers (SUPERB-style, so the head picks the layers that carry emotion) per row group
//! (means, and standard deviations with statistics pooling), the groups concatenated, then dense
//! layers with ReLU and dropout.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
/// The `encoder` model: input `[n, inputLayers, inputWidth]` from `extractEmbeddings`.
pub struct EncoderHeadConfig {
    /// Rows per clip (the encoder's layers + 1); 0: from the training data.
    pub input_layers: i64,
    /// Width of each row (512 for Whisper-base); 0: from the training data.
    pub input_width: i64,
    /// Row groups, each with its own layer weights: 1 for mean pooling, 2 for `meanStd` (taken from
    /// `encoderSource.pooling` when left at 1).
    pub groups: i64,
    /// Hidden widths of the dense layers.
    pub hidden: Vec<i64>,
    /// Dropout before each dense layer.
    pub dropout: f64,
    /// Weight of a speaker adversary (0: none): a linear speaker classifier on the last hidden layer
    /// behind a gradient reversal, so the head learns features that do not tell the training speakers
    /// apart (needs the training set's `speakerIds`). Measured on the speaker CV: docs/RESULTS.md.
    pub speaker_adversary: f64,
    /// Speakers the adversary tells apart; 0: counted from the training set's `speakerIds`.
    pub speakers: i64,
}

impl Default for EncoderHeadConfig {
    fn default() -> Self {
        EncoderHeadConfig {
            input_layers: 0,
            input_width: 0,
            groups: 1,
            hidden: vec![256],
            dropout: 0.3,
            speaker_adversary: 0.0,
            speakers: 0,
        }
    }
}

#[derive(Debug)]
pub struct EncoderHead {
    /// `[groups, rows per group]`
    layer_weights: Tensor,
    groups: i64,
    width: i64,
    layers: Vec<nn::Linear>,
    out: nn::Linear,
    dropout: f64,
    /// The speaker classifier and the weight of its reversed gradient.
    adversary: Option<(nn::Linear, f64)>,
}

impl EncoderHead {
    /// Parameter paths: `layerWeights`, `head.{i}`, `out`, and `adversary` with a speaker adversary.
    pub fn new(p: &nn::Path, config: &EncoderHeadConfig, classes: i64) -> EncoderHead {
        let groups = config.groups.max(1);
        let layer_weights = p.zeros("layerWeights", &[groups, config.input_layers / groups]);
        let mut width = config.input_width * groups;
        let mut layers = Vec::new();
        for (i, &h) in config.hidden.iter().enumerate() {
            layers.push(nn::linear(p / "head" / i, width, h, Default::default()));
            width = h;
        }
        let out = nn::linear(p / "out", width, classes, Default::default());
        let adversary = (config.speaker_adversary > 0.0).then(|| {
            (nn::linear(p / "adversary", width, config.speakers.max(2), Default::default()), config.speaker_adversary)
        });
        EncoderHead {
            layer_weights,
            groups,
            width: config.input_width,
            layers,
            out,
            dropout: config.dropout,
            adversary,
        }
    }

    /// Emotion logits, and in training with an adversary its speaker logits. The adversary sees the
    /// last hidden layer through a gradient reversal: `(1 + w)·h.detach() − w·h` is `h` going forward
    /// and passes `−w` times the gradient back, so the speaker classifier learns to tell speakers
    /// apart while the layers below learn to make that hard.
    pub fn forward_with_adversary(&self, x: &Tensor, train: bool) -> (Tensor, Option<Tensor>) {
        let mut h = mix_layers(x, &self.layer_weights, self.groups, self.width);
        for layer in &self.layers {
            h = h.dropout(self.dropout, train).apply(layer).relu();
        }
        let speakers = match (&self.adversary, train) {
            (Some((classifier, w)), true) => Some((h.detach() * (1.0 + w) - &h * *w).apply(classifier)),
            _ => None,
        };
        (h.dropout(self.dropout, train).apply(&self.out), speakers)
    }
}

/// Each row of `x` `[B, layers, width]` layer-normalised (no parameters), then the softmax-weighted sum
/// of each group's rows with `layer_weights` `[groups, layers / groups]`, the groups concatenated:
/// `[B, groups · width]`. Shared by the encoder head and the linear probe.
pub fn mix_layers(x: &Tensor, layer_weights: &Tensor, groups: i64, width: i64) -> Tensor {
    let normalised = x.layer_norm([width], None::<Tensor>, None::<Tensor>, 1e-5, true);
    // [B, groups, rows, width] × softmax over rows → [B, groups, width] → [B, groups · width]
    let batch = normalised.size()[0];
    let grouped = normalised.view([batch, groups, -1, width]);
    let mix = layer_weights.softmax(1, normalised.kind()).view([1, groups, -1, 1]);
    (grouped * mix).sum_dim_intlist([2i64].as_slice(), false, None::<Kind>).view([batch, -1])
}

impl ModuleT for EncoderHead {
    /// `[B, layers, width]` → logits `[B, classes]`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.forward_with_adversary(x, train).0
    }
}

/// [`mix_layers`] as ONNX nodes: `[B, rows, width]` → `[B, groups · width]`. The softmax of the layer
/// weights is computed here, once (the same float32 op the network runs).
pub fn mix_layers_onnx(
    g: &mut crate::onnx::graph::Graph,
    x: &str,
    layer_weights: &Tensor,
    groups: i64,
    width: i64,
) -> crate::error::Result<String> {
    let normalised = crate::onnx::layer_norm(g, x, None, width)?;
    let grouped_shape = g.ints(&[0, groups, -1, width]);
    let grouped = g.op("Reshape", &[&normalised, &grouped_shape], vec![]);
    let mix = layer_weights.f_softmax(1, Kind::Float)?.f_view([1, groups, -1, 1])?;
    let mix = g.weight("layer_mix", &mix)?;
    let weighted = g.binary("Mul", &grouped, &mix);
    let axis = g.ints(&[2]);
    let summed = g.op("ReduceSum", &[&weighted, &axis], vec![("keepdims", crate::onnx::graph::Attr::Int(0))]);
    let flat_shape = g.ints(&[0, -1]);
    Ok(g.op("Reshape", &[&summed, &flat_shape], vec![]))
}

/// The encoder head as ONNX nodes (weights from `w`): `[B, rows, width]` states → logits.
pub fn head_onnx(
    g: &mut crate::onnx::graph::Graph,
    w: &crate::onnx::Weights,
    config: &EncoderHeadConfig,
    states: &str,
) -> crate::error::Result<String> {
    let groups = config.groups.max(1);
    let mut x = mix_layers_onnx(g, states, w.get("layerWeights")?, groups, config.input_width)?;
    for i in 0..config.hidden.len() {
        x = crate::onnx::dense(g, w, &format!("head.{i}"), &x)?;
        x = g.op("Relu", &[&x], vec![]);
    }
    crate::onnx::dense(g, w, "out", &x)
}
