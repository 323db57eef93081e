//! Whisper as transformers.js loads it, written from a CTranslate2 `model.bin` by this crate's ONNX
//! writer (no Python, no torch): `encoder_model.onnx` (log-mel `input_features` → `last_hidden_state`)
//! and `decoder_model_merged.onnx` (token ids, the encoder's states and the cache of earlier steps →
//! logits and the new cache), with the input and output names optimum's
//! `automatic-speech-recognition-with-past` export gives them. The merged decoder has no If branch:
//! the cross-attention keys and values are recomputed from `encoder_hidden_states` at every step
//! (transformers.js feeds them at every step), and the self-attention cache is concatenated, so an
//! empty cache (the first step) and a filled one run the same nodes.

use super::ctranslate2::Ct2Model;
use super::whisper::WhisperEncoder;
use crate::error::{Error, Result};
use crate::onnx::graph::{Attr, Dim, Elem, Graph};
use crate::onnx::{attend, gelu, layer_norm, linear, split_heads, split_last};
use prost::Message;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// What was written, for the caller's config files.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AsrExport {
    pub encoder_layers: i64,
    pub decoder_layers: i64,
    pub heads: i64,
    pub width: i64,
    pub ffn_width: i64,
    pub vocab_size: i64,
    pub n_mels: i64,
    pub max_target_positions: i64,
    pub encoder_bytes: u64,
    pub decoder_bytes: u64,
}

/// Writes `onnx/encoder_model.onnx` and `onnx/decoder_model_merged.onnx` under `out_dir`.
pub fn write_transformers_js_onnx(model_bin: &Path, out_dir: &Path) -> Result<AsrExport> {
    let bytes = std::fs::read(model_bin).map_err(|e| Error::io(model_bin, e))?;
    let model = Ct2Model::parse(&bytes, model_bin, &|_| true)?;
    drop(bytes);
    let encoder = WhisperEncoder::from_model(&model, model_bin, Device::Cpu, Kind::Float)?;
    let dir = out_dir.join("onnx");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;

    let mut g = Graph::new();
    let features = g.input("input_features", &[Dim::Named("batch_size"), Dim::Fixed(encoder.n_mels), Dim::Fixed(3000)]);
    let states = encoder.onnx_states_of_mel(&mut g, &features)?;
    let last = states.last().expect("at least the final state");
    g.output(last, "last_hidden_state", &[Dim::Named("batch_size"), Dim::Fixed(1500), Dim::Fixed(encoder.width)]);
    let encoder_bytes = write(g, "whisper encoder", &dir.join("encoder_model.onnx"))?;

    let decoder = Decoder::read(&model, model_bin, encoder.heads())?;
    let mut g = Graph::new();
    decoder.graph(&mut g)?;
    let decoder_bytes = write(g, "whisper decoder (merged, with past)", &dir.join("decoder_model_merged.onnx"))?;
    Ok(AsrExport {
        encoder_layers: encoder.layers() as i64,
        decoder_layers: decoder.layers as i64,
        heads: decoder.heads,
        width: decoder.width,
        ffn_width: decoder.ffn_width,
        vocab_size: decoder.vocab,
        n_mels: encoder.n_mels,
        max_target_positions: decoder.positions.size()[0],
        encoder_bytes,
        decoder_bytes,
    })
}

fn write(g: Graph, name: &str, path: &Path) -> Result<u64> {
    let bytes = g.into_model(name, "Whisper for transformers.js, written by emotion-pipeline", &[])?.encode_to_vec();
    crate::atomic::write_atomic(path, &bytes)?;
    Ok(bytes.len() as u64)
}

/// The decoder's weights in CTranslate2's names.
struct Decoder<'a> {
    model: &'a Ct2Model,
    embeddings: Tensor,
    positions: Tensor,
    layers: usize,
    heads: i64,
    width: i64,
    ffn_width: i64,
    vocab: i64,
}

impl<'a> Decoder<'a> {
    fn read(model: &'a Ct2Model, path: &Path, heads: i64) -> Result<Decoder<'a>> {
        let missing = |name: &str| Error::model_not_found(path, format!("variable {name} is missing"));
        let embeddings =
            model.tensors.get("decoder/embeddings/weight").ok_or_else(|| missing("decoder/embeddings/weight"))?;
        let positions = model
            .tensors
            .get("decoder/position_encodings/encodings")
            .ok_or_else(|| missing("decoder/position_encodings/encodings"))?;
        let [vocab, width] = embeddings.size()[..] else {
            return Err(Error::model_not_found(path, "decoder/embeddings/weight is not rank 2"));
        };
        let layers =
            (0..).take_while(|i| model.tensors.contains_key(&format!("decoder/layer_{i}/ffn/linear_0/weight"))).count();
        let heads = model.scalars.get("decoder/num_heads").copied().unwrap_or(heads);
        let ffn_width = model.tensors["decoder/layer_0/ffn/linear_0/weight"].size()[0];
        Ok(Decoder {
            model,
            embeddings: embeddings.shallow_clone(),
            positions: positions.shallow_clone(),
            layers,
            heads,
            width,
            ffn_width,
            vocab,
        })
    }

    fn t(&self, name: &str) -> Result<&Tensor> {
        self.model.tensors.get(name).ok_or_else(|| Error::Internal(format!("decoder variable {name} is missing")))
    }

    fn linear(&self, g: &mut Graph, prefix: &str, x: &str) -> Result<String> {
        linear(g, self.t(&format!("{prefix}/weight"))?, self.t(&format!("{prefix}/bias"))?, x)
    }

    fn norm(&self, g: &mut Graph, prefix: &str, x: &str) -> Result<String> {
        layer_norm(g, x, Some((self.t(&format!("{prefix}/gamma"))?, self.t(&format!("{prefix}/beta"))?)), self.width)
    }

    /// The merged decoder: inputs and cache as optimum names them, the layers, then the logits.
    fn graph(&self, g: &mut Graph) -> Result<()> {
        let (h, d) = (self.heads, self.width / self.heads);
        let batch = Dim::Named("batch_size");
        let ids = g.typed_input("input_ids", Elem::Int64, &[batch.clone(), Dim::Named("decoder_sequence_length")]);
        let memory = g.input(
            "encoder_hidden_states",
            &[batch.clone(), Dim::Named("encoder_sequence_length / 2"), Dim::Fixed(self.width)],
        );
        let cache = |kind: &'static str| [batch.clone(), Dim::Fixed(h), Dim::Named(kind), Dim::Fixed(d)];
        for i in 0..self.layers {
            for part in ["key", "value"] {
                g.input(&format!("past_key_values.{i}.decoder.{part}"), &cache("past_decoder_sequence_length"));
                g.input(&format!("past_key_values.{i}.encoder.{part}"), &cache("encoder_sequence_length_out"));
            }
        }
        g.typed_input("use_cache_branch", Elem::Bool, &[Dim::Fixed(1)]);
        let (mut x, mask, embeddings) = self.embed(g, &ids)?;
        for i in 0..self.layers {
            x = self.layer(g, i, &x, &memory, &mask)?;
        }
        self.logits(g, &x, &embeddings)
    }

    /// Token and position embeddings (positions continue after the cached ones), the causal mask, and
    /// the embedding table's initializer (the output projection reuses it).
    fn embed(&self, g: &mut Graph, ids: &str) -> Result<(String, String, String)> {
        let (axis1, axis2, one) = (g.int(1), g.int(2), g.int(1));
        let past_shape = g.op("Shape", &["past_key_values.0.decoder.key"], vec![]);
        let past = g.op("Gather", &[&past_shape, &axis2], vec![]);
        let ids_shape = g.op("Shape", &[ids], vec![]);
        let steps = g.op("Gather", &[&ids_shape, &axis1], vec![]);
        let end = g.binary("Add", &past, &steps);
        let position_ids = g.op("Range", &[&past, &end, &one], vec![]);
        let table = g.weight("positions", &self.positions)?;
        let positions = g.op("Gather", &[&table, &position_ids], vec![("axis", Attr::Int(0))]);
        let embeddings = g.weight("embeddings", &self.embeddings)?;
        let tokens = g.op("Gather", &[&embeddings, ids], vec![("axis", Attr::Int(0))]);
        let x = g.binary("Add", &tokens, &positions);
        Ok((x, causal_mask(g, &past, &end), embeddings))
    }

    /// One decoder layer: self-attention over the cache and the new steps (its present outputs),
    /// cross-attention on the encoder's states (recomputed, its present outputs), feed-forward.
    fn layer(&self, g: &mut Graph, i: usize, x: &str, memory: &str, mask: &str) -> Result<String> {
        let (h, d) = (self.heads, self.width / self.heads);
        let p = format!("decoder/layer_{i}");
        let n = self.norm(g, &format!("{p}/self_attention/layer_norm"), x)?;
        let qkv = self.linear(g, &format!("{p}/self_attention/linear_0"), &n)?;
        let parts = split_last(g, &qkv, 3, self.width);
        let [q, k, v] = [0, 1, 2].map(|j| split_heads(g, &parts[j], h, d));
        let mut present = Vec::new();
        for (new, part) in [(&k, "key"), (&v, "value")] {
            let past_name = format!("past_key_values.{i}.decoder.{part}");
            let all = g.op("Concat", &[&past_name, new], vec![("axis", Attr::Int(2))]);
            g.output(
                &all,
                &format!("present.{i}.decoder.{part}"),
                &cache_out("past_decoder_sequence_length + 1", h, d),
            );
            present.push(all);
        }
        let attended = attend(g, &q, &present[0], &present[1], [h, d], Some(mask));
        let out = self.linear(g, &format!("{p}/self_attention/linear_1"), &attended)?;
        let x = g.binary("Add", x, &out);
        let n = self.norm(g, &format!("{p}/attention/layer_norm"), &x)?;
        let q = self.linear(g, &format!("{p}/attention/linear_0"), &n)?;
        let q = split_heads(g, &q, h, d);
        let kv = self.linear(g, &format!("{p}/attention/linear_1"), memory)?;
        let parts = split_last(g, &kv, 2, self.width);
        let [k, v] = [0, 1].map(|j| split_heads(g, &parts[j], h, d));
        for (t, part) in [(&k, "key"), (&v, "value")] {
            g.output(t, &format!("present.{i}.encoder.{part}"), &cache_out("encoder_sequence_length_out", h, d));
        }
        let attended = attend(g, &q, &k, &v, [h, d], None);
        let out = self.linear(g, &format!("{p}/attention/linear_2"), &attended)?;
        let x = g.binary("Add", &x, &out);
        let n = self.norm(g, &format!("{p}/ffn/layer_norm"), &x)?;
        let hidden = self.linear(g, &format!("{p}/ffn/linear_0"), &n)?;
        let hidden = gelu(g, &hidden);
        let out = self.linear(g, &format!("{p}/ffn/linear_1"), &hidden)?;
        Ok(g.binary("Add", &x, &out))
    }

    /// The final norm and the logits: the token embedding is the output projection (tied weights), one
    /// initializer for both, as Gemm with transB on the rows flattened to 2-D.
    fn logits(&self, g: &mut Graph, x: &str, embeddings: &str) -> Result<()> {
        let x = self.norm(g, "decoder/layer_norm", x)?;
        let rows = g.ints(&[-1, self.width]);
        let flat = g.op("Reshape", &[&x, &rows], vec![]);
        let projected = g.op("Gemm", &[&flat, embeddings], vec![("transB", Attr::Int(1))]);
        let x_shape = g.op("Shape", &[&x], vec![]);
        let (start, end, axis) = (g.ints(&[0]), g.ints(&[2]), g.ints(&[0]));
        let leading = g.op("Slice", &[&x_shape, &start, &end, &axis], vec![]);
        let vocab = g.ints(&[self.vocab]);
        let logits_shape = g.op("Concat", &[&leading, &vocab], vec![("axis", Attr::Int(0))]);
        let logits = g.op("Reshape", &[&projected, &logits_shape], vec![]);
        let shape = [Dim::Named("batch_size"), Dim::Named("decoder_sequence_length"), Dim::Fixed(self.vocab)];
        g.output(&logits, "logits", &shape);
        Ok(())
    }
}

fn cache_out(name: &'static str, heads: i64, head_dim: i64) -> [Dim; 4] {
    [Dim::Named("batch_size"), Dim::Fixed(heads), Dim::Named(name), Dim::Fixed(head_dim)]
}

/// `[steps, past + steps]`: 0 where step `i` (at position `past + i`) may look at key `j ≤ past + i`,
/// −1e9 beyond.
fn causal_mask(g: &mut Graph, past: &str, end: &str) -> String {
    let (zero, one) = (g.int(0), g.int(1));
    let rows = g.op("Range", &[past, end, &one], vec![]);
    let axis1 = g.ints(&[1]);
    let rows = g.op("Unsqueeze", &[&rows, &axis1], vec![]);
    let cols = g.op("Range", &[&zero, end, &one], vec![]);
    let future = g.binary("Greater", &cols, &rows);
    let (blocked, open) = (g.scalar(-1e9), g.scalar(0.0));
    g.op("Where", &[&future, &blocked, &open], vec![])
}
