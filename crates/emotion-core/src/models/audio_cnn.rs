//! The reference audio CNN: six conv blocks (3×3 conv → batch norm → ReLU → 2×2 max-pool) with
//! 32·64·128·256·512·512 filters, global average pooling, then FC 512→256→128→classes with dropout.

use crate::distributed::sync_bn::batch_norm;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::Tensor;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
/// The log-mel CNN: conv blocks (conv 3×3, batch norm, ReLU, 2×2 max-pool), then a dense head.
pub struct AudioCnnConfig {
    /// Output channels of each conv block.
    pub channels: Vec<i64>,
    /// Hidden widths of the head; the first is the embedding the fusion model uses.
    pub hidden: Vec<i64>,
    /// Dropout before each dense layer.
    pub dropout: f64,
    /// Dropout after each conv block (0 in the reference).
    pub conv_dropout: f64,
    /// Keep batch norm in inference mode while training (fine-tuning; exact accumulation parity).
    pub freeze_batch_norm: bool,
}

impl Default for AudioCnnConfig {
    fn default() -> Self {
        AudioCnnConfig {
            channels: vec![32, 64, 128, 256, 512, 512],
            hidden: vec![256, 128],
            dropout: 0.5,
            conv_dropout: 0.0,
            freeze_batch_norm: false,
        }
    }
}

#[derive(Debug)]
struct ConvBlock {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

#[derive(Debug)]
pub struct AudioCnn {
    blocks: Vec<ConvBlock>,
    head: Vec<nn::Linear>,
    out: nn::Linear,
    config: AudioCnnConfig,
}

impl AudioCnn {
    /// Parameter paths: `blocks.{i}.conv`, `blocks.{i}.bn`, `head.{i}`, `out` (stable across versions).
    pub fn new(p: &nn::Path, config: &AudioCnnConfig, classes: i64) -> AudioCnn {
        let mut blocks = Vec::new();
        let mut in_ch = 1;
        for (i, &ch) in config.channels.iter().enumerate() {
            let bp = p / "blocks" / i;
            let conv = nn::conv2d(&bp / "conv", in_ch, ch, 3, nn::ConvConfig { padding: 1, ..Default::default() });
            let bn = nn::batch_norm2d(&bp / "bn", ch, Default::default());
            blocks.push(ConvBlock { conv, bn });
            in_ch = ch;
        }
        let mut head = Vec::new();
        let mut width = in_ch;
        for (i, &h) in config.hidden.iter().enumerate() {
            head.push(nn::linear(p / "head" / i, width, h, Default::default()));
            width = h;
        }
        let out = nn::linear(p / "out", width, classes, Default::default());
        AudioCnn { blocks, head, out, config: config.clone() }
    }

    /// Width of [`AudioCnn::embed`].
    pub fn embedding_width(&self) -> i64 {
        self.config.hidden[0]
    }

    /// `[B, n_mels, frames]` log-mel → `[B, hidden[0]]` (the fusion model's audio features).
    pub fn embed(&self, xs: &Tensor, train: bool) -> Tensor {
        // With one input channel NCHW and NHWC hold the same bytes: channels-last conv weights
        // (`Model::use_channels_last`) make libtorch run the first convolution, and so every later
        // layer, in NHWC.
        let mut x = xs.unsqueeze(1); // [B, 1, M, T]
        for block in &self.blocks {
            // [B, C, H, W] → [B, C', H/2, W/2]
            let conv = block.conv.forward_t(&x, train);
            x = batch_norm(&block.bn, &conv, train && !self.config.freeze_batch_norm).relu();
            // Pool only while both sides are ≥ 2, so short or narrow inputs still work.
            let size = x.size();
            if size[2] >= 2 && size[3] >= 2 {
                x = x.max_pool2d_default(2);
            }
            if self.config.conv_dropout > 0.0 {
                x = x.dropout(self.config.conv_dropout, train);
            }
        }
        // [B, C, h, w] → [B, C]
        let x = x.adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        // [B, C] → [B, hidden[0]]
        self.head[0].forward_t(&x, train).relu().dropout(self.config.dropout, train)
    }
}

impl ModuleT for AudioCnn {
    /// `[B, n_mels, frames]` → logits `[B, classes]`.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = self.embed(xs, train);
        for layer in &self.head[1..] {
            x = layer.forward_t(&x, train).relu().dropout(self.config.dropout, train);
        }
        x.apply(&self.out)
    }
}

/// The CNN as ONNX nodes, the weights read from `w` under `prefix`: `[B, n_mels, frames]` features →
/// logits `[B, classes]`. Pooling follows `embed` (only while both sides are ≥ 2), decided here from
/// the fixed feature shape.
pub fn onnx(
    g: &mut crate::onnx::graph::Graph,
    w: &crate::onnx::Weights,
    prefix: &str,
    config: &AudioCnnConfig,
    features: &str,
    [mut height, mut width]: [i64; 2],
) -> crate::error::Result<String> {
    use crate::onnx::graph::Attr;
    let axis1 = g.ints(&[1]);
    let mut x = g.op("Unsqueeze", &[features, &axis1], vec![]);
    for i in 0..config.channels.len() {
        let p = format!("{prefix}blocks.{i}.");
        let (weight, bias) =
            (w.initializer(g, &format!("{p}conv.weight"))?, w.initializer(g, &format!("{p}conv.bias"))?);
        let conv = g.op("Conv", &[&x, &weight, &bias], vec![("pads", Attr::Ints(vec![1, 1, 1, 1]))]);
        let bn: Vec<String> = ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .map(|n| w.initializer(g, &format!("{p}bn.{n}")))
            .collect::<crate::error::Result<_>>()?;
        let normed =
            g.op("BatchNormalization", &[&conv, &bn[0], &bn[1], &bn[2], &bn[3]], vec![("epsilon", Attr::Float(1e-5))]);
        x = g.op("Relu", &[&normed], vec![]);
        if height >= 2 && width >= 2 {
            let two = Attr::Ints(vec![2, 2]);
            x = g.op("MaxPool", &[&x], vec![("kernel_shape", two), ("strides", Attr::Ints(vec![2, 2]))]);
            (height, width) = (height / 2, width / 2);
        }
    }
    let pooled = g.op("GlobalAveragePool", &[&x], vec![]);
    let mut x = g.op("Flatten", &[&pooled], vec![("axis", Attr::Int(1))]);
    for i in 0..config.hidden.len() {
        x = crate::onnx::dense(g, w, &format!("{prefix}head.{i}"), &x)?;
        x = g.op("Relu", &[&x], vec![]);
    }
    crate::onnx::dense(g, w, &format!("{prefix}out"), &x)
}
