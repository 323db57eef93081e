//! The linear probe on pooled encoder states (`models::LinearProbe`).

use super::{check_embedding, check_layers, linear_count, Architecture, Input, Kind, Net, Output};
use crate::error::Result;
use crate::models::{LinearProbe, ProbeConfig};
use crate::onnx::{graph::Graph, Weights};
use crate::train::config::TrainConfig;
use crate::train::data::{Batch, HostSet};
use crate::train::spec::{EmbeddingInput, ModelInputs, ModelSpec};
use tch::nn::{self, ModuleT};

pub(super) struct ProbeKind;

fn config(spec: &ModelSpec) -> &ProbeConfig {
    match &spec.architecture {
        Architecture::Probe(c) => c,
        other => unreachable!("a probe spec holds {other:?}"),
    }
}

fn states(spec: &ModelSpec) -> &EmbeddingInput {
    spec.inputs.embedding.as_ref().expect("checked: the probe's embedding input")
}

struct ProbeNet(LinearProbe);

impl Net for ProbeNet {
    fn forward(&self, batch: &Batch, train: bool) -> Output {
        Output::logits(self.0.forward_t(batch.embedding.as_ref().expect("checked: the probe's embedding"), train))
    }
}

impl Kind for ProbeKind {
    fn inputs(&self) -> &'static [Input] {
        &[Input::Embedding]
    }

    fn architecture_options(&self) -> &'static str {
        "probe"
    }

    fn architecture(&self, options: &TrainConfig, _: &HostSet, _: &mut ModelInputs) -> Architecture {
        Architecture::Probe(options.probe.clone())
    }

    fn check(&self, spec: &ModelSpec) -> Result<()> {
        check_embedding("embedding", states(spec))?;
        check_layers(&[], &[("probe.dropout", config(spec).dropout)])
    }

    fn parameter_count(&self, spec: &ModelSpec) -> u128 {
        let e = states(spec);
        e.layers.max(0) as u128 + linear_count(e.width * e.groups, spec.labels.len() as i64)
    }

    fn build(&self, root: &nn::Path, spec: &ModelSpec) -> Box<dyn Net> {
        let e = states(spec);
        let shape = [e.layers, e.width, e.groups];
        Box::new(ProbeNet(LinearProbe::new(root, config(spec), shape, spec.labels.len() as i64)))
    }

    fn default_threads(&self) -> Option<usize> {
        Some(1)
    }

    fn onnx(&self, spec: &ModelSpec, w: &Weights, g: &mut Graph, rows: &str) -> Result<String> {
        let e = states(spec);
        crate::models::linear_probe::onnx(g, w, [e.groups, e.width], rows)
    }
}
