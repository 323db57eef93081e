//! Model kinds: each kind is one module here that says which inputs it reads, how its architecture
//! comes from the options and the training data, how it is built, and what the training loop may do
//! with it (channels-last, CUDA graphs, the default thread count, an extra loss). The engine, the
//! checkpoint and prediction ask the kind; none of them matches on it.
//!
//! Adding a kind: its network and architecture config in `models/`, a file here implementing [`Kind`],
//! a variant in `spec::ModelKind` and `spec::Architecture`, and its arm in [`ModelKind::kind`]
//! (docs/EXTENDING.md, "How to add a model kind").

mod audio;
mod encoder;
mod fusion;
mod probe;
mod text;

use super::config::TrainConfig;
use super::data::{Batch, HostSet};
pub use super::spec::{Architecture, Input, ModelKind, MODEL_KINDS};
use super::spec::{EmbeddingInput, ModelInputs, ModelSpec};
use crate::error::{Error, Result};
use crate::onnx::{graph::Graph, Weights};
use tch::nn;
use tch::Tensor;

/// A built model: logits from a batch, and in training the logits of any extra objective.
pub trait Net: Send {
    fn forward(&self, batch: &Batch, train: bool) -> Output;
}

/// What a forward pass returns.
pub struct Output {
    /// `[B, classes]`.
    pub logits: Tensor,
    /// The speaker adversary's logits `[B, speakers]` (training only): trained against the batch's
    /// `speaker_ids` with the emotion loss.
    pub speakers: Option<Tensor>,
}

impl Output {
    pub fn logits(logits: Tensor) -> Output {
        Output { logits, speakers: None }
    }
}

/// One model kind's behaviour.
pub trait Kind: Sync {
    /// The inputs its batches carry.
    fn inputs(&self) -> &'static [Input];
    /// The options that shape its weights, as users name them (in messages about its size).
    fn architecture_options(&self) -> &'static str;
    /// Its architecture from the options and the training rows (shapes and speakers the data fixes);
    /// it may narrow `inputs` where its options override what the data says.
    fn architecture(&self, options: &TrainConfig, train: &HostSet, inputs: &mut ModelInputs) -> Architecture;
    /// Writes what the data fixed in its architecture back into `options` (what `config.json` records).
    fn write_back(&self, _spec: &ModelSpec, _options: &mut TrainConfig) {}
    /// Checks the architecture (widths, counts, dropout), naming the option.
    fn check(&self, spec: &ModelSpec) -> Result<()>;
    /// Values in its weights file: lets a checkpoint whose JSON and weights disagree be refused before
    /// the model is allocated.
    fn parameter_count(&self, spec: &ModelSpec) -> u128;
    /// The model with fresh weights under `root`.
    fn build(&self, root: &nn::Path, spec: &ModelSpec) -> Box<dyn Net>;
    /// Whether `memoryFormat: 'auto'` runs it channels-last (its convolutions).
    fn channels_last(&self) -> bool {
        false
    }
    /// Why its step cannot be captured in a CUDA graph, when it cannot.
    fn graph_obstacle(&self) -> Option<&'static str> {
        None
    }
    /// Intra-op threads for `threads: 0`: `None` is every core.
    fn default_threads(&self) -> Option<usize> {
        None
    }
    /// `Some(n)` when its training rows must name their speaker, `0..n` (a speaker adversary).
    fn speakers(&self, _spec: &ModelSpec) -> Option<i64> {
        None
    }
    /// Its network as ONNX nodes: the features it reads (`features`, as the exporter's front end
    /// makes them) → logits `[B, classes]`. `export::check_exportable` refuses the kinds without one.
    fn onnx(&self, spec: &ModelSpec, _w: &Weights, _g: &mut Graph, _features: &str) -> Result<String> {
        Err(Error::Internal(format!("the {} model has no ONNX graph", spec.kind.name())))
    }
}

impl ModelKind {
    /// The kind's implementation: the one match over kinds.
    pub fn kind(self) -> &'static dyn Kind {
        match self {
            ModelKind::Audio => &audio::AudioKind,
            ModelKind::Text => &text::TextKind,
            ModelKind::Fusion => &fusion::FusionKind,
            ModelKind::Encoder => &encoder::EncoderKind,
            ModelKind::Probe => &probe::ProbeKind,
        }
    }

    /// Whether this kind reads `input`.
    pub fn uses(self, input: Input) -> bool {
        self.kind().inputs().contains(&input)
    }
}

/// Every kind's inputs as pretty JSON (`{ "audio": ["mel"], … }`): generated into TypeScript as
/// `MODEL_INPUTS`, so the pipeline extracts only what its models read.
pub fn kinds_json() -> String {
    let table: serde_json::Map<String, serde_json::Value> = MODEL_KINDS
        .iter()
        .map(|k| (k.name().to_string(), serde_json::to_value(k.kind().inputs()).expect("inputs serialise")))
        .collect();
    let mut text = serde_json::to_string_pretty(&table).expect("kinds serialise");
    text.push('\n');
    text
}

/// Values of a linear layer `in → out` with bias.
pub(crate) fn linear_count(input: i64, output: i64) -> u128 {
    (input.max(0) as u128 + 1) * output.max(0) as u128
}

/// Values of dense layers `input → widths…`; returns them and the last width.
pub(crate) fn dense_count(input: i64, widths: &[i64]) -> (u128, i64) {
    let mut width = input;
    let mut total = 0;
    for &w in widths {
        total += linear_count(width, w);
        width = w;
    }
    (total, width)
}

/// Most values a model may hold (16 GiB of fp32): a checkpoint asking for more was tampered with.
const MAX_PARAMETERS: u128 = 1 << 32;

/// Every check of a spec, from options or from a checkpoint: the kind's inputs are described, the
/// architecture is the kind's, widths are sane and the model fits in memory.
pub fn check_spec(spec: &ModelSpec) -> Result<()> {
    let matches = matches!(
        (spec.kind, &spec.architecture),
        (ModelKind::Audio, Architecture::Audio(_))
            | (ModelKind::Text, Architecture::Text(_))
            | (ModelKind::Fusion, Architecture::Fusion { .. })
            | (ModelKind::Encoder, Architecture::Encoder(_))
            | (ModelKind::Probe, Architecture::Probe(_))
    );
    if !matches {
        return Err(Error::invalid("architecture", format!("is not the architecture of a {} model", spec.kind.name())));
    }
    if spec.labels.len() < 2 {
        return Err(Error::invalid("labels", format!("need at least 2 classes, got {}", spec.labels.len())));
    }
    if let Some(t) = &spec.inputs.tokens {
        if !(2..=1 << 24).contains(&t.vocab_size) {
            return Err(Error::invalid(
                "vocabSize",
                format!(
                    "the {} model needs a token vocabulary (2 to 2^24 tokens), got {}",
                    spec.kind.name(),
                    t.vocab_size
                ),
            ));
        }
        if t.vocabulary.as_ref().is_some_and(|v| v.len() as i64 != t.vocab_size) {
            return Err(Error::invalid("vocabulary", format!("has a length other than vocabSize ({})", t.vocab_size)));
        }
    }
    for input in [Input::Mel, Input::Tokens, Input::Embedding] {
        let described = match input {
            Input::Mel => spec.inputs.mel.is_some(),
            Input::Tokens => spec.inputs.tokens.is_some(),
            Input::Embedding => spec.inputs.embedding.is_some(),
        };
        if described != spec.kind.uses(input) {
            return Err(Error::invalid(
                "inputs",
                format!(
                    "the {} model {} {input:?} input",
                    spec.kind.name(),
                    if described { "reads no" } else { "needs its" }
                ),
            ));
        }
    }
    let implementation = spec.kind.kind();
    implementation.check(spec)?;
    let values = implementation.parameter_count(spec);
    if values > MAX_PARAMETERS {
        return Err(Error::invalid(
            "architecture",
            format!("the {} model would hold {values} values, more than any machine this runs on", spec.kind.name()),
        ));
    }
    Ok(())
}

/// Checks `[layers, width, groups]` of embedding rows, naming the options of `prefix`.
pub(super) fn check_embedding(prefix: &str, e: &EmbeddingInput) -> Result<()> {
    if !(1..=4096).contains(&e.layers) || !(1..=1 << 16).contains(&e.width) {
        return Err(Error::invalid(
            format!("{prefix}.inputLayers"),
            format!(
                "the model needs the shape of its embeddings (inputLayers 1–4096, inputWidth 1–65536), got {} × {}",
                e.layers, e.width
            ),
        ));
    }
    if e.groups < 1 || e.layers % e.groups != 0 {
        return Err(Error::invalid(
            format!("{prefix}.groups"),
            format!("must be ≥ 1 and divide inputLayers ({}), got {}", e.layers, e.groups),
        ));
    }
    Ok(())
}

/// Checks dense-layer widths (1–65536) and a dropout probability, naming the options.
pub(super) fn check_layers(widths: &[(&str, &[i64])], dropouts: &[(&str, f64)]) -> Result<()> {
    for (name, values) in widths {
        if let Some(w) = values.iter().find(|&&w| !(1..=1 << 16).contains(&w)) {
            return Err(Error::invalid(*name, format!("layer widths and counts must be 1–65536, got {w}")));
        }
        if values.len() > 64 {
            return Err(Error::invalid(*name, format!("at most 64 layers, got {}", values.len())));
        }
    }
    for (name, p) in dropouts {
        if !(0.0..1.0).contains(p) {
            return Err(Error::invalid(*name, format!("must be in [0, 1), got {p}")));
        }
    }
    Ok(())
}
