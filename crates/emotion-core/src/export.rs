//! ONNX export: a trained model that works from audio alone becomes one self-contained ONNX graph,
//! front end included (mono samples at the model's rate in, label probabilities out), written by this
//! crate from ONNX's own schema (no libtorch exporter exists, and users have no Python), with a JSON
//! sidecar that says what the graph expects. docs/EXPORT.md.

use crate::audio::MelConfig;
use crate::error::{Error, Result};
use crate::onnx::graph::{Attr, Dim, Graph, OPSET};
use crate::onnx::{front_end, Weights};
use crate::train::predict::LoadedModel;
use crate::train::spec::{EncoderIdentity, EncoderLocation};
use prost::Message;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
/// How `exportOnnx` writes a model.
pub struct ExportOptions {
    /// Also output the features the network reads (`features`: the normalised log-mel of a log-mel
    /// model, the pooled encoder states of an encoder or probe model), for checking the graph's front
    /// end against the library's.
    pub features_output: bool,
    /// The folder of the encoder a model on encoder states was trained on (checked by SHA-256); the
    /// TypeScript API finds it as `loadModel` does.
    pub encoder_dir: Option<std::path::PathBuf>,
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
    /// the library's featuriser does (`null`: the clip's own length, up to `maxSamples`).
    pub clip_samples: Option<u64>,
    /// Most samples read per clip (the rest is ignored): `clipSamples`, or Whisper's 30 s.
    pub max_samples: u64,
    /// Fewest samples the graph serves as the library does (the library refuses shorter clips of a
    /// model on encoder states: one Whisper frame, 25 ms).
    pub min_samples: u64,
    /// The in-graph front end's log-mel settings (Whisper's, for models on encoder states).
    pub front_end: MelConfig,
    /// The training set's normalisation applied to the log-mel, `(x − mean) / std` (log-mel models).
    pub normalisation: Option<[f64; 2]>,
    /// The encoder inside the graph (models on encoder states), as the model recorded it.
    pub encoder: Option<EncoderIdentity>,
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

/// What the graph's front end reads and makes, for the sidecar.
struct FrontEnd {
    config: MelConfig,
    clip_samples: Option<u64>,
    max_samples: u64,
    min_samples: u64,
    normalisation: Option<[f64; 2]>,
    encoder: Option<EncoderIdentity>,
    /// The `features` output's shape (after `batch`).
    features: [i64; 2],
}

/// The nodes from `samples` to the features the network reads: the model's log-mel, or its
/// encoder's pooled states.
fn front_end_nodes(
    model: &LoadedModel,
    options: &ExportOptions,
    g: &mut Graph,
    samples: &str,
) -> Result<(String, FrontEnd)> {
    let spec = &model.meta.spec;
    if let Some(mel) = &spec.inputs.mel {
        let config = mel.config.clone().unwrap_or_default();
        let features = front_end::log_mel(g, samples, &config, Some((mel.mean, mel.std)))?;
        let n = config.num_samples() as u64;
        let shape = [config.n_mels, config.output_frames()];
        let normalisation = Some([mel.mean, mel.std]);
        return Ok((
            features,
            FrontEnd {
                config,
                clip_samples: Some(n),
                max_samples: n,
                min_samples: 1,
                normalisation,
                encoder: None,
                features: shape,
            },
        ));
    }
    let embedding =
        spec.inputs.embedding.as_ref().ok_or_else(|| Error::Internal("an audio model without audio inputs".into()))?;
    let identity = embedding.encoder.clone().ok_or_else(|| {
        Error::invalid(
            "model",
            "was trained on encoder states without naming their encoder (encoderSource): it cannot be exported",
        )
    })?;
    let Some(dir) = &options.encoder_dir else {
        return Err(Error::invalid(
            "encoder",
            format!(
                "the model was trained on states of the {:?} encoder '{}', which was not found: give its folder (loadModel's encoder option, CLI --encoder DIR)",
                identity.source, identity.name
            ),
        ));
    };
    let (states, n_mels) = crate::encoder::onnx_pooled(
        dir,
        &identity.sha256,
        identity.heads,
        identity.input,
        identity.pooling,
        g,
        samples,
    )?;
    let mut config = crate::encoder::whisper::whisper_mel_config(n_mels);
    config.whisper_log = true;
    let front = FrontEnd {
        config,
        clip_samples: None,
        max_samples: crate::encoder::whisper::WINDOW_SAMPLES as u64,
        min_samples: crate::encoder::whisper::MIN_SAMPLES as u64,
        normalisation: None,
        encoder: Some(identity),
        features: [embedding.layers, embedding.width],
    };
    Ok((states, front))
}

/// Writes `model` to `path` as ONNX (opset 17) and its sidecar to `<path>.json`; returns the sidecar.
pub fn export_onnx(model: &LoadedModel, source: &Path, path: &Path, options: &ExportOptions) -> Result<OnnxSidecar> {
    let spec = &model.meta.spec;
    check_exportable(spec)?;
    let weights = Weights(model.variables());
    let mut g = Graph::new();
    let batch_samples = [Dim::Named("batch"), Dim::Named("samples")];
    let samples = g.input("samples", &batch_samples);
    let (features, front) = front_end_nodes(model, options, &mut g, &samples)?;
    let logits = spec.kind.kind().onnx(spec, &weights, &mut g, &features)?;
    let scores = g.op("Softmax", &[&logits], vec![("axis", Attr::Int(1))]);
    let scores_shape = [Dim::Named("batch"), Dim::Fixed(spec.labels.len() as i64)];
    g.output(&scores, "scores", &scores_shape);
    let mut outputs = vec![info("scores", &scores_shape)];
    if options.features_output {
        let shape = [Dim::Named("batch"), Dim::Fixed(front.features[0]), Dim::Fixed(front.features[1])];
        g.output(&features, "features", &shape);
        outputs.push(info("features", &shape));
    }
    let rate = front.config.sample_rate;
    let labels = serde_json::to_string(&spec.labels).map_err(|e| Error::Internal(e.to_string()))?;
    let doc =
        format!("emotion-pipeline {} model: mono float32 samples at {rate} Hz → label probabilities", spec.kind.name());
    let proto = g.into_model(spec.kind.name(), &doc, &[("labels", labels), ("sample_rate", rate.to_string())])?;
    let bytes = proto.encode_to_vec();
    let weights_file = model.weights_file();
    let sidecar = OnnxSidecar {
        format: "onnx".into(),
        opset: OPSET,
        file: path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        bytes: bytes.len() as u64,
        sha256: crate::digest::sha256_hex(&bytes),
        model_kind: spec.kind.name().into(),
        labels: spec.labels.clone(),
        sample_rate: rate,
        clip_samples: front.clip_samples,
        max_samples: front.max_samples,
        min_samples: front.min_samples,
        licences: licences(front.encoder.as_ref()),
        front_end: front.config,
        normalisation: front.normalisation,
        encoder: front.encoder,
        inputs: vec![info("samples", &batch_samples)],
        outputs,
        source: source.display().to_string(),
        epoch: model.meta.epoch,
        weights_sha256: crate::digest::sha256_file(weights_file).map_err(|e| Error::io(weights_file, e))?,
        producer: format!("emotion-pipeline {}", env!("CARGO_PKG_VERSION")),
    };
    let json = serde_json::to_vec_pretty(&sidecar).map_err(|e| Error::Internal(e.to_string()))?;
    // The model, then its sidecar; a sidecar that cannot be written takes the new model with it, so no
    // model is left beside a stale or missing description.
    crate::atomic::write_atomic(path, &bytes)?;
    if let Err(e) = crate::atomic::write_atomic(&sidecar_path(path), &json) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(sidecar)
}

/// The licences of the parts inside the graph besides the user's own trained weights.
fn licences(encoder: Option<&EncoderIdentity>) -> Vec<Licence> {
    match encoder {
        None => Vec::new(),
        Some(e) if e.source == EncoderLocation::Installed => {
            vec![Licence { part: format!("the {} encoder's weights (OpenAI Whisper)", e.name), licence: "MIT".into() }]
        }
        Some(e) => vec![Licence {
            part: format!("the {} encoder's weights", e.name),
            licence: "as its repository or folder states (OpenAI's Whisper weights are MIT)".into(),
        }],
    }
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
