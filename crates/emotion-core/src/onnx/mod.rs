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
