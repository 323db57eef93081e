//! ONNX graph writing: ONNX's protobuf messages, a graph builder, the log-mel front end as nodes, and
//! the weights networks read their layers from. Knows nothing of training; `export` puts a trained
//! model's pieces together, and each network writes its own layers (`models/`).

pub mod front_end;
pub mod graph;
mod proto;

use crate::error::{Error, Result};
use graph::{Attr, Graph};
use std::collections::HashMap;
use tch::Tensor;

/// A loaded model's weights by parameter path.
pub struct Weights(pub HashMap<String, Tensor>);

impl Weights {
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.0.get(name).ok_or_else(|| Error::Internal(format!("the model has no weight `{name}`")))
    }

    /// The weight `name` as an initializer of `g`.
    pub fn initializer(&self, g: &mut Graph, name: &str) -> Result<String> {
        g.weight(name, self.get(name)?)
    }
}

/// A linear layer `prefix.weight` `[out, in]`, `prefix.bias` on `[B, in]`.
pub fn dense(g: &mut Graph, w: &Weights, prefix: &str, x: &str) -> Result<String> {
    let (weight, bias) = (w.initializer(g, &format!("{prefix}.weight"))?, w.initializer(g, &format!("{prefix}.bias"))?);
    Ok(g.op("Gemm", &[x, &weight, &bias], vec![("transB", Attr::Int(1))]))
}

/// `x · weightᵀ + bias` for inputs of any rank (`[…, in]` → `[…, out]`), `weight` `[out, in]`.
pub fn linear(g: &mut Graph, weight: &Tensor, bias: &Tensor, x: &str) -> Result<String> {
    let transposed = g.weight("weight", &weight.f_transpose(0, 1)?)?;
    let bias = g.weight("bias", bias)?;
    let product = g.binary("MatMul", x, &transposed);
    Ok(g.binary("Add", &product, &bias))
}

/// torch's exact GELU, `x · (1 + erf(x / √2)) / 2` (the Gelu op arrived in opset 20).
pub fn gelu(g: &mut Graph, x: &str) -> String {
    let root2 = g.scalar(std::f32::consts::SQRT_2);
    let scaled = g.binary("Div", x, &root2);
    let erf = g.op("Erf", &[&scaled], vec![]);
    let one = g.scalar(1.0);
    let shifted = g.binary("Add", &erf, &one);
    let product = g.binary("Mul", x, &shifted);
    let half = g.scalar(0.5);
    g.binary("Mul", &product, &half)
}

/// Layer norm over the last axis (epsilon 1e-5, torch's default); `None` for no parameters.
pub fn layer_norm(g: &mut Graph, x: &str, params: Option<(&Tensor, &Tensor)>, width: i64) -> Result<String> {
    let (scale, bias) = match params {
        Some((gamma, beta)) => (g.weight("gamma", gamma)?, g.weight("beta", beta)?),
        None => (
            g.floats("ones", &[width], &vec![1.0; width as usize]),
            g.floats("zeros", &[width], &vec![0.0; width as usize]),
        ),
    };
    Ok(g.op("LayerNormalization", &[x, &scale, &bias], vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(1e-5))]))
}

/// `[B, T, heads · head_dim]` → `[B, heads, T, head_dim]`.
pub fn split_heads(g: &mut Graph, x: &str, heads: i64, head_dim: i64) -> String {
    let shape = g.ints(&[0, 0, heads, head_dim]);
    let r = g.op("Reshape", &[x, &shape], vec![]);
    g.op("Transpose", &[&r], vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))])
}

/// Scaled dot-product attention of `[B, H, S, D]` queries on `[B, H, T, D]` keys and values, with an
/// optional additive mask broadcasting to `[B, H, S, T]`; returns `[B, S, H · D]`.
pub fn attend(g: &mut Graph, q: &str, k: &str, v: &str, [heads, head_dim]: [i64; 2], mask: Option<&str>) -> String {
    let k_t = g.op("Transpose", &[k], vec![("perm", Attr::Ints(vec![0, 1, 3, 2]))]);
    let scores = g.binary("MatMul", q, &k_t);
    let scale = g.scalar(1.0 / (head_dim as f32).sqrt());
    let mut scores = g.binary("Mul", &scores, &scale);
    if let Some(mask) = mask {
        scores = g.binary("Add", &scores, mask);
    }
    let weights = g.op("Softmax", &[&scores], vec![("axis", Attr::Int(-1))]);
    let attended = g.binary("MatMul", &weights, v);
    let attended = g.op("Transpose", &[&attended], vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))]);
    let merged = g.ints(&[0, 0, heads * head_dim]);
    g.op("Reshape", &[&attended, &merged], vec![])
}

/// Splits `x` into equal parts along its last axis.
pub fn split_last(g: &mut Graph, x: &str, parts: usize, width: i64) -> Vec<String> {
    let sizes = g.ints(&vec![width; parts]);
    let names: Vec<String> = (0..parts).map(|_| g.name("part")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    g.node("Split", &[x, &sizes], &refs, vec![("axis", Attr::Int(-1))]);
    names
}
