//! Putting a trained model to work: predictions for any input (files, encoded files in memory,
//! samples) with one error per bad input, inputs longer than the model's window scored over windows
//! instead of cut, timelines of a recording with a voice gate, and live streams. Files are decoded a
//! packet at a time and windows scored in batches, so memory does not grow with a recording's length.

mod input;
mod predict;
mod scorer;
pub mod slicer;
mod timeline;
pub mod vad;

pub use input::{InferInput, Source};
pub use predict::predict_inputs;
pub use scorer::WindowScorer;
pub use timeline::timeline;

use crate::train::spec::ModelSpec;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
pub use vad::Vad;

/// What `predict` does with an input longer than the model's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum LongInput {
    /// Scored as the timeline's aggregate: the mean probabilities of its speech windows (of all its
    /// windows when none is speech).
    #[default]
    Aggregate,
    /// Refused by name (`INVALID_OPTION` in the input's row).
    Refuse,
}

/// How a loaded model reads audio in `predict`, `timeline` and streams.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct InferOptions {
    /// Where audio is featurised (`auto`, `cpu`, `cuda`, `cuda:N`); the model runs where it was loaded.
    /// TypeScript passes the model's device unless told otherwise.
    pub device: String,
    /// The encoder folder of a model on encoder states (TypeScript finds it by SHA-256).
    pub encoder_dir: Option<PathBuf>,
    /// Longest input in seconds; longer ones are refused (`AUDIO_DECODE`). `null`: 600 s for `predict`
    /// (each input is held whole up to the model's window, and batches are held together), 24 h for
    /// `timeline` (decoded as it is read: memory does not grow with the recording).
    pub max_duration: Option<f64>,
    /// Inputs longer than the model's window: scored over windows, or refused.
    pub long_input: LongInput,
    /// Window in seconds. Default: the model's window (the CNN's clip length; 4 s for models on
    /// encoder states, which were trained on utterances).
    pub window: Option<f64>,
    /// Hop between windows in seconds. Default: half the window.
    pub hop: Option<f64>,
    /// The voice gate: windows that are not speech get no label.
    pub vad: Vad,
    /// A window is speech when at least this fraction of its 16 ms frames is voiced.
    pub min_voiced: f64,
    /// Inputs (`predict`) or windows (`timeline`, long inputs) scored together; `null`: 64 inputs, 16
    /// windows (a batch's activations dominate a timeline's memory). A batch also closes at 8 M samples
    /// (32 MB).
    pub batch_size: Option<usize>,
    /// CPU threads decoding and resampling; 0 = all cores.
    pub decode_threads: usize,
}

impl Default for InferOptions {
    fn default() -> Self {
        InferOptions {
            device: "cpu".into(),
            encoder_dir: None,
            max_duration: None,
            long_input: LongInput::Aggregate,
            window: None,
            hop: None,
            vad: Vad::Earshot,
            min_voiced: 0.2,
            batch_size: None,
            decode_threads: 0,
        }
    }
}

/// One input's prediction.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scored {
    pub label: String,
    pub label_index: usize,
    /// One probability per label, in label order.
    pub probabilities: Vec<f32>,
    /// The input's length in seconds.
    pub seconds: f64,
    /// Windows averaged: 1 for an input within the model's window.
    pub windows: usize,
    /// Whether any of them was speech by the voice gate (a single window is scored either way).
    pub speech: bool,
}

/// One row of `predict`: the input's position and its prediction, or its own error.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PredictRow {
    pub input: usize,
    pub prediction: Option<Scored>,
    pub error: Option<RowError>,
}

/// Why one input could not be scored.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RowError {
    pub code: crate::error::ErrorCode,
    pub message: String,
}

impl PredictRow {
    pub fn rows(results: Vec<crate::Result<Scored>>) -> Vec<PredictRow> {
        results
            .into_iter()
            .enumerate()
            .map(|(input, r)| match r {
                Ok(p) => PredictRow { input, prediction: Some(p), error: None },
                Err(e) => PredictRow {
                    input,
                    prediction: None,
                    error: Some(RowError { code: e.code(), message: e.to_string() }),
                },
            })
            .collect()
    }
}

/// A stretch of a recording and what the model says about it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    /// Fraction of its 16 ms frames the voice gate found voiced.
    pub voiced: f32,
    /// Whether it is speech (`voiced ≥ minVoiced`): only speech is labelled.
    pub speech: bool,
    pub label: Option<String>,
    pub label_index: Option<usize>,
    /// One probability per label, in label order (speech only).
    pub probabilities: Option<Vec<f32>>,
}

/// A recording labelled over time.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    pub seconds: f64,
    pub window: f64,
    pub hop: f64,
    pub vad: Vad,
    pub labels: Vec<String>,
    pub segments: Vec<Segment>,
}

impl InferOptions {
    /// Short inputs `predict` scores together.
    pub fn input_batch(&self) -> usize {
        self.batch_size.unwrap_or(64).max(1)
    }

    /// Windows scored together.
    pub fn window_batch(&self) -> usize {
        self.batch_size.unwrap_or(16).max(1)
    }
}

/// Longest recording `timeline` reads unless `maxDuration` says otherwise.
pub const TIMELINE_MAX_SECONDS: f64 = 24.0 * 3600.0;

/// Samples a batch of windows or short inputs holds at most, whatever `batch_size` says: memory stays
/// bounded with long windows at high rates.
pub const MAX_BATCH_SAMPLES: usize = 8_000_000;

/// Seconds a model on encoder states scores as one window in a timeline (it was trained on utterances).
pub const ENCODER_TIMELINE_WINDOW: f64 = 4.0;
/// Longest input Whisper's encoder reads at once.
const WHISPER_SECONDS: f64 = 30.0;

/// The model's windows: the longest input it scores whole, and a timeline's default window.
pub fn model_windows(spec: &ModelSpec) -> (f64, f64) {
    match (&spec.inputs.mel, &spec.inputs.embedding) {
        (Some(mel), _) => {
            let seconds = mel.config.as_ref().map_or(3.0, |c| c.duration_seconds);
            (seconds, seconds)
        }
        _ => (WHISPER_SECONDS, ENCODER_TIMELINE_WINDOW),
    }
}

/// Models `predict`, `timeline` and streams can use: those reading audio. Text and fusion models read
/// transcripts; a model trained with `speakerNorm` needs calibration clips, which a stream has none of.
pub fn check_audio_model(spec: &ModelSpec, calibrated: bool) -> crate::Result<()> {
    if spec.kind.uses(crate::train::kinds::Input::Tokens) {
        return Err(crate::Error::invalid(
            "model",
            format!(
                "the {} model reads Whisper transcripts, which predict does not make (on RAVDESS they carry almost no emotion: \
                 the text branch scored 13 %); use an audio model, or transcribe and call predictFeatures with tokens",
                spec.kind.name()
            ),
        ));
    }
    let normalised = spec.inputs.embedding.as_ref().and_then(|e| e.encoder.as_ref()).is_some_and(|e| e.speaker_norm);
    if normalised && !calibrated {
        return Err(crate::Error::invalid(
            "calibration",
            "this model standardises encoder states per speaker (speakerNorm): give unlabelled clips of the speaker (calibration); a stream takes none",
        ));
    }
    Ok(())
}

/// The window and hop a timeline or stream uses, checked.
pub fn resolve_window(spec: &ModelSpec, options: &InferOptions) -> crate::Result<(f64, f64)> {
    let (longest, default) = model_windows(spec);
    let window = options.window.unwrap_or(default);
    if !(window.is_finite() && window >= 0.1 && window <= longest) {
        return Err(crate::Error::invalid("window", format!("must be 0.1–{longest} s for this model, got {window}")));
    }
    let hop = options.hop.unwrap_or(window / 2.0);
    if !(hop.is_finite() && hop >= 0.01 && hop <= window) {
        return Err(crate::Error::invalid("hop", format!("must be 0.01 s up to the window ({window} s), got {hop}")));
    }
    if let Some(seconds) = options.max_duration {
        crate::audio::features::check_max_duration(seconds)?;
    }
    if !(0.0..=1.0).contains(&options.min_voiced) {
        return Err(crate::Error::invalid("minVoiced", format!("must be 0–1, got {}", options.min_voiced)));
    }
    Ok((window, hop))
}
