//! Whisper's encoder as ONNX nodes, with the weights it was loaded with: 16 kHz samples → Whisper's
//! log-mel over the clip's own length → the conv stem and every layer, returning the same hidden
//! states as `WhisperEncoder::hidden_states` (each layer's input, then the normalised output).

use super::{whisper_mel_config, Layer, WhisperEncoder, WINDOW_SAMPLES};
use crate::encoder::Pooling;
use crate::error::Result;
use crate::onnx::front_end::{power_mel, whisper_log};
use crate::onnx::graph::{Attr, Graph};
use crate::onnx::{attend, gelu, layer_norm, linear, split_heads, split_last};

impl WhisperEncoder {
    /// `[B, n]` 16 kHz samples (at most 30 s are read, as the library cuts them) → hidden states
    /// `[B, positions, width]`, `layers + 1` of them.
    pub fn onnx_states(&self, g: &mut Graph, samples: &str) -> Result<Vec<String>> {
        let (start, end, axis1) = (g.ints(&[0]), g.ints(&[WINDOW_SAMPLES as i64]), g.ints(&[1]));
        let clip = g.op("Slice", &[samples, &start, &end, &axis1], vec![]);
        // `log_mel`: every STFT frame but the last, then Whisper's log.
        let power = power_mel(g, &clip, &whisper_mel_config(self.n_mels))?;
        let (zero, last, axis2) = (g.ints(&[0]), g.ints(&[-1]), g.ints(&[2]));
        let power = g.op("Slice", &[&power, &zero, &last, &axis2], vec![]);
        let log_mel = whisper_log(g, &power);
        self.onnx_states_of_mel(g, &log_mel)
    }

    /// Whisper log-mel `[B, n_mels, frames]` → the hidden states (`hidden_states`' order).
    pub fn onnx_states_of_mel(&self, g: &mut Graph, log_mel: &str) -> Result<Vec<String>> {
        let axis1 = g.ints(&[1]);
        let conv = |g: &mut Graph, x: &str, (w, b): &(tch::Tensor, tch::Tensor), stride: i64| -> Result<String> {
            let (w, b) = (g.weight("conv", w)?, g.weight("conv_bias", b)?);
            let attrs = vec![("pads", Attr::Ints(vec![1, 1])), ("strides", Attr::Ints(vec![stride]))];
            let y = g.op("Conv", &[x, &w, &b], attrs);
            Ok(gelu(g, &y))
        };
        let x = conv(g, log_mel, &self.conv1, 1)?;
        let x = conv(g, &x, &self.conv2, 2)?;
        let x = g.op("Transpose", &[&x], vec![("perm", Attr::Ints(vec![0, 2, 1]))]);
        // + the first `positions` rows of the position table.
        let shape = g.op("Shape", &[&x], vec![]);
        let positions = g.op("Gather", &[&shape, &axis1], vec![]);
        let table = g.weight("positions", &self.positions)?;
        let axis0 = g.ints(&[0]);
        let rows = g.op("Slice", &[&table, &axis0, &positions, &axis0], vec![]);
        let mut x = g.binary("Add", &x, &rows);

        let mut states = Vec::with_capacity(self.layers.len() + 1);
        for layer in &self.layers {
            states.push(x.clone());
            let h = layer_norm(g, &x, Some((&layer.attn_norm.0, &layer.attn_norm.1)), self.width)?;
            let attn = self.attention(g, &h, layer)?;
            x = g.binary("Add", &x, &attn);
            let h = layer_norm(g, &x, Some((&layer.ffn_norm.0, &layer.ffn_norm.1)), self.width)?;
            let h = linear(g, &layer.fc1.0, &layer.fc1.1, &h)?;
            let h = gelu(g, &h);
            let h = linear(g, &layer.fc2.0, &layer.fc2.1, &h)?;
            x = g.binary("Add", &x, &h);
        }
        states.push(layer_norm(g, &x, Some((&self.final_norm.0, &self.final_norm.1)), self.width)?);
        Ok(states)
    }

    /// `[B, n]` samples → pooled rows `[B, rows, width]` as `embed_clip` makes them with `EncoderInput::Clip`:
    /// each state's mean over the clip's positions (every position the clip makes), then with
    /// `meanStd` the standard deviations (no correction).
    pub fn onnx_pooled(&self, g: &mut Graph, samples: &str, pooling: Pooling) -> Result<String> {
        let states = self.onnx_states(g, samples)?;
        let mean = |g: &mut Graph, s: &str| {
            g.op("ReduceMean", &[s], vec![("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(1))])
        };
        let mut rows: Vec<String> = states.iter().map(|s| mean(g, s)).collect();
        if pooling == Pooling::MeanStd {
            for (s, m) in states.iter().zip(rows.clone()) {
                let centred = g.binary("Sub", s, &m);
                let squared = g.binary("Mul", &centred, &centred);
                let variance = mean(g, &squared);
                rows.push(g.op("Sqrt", &[&variance], vec![]));
            }
        }
        let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
        Ok(g.op("Concat", &refs, vec![("axis", Attr::Int(1))]))
    }

    /// Multi-head self-attention of `[B, P, width]` (scaled dot product, no mask), then the output
    /// projection.
    fn attention(&self, g: &mut Graph, h: &str, layer: &Layer) -> Result<String> {
        let head_dim = self.width / self.heads;
        let qkv = linear(g, &layer.qkv.0, &layer.qkv.1, h)?;
        let parts = split_last(g, &qkv, 3, self.width);
        let [q, k, v] = [0, 1, 2].map(|i| split_heads(g, &parts[i], self.heads, head_dim));
        let attended = attend(g, &q, &k, &v, [self.heads, head_dim], None);
        linear(g, &layer.out.0, &layer.out.1, &attended)
    }
}
