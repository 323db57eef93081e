//! ONNX export: a trained model that works from audio alone becomes one self-contained ONNX graph,
//! front end included (mono samples at the model's rate in, label probabilities out), written by this
//! crate from ONNX's own schema (no libtorch exporter exists, and users have no Python), with a JSON
//! sidecar that says what the graph expects. docs/EXPORT.md.

use crate::audio::MelConfig;
use crate::error::{Error, Result};
use crate::onnx::graph::{Attr, Dim, Graph, OPSET};
use crate::onnx::{front_end, Weights};
use crate::train::predict::LoadedModel;
use prost::Message;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
/// How `exportOnnx` writes a model.
pub struct ExportOptions {
    /// Also output the features the network reads (`features`: the normalised log-mel), for checking
    /// the in-graph front end against the library's.
    pub features_output: bool,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
/// One input or output of the exported graph: float32, dimensions fixed or named (free).
pub struct TensorInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<ShapeDim>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
/// A fixed size, or the name of a free dimension (`batch`, `samples`).
pub enum ShapeDim {
    Fixed(i64),
    Named(String),
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
/// A part of the exported file that comes with its own licence.
pub struct Licence {
    pub part: String,
    pub licence: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
/// The sidecar written beside an exported model (`<file>.json`): what the graph expects and where it
/// came from.
pub struct OnnxSidecar {
    pub format: String,
    pub opset: i64,
    /// The `.onnx` file's name (beside this sidecar), its size and SHA-256.
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    pub model_kind: String,
    pub labels: Vec<String>,
    /// Rate the `samples` input must be at, Hz (mono, float32, −1..1).
    pub sample_rate: u32,
    /// Samples the graph reads per clip: longer inputs are cut and shorter ones zero-padded to it, as
    /// the library's own prediction does (`null`: the clip's own length).
    pub clip_samples: Option<u64>,
    /// The in-graph front end: the model's log-mel settings.
    pub front_end: MelConfig,
    /// The training set's normalisation applied to the log-mel, `(x − mean) / std`.
    pub normalisation: [f64; 2],
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    /// The model folder it was exported from, the epoch of its weights and their SHA-256.
    pub source: String,
    pub epoch: u32,
    pub weights_sha256: String,
    pub licences: Vec<Licence>,
    pub producer: String,
}

fn info(name: &str, shape: &[Dim]) -> TensorInfo {
    TensorInfo {
        name: name.into(),
        dtype: "float32".into(),
        shape: shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => ShapeDim::Fixed(*n),
                Dim::Named(s) => ShapeDim::Named(s.to_string()),
            })
            .collect(),
    }
}

/// Writes `model` to `path` as ONNX (opset 17) and its sidecar to `<path>.json`; returns the sidecar.
pub fn export_onnx(model: &LoadedModel, source: &Path, path: &Path, options: &ExportOptions) -> Result<OnnxSidecar> {
    let spec = &model.meta.spec;
    check_exportable(spec)?;
    let Some(mel) = &spec.inputs.mel else {
        return Err(Error::invalid(
            "model",
            format!(
                "the {} model reads encoder states; its export is not written yet: export a log-mel (audio) model",
                spec.kind.name()
            ),
        ));
    };
    let front_end = mel.config.clone().unwrap_or_default();
    let weights = Weights(model.variables());
    let mut g = Graph::new();
    let samples = g.input("samples", &[Dim::Named("batch"), Dim::Named("samples")]);
    let features = front_end::log_mel(&mut g, &samples, &front_end, Some((mel.mean, mel.std)))?;
    let logits = spec.kind.kind().onnx(spec, &weights, &mut g, &features)?;
    let scores = g.op("Softmax", &[&logits], vec![("axis", Attr::Int(1))]);
    let classes = spec.labels.len() as i64;
    let mut outputs = vec![info("scores", &[Dim::Named("batch"), Dim::Fixed(classes)])];
    g.output(&scores, "scores", &[Dim::Named("batch"), Dim::Fixed(classes)]);
    if options.features_output {
        let shape = [Dim::Named("batch"), Dim::Fixed(front_end.n_mels), Dim::Fixed(front_end.output_frames())];
        g.output(&features, "features", &shape);
        outputs.push(info("features", &shape));
    }
    let labels = serde_json::to_string(&spec.labels).map_err(|e| Error::Internal(e.to_string()))?;
    let doc = format!(
        "emotion-pipeline {} model: mono float32 samples at {} Hz → label probabilities",
        spec.kind.name(),
        front_end.sample_rate
    );
    let proto = g.into_model(
        spec.kind.name(),
        &doc,
        &[("labels", labels), ("sample_rate", front_end.sample_rate.to_string())],
    )?;
    let bytes = proto.encode_to_vec();
    crate::atomic::write_atomic(path, &bytes)?;
    let sidecar = OnnxSidecar {
        format: "onnx".into(),
        opset: OPSET,
        file: path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        bytes: bytes.len() as u64,
        sha256: crate::digest::sha256_hex(&bytes),
        model_kind: spec.kind.name().into(),
        labels: spec.labels.clone(),
        sample_rate: front_end.sample_rate,
        clip_samples: Some(front_end.num_samples() as u64),
        front_end: front_end.clone(),
        normalisation: [mel.mean, mel.std],
        inputs: vec![info("samples", &[Dim::Named("batch"), Dim::Named("samples")])],
        outputs,
        source: source.display().to_string(),
        epoch: model.meta.epoch,
        weights_sha256: crate::digest::sha256_file(model.weights_file())
            .map_err(|e| Error::io(model.weights_file(), e))?,
        licences: Vec::new(),
        producer: format!("emotion-pipeline {}", env!("CARGO_PKG_VERSION")),
    };
    let json = serde_json::to_vec_pretty(&sidecar).map_err(|e| Error::Internal(e.to_string()))?;
    crate::atomic::write_atomic(&sidecar_path(path), &json)?;
    Ok(sidecar)
}

/// Refuses, by name, models a graph on samples alone cannot serve as trained.
fn check_exportable(spec: &crate::train::ModelSpec) -> Result<()> {
    let name = spec.kind.name();
    if spec.kind.uses(crate::train::kinds::Input::Tokens) {
        return Err(Error::invalid(
            "model",
            format!("the {name} model cannot be exported to ONNX: it reads Whisper transcripts, which need a speech recogniser outside the graph; export an audio, encoder or probe model"),
        ));
    }
    if let Some(identity) = spec.inputs.embedding.as_ref().and_then(|e| e.encoder.as_ref()) {
        if identity.speaker_norm {
            return Err(Error::invalid(
                "model",
                format!("the {name} model standardises encoder states per speaker (speakerNorm), which needs calibration clips outside the graph: train without speakerNorm to export"),
            ));
        }
    }
    Ok(())
}

/// `<path>.json`.
pub fn sidecar_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".json");
    name.into()
}
