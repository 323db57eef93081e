//! The linear probe: pooled encoder states, each layer normalised, a learned softmax-weighted sum of
//! the layers, then one linear layer to the classes. SUPERB's evaluation of a frozen encoder, and the
//! baseline that shows what the encoder head's hidden layer and adversary add (docs/RESULTS.md).

use super::encoder_head::mix_layers;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::Tensor;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
/// The `probe` model: `[n, layers, width]` states → layer-weighted sum → one linear layer.
pub struct ProbeConfig {
    /// Dropout on the weighted sum before the linear layer (0: the plain probe).
    pub dropout: f64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig { dropout: 0.0 }
    }
}

#[derive(Debug)]
pub struct LinearProbe {
    layer_weights: Tensor,
    groups: i64,
    width: i64,
    out: nn::Linear,
    dropout: f64,
}

impl LinearProbe {
    /// Parameter paths: `layerWeights` `[groups, layers / groups]`, `out`.
    pub fn new(p: &nn::Path, config: &ProbeConfig, [layers, width, groups]: [i64; 3], classes: i64) -> LinearProbe {
        LinearProbe {
            layer_weights: p.zeros("layerWeights", &[groups, layers / groups]),
            groups,
            width,
            out: nn::linear(p / "out", width * groups, classes, Default::default()),
            dropout: config.dropout,
        }
    }
}

impl ModuleT for LinearProbe {
    /// `[B, layers, width]` → logits `[B, classes]`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        mix_layers(x, &self.layer_weights, self.groups, self.width).dropout(self.dropout, train).apply(&self.out)
    }
}

/// The probe as ONNX nodes (weights from `w`): `[B, rows, width]` states → logits.
pub fn onnx(
    g: &mut crate::onnx::graph::Graph,
    w: &crate::onnx::Weights,
    [groups, width]: [i64; 2],
    states: &str,
) -> crate::error::Result<String> {
    let mixed = super::encoder_head::mix_layers_onnx(g, states, w.get("layerWeights")?, groups, width)?;
    crate::onnx::dense(g, w, "out", &mixed)
}
