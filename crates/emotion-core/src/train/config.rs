//! Training settings. Defaults reproduce the reference: Adam 1e-3, cross-entropy, batch 16,
//! 50 epochs, gradient accumulation 2, mixed precision (fp16) on CUDA.

use crate::error::{Error, Result};
use crate::models::{AudioCnnConfig, FusionConfig, TextLstmConfig};
use crate::optim::AdamConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
/// Which of the three reference models.
pub enum ModelKind {
    Audio,
    Text,
    Fusion,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Audio => "audio",
            ModelKind::Text => "text",
            ModelKind::Fusion => "fusion",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
/// Mixed precision: `fp16` is autocast with loss scaling on CUDA, `bf16` autocast without scaling
/// (CUDA, and CPUs with native bf16; elsewhere it falls back to fp32 with a warning).
pub enum Amp {
    /// fp16 on CUDA, bf16 on a CPU with native bf16 (AVX512-BF16), else fp32.
    Auto,
    Fp16,
    Bf16,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
/// Memory layout of the CNN's activations and conv weights.
pub enum MemoryFormat {
    /// Channels-last for the audio CNN (measured faster on the CPU, `npm run bench:train`).
    Auto,
    /// NHWC: what oneDNN and cuDNN prefer for convolutions.
    ChannelsLast,
    /// NCHW, libtorch's default.
    Contiguous,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
/// Learning-rate schedule over the optimiser steps.
pub enum LrSchedule {
    /// `lr` throughout (the reference).
    Constant,
    /// Cosine decay from `lr` to 0 over all optimiser steps.
    Cosine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
/// Validation metric that picks the best epoch and drives early stopping.
pub enum StopMetric {
    ValLoss,
    ValAccuracy,
    ValF1,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// Stop when `metric` has not improved for `patience` epochs.
pub struct EarlyStopping {
    pub metric: StopMetric,
    /// Epochs without improvement before stopping.
    pub patience: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
/// Settings of one training job. Defaults reproduce the reference: Adam 1e-3, batch 16, 50 epochs,
/// gradient accumulation 2, fp16 mixed precision on CUDA.
pub struct TrainConfig {
    pub model: ModelKind,
    /// Class names; label ids index into it.
    pub labels: Vec<String>,
    /// Architecture of the audio CNN (also the audio branch of fusion).
    pub audio: AudioCnnConfig,
    /// Architecture of the text BiLSTM (also the text branch of fusion).
    pub text: TextLstmConfig,
    /// Architecture of the fusion head.
    pub fusion: FusionConfig,
    /// Token vocabulary size (text and fusion), `<pad>` = 0 included.
    pub vocab_size: i64,
    pub optim: AdamConfig,
    pub epochs: u32,
    /// Clips per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub accumulation: usize,
    /// Seeds initialisation, shuffling and dropout: the same seed gives the same weights.
    pub seed: u64,
    /// Cross-entropy label smoothing, in [0, 1).
    pub label_smoothing: f64,
    /// Cross-entropy weight per class, one per label.
    pub class_weights: Option<Vec<f64>>,
    pub lr_schedule: LrSchedule,
    pub early_stopping: Option<EarlyStopping>,
    pub amp: Amp,
    pub memory_format: MemoryFormat,
    /// libtorch intra-op threads while this job runs; 0: one per available core.
    pub threads: usize,
    /// `auto`, `cpu`, `cuda` or `cuda:N`; `auto` picks CUDA device 0 when there is one.
    pub device: String,
    /// Where `best.*` and `last.*` checkpoints go; none: no checkpoints (and no resume).
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from `checkpoint_dir/last.*` when present.
    pub resume: bool,
    /// Consecutive skipped (non-finite) optimiser steps before training stops with `NON_FINITE`.
    pub max_non_finite_steps: u32,
    /// Minimum milliseconds between `step` progress events.
    pub progress_interval_ms: u64,
    /// The front-end settings the mel inputs were made with, kept in checkpoints so `predict` on
    /// audio files featurises them the same way.
    pub mel: Option<crate::audio::MelConfig>,
    /// Token vocabulary (index = id), kept in checkpoints for `predict` on text.
    pub vocabulary: Option<Vec<String>>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: ModelKind::Audio,
            labels: crate::dataset::ravdess::EMOTIONS.iter().map(|s| s.to_string()).collect(),
            audio: AudioCnnConfig::default(),
            text: TextLstmConfig::default(),
            fusion: FusionConfig::default(),
            vocab_size: 0,
            optim: AdamConfig::default(),
            epochs: 50,
            batch_size: 16,
            accumulation: 2,
            seed: 42,
            label_smoothing: 0.0,
            class_weights: None,
            lr_schedule: LrSchedule::Constant,
            early_stopping: None,
            amp: Amp::Auto,
            memory_format: MemoryFormat::Auto,
            threads: 0,
            device: "auto".into(),
            checkpoint_dir: None,
            resume: false,
            max_non_finite_steps: 10,
            progress_interval_ms: 250,
            mel: None,
            vocabulary: None,
        }
    }
}

impl TrainConfig {
    /// Every check, including those that need the data (labels, vocabulary).
    pub fn validate(&self) -> Result<()> {
        if self.labels.len() < 2 {
            return Err(Error::invalid("labels", format!("need at least 2 classes, got {}", self.labels.len())));
        }
        if self.model != ModelKind::Audio && self.vocab_size < 2 {
            return Err(Error::invalid(
                "vocabSize",
                format!("the {} model needs a token vocabulary (≥ 2), got {}", self.model.name(), self.vocab_size),
            ));
        }
        if let Some(w) = &self.class_weights {
            if w.len() != self.labels.len() {
                return Err(Error::invalid(
                    "classWeights",
                    format!("need {} weights, one per label", self.labels.len()),
                ));
            }
        }
        self.validate_settings()
    }

    /// The checks that need no data, so a pipeline can refuse bad settings before it extracts features.
    pub fn validate_settings(&self) -> Result<()> {
        let bad = |opt: &str, why: String| Err(Error::invalid(opt, why));
        if self.epochs == 0 {
            return bad("epochs", "must be ≥ 1".into());
        }
        if self.batch_size == 0 {
            return bad("batchSize", "must be ≥ 1".into());
        }
        if self.accumulation == 0 {
            return bad("accumulation", "must be ≥ 1".into());
        }
        if !(self.optim.lr > 0.0 && self.optim.lr.is_finite()) {
            return bad("optim.lr", format!("must be a positive number, got {}", self.optim.lr));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad("labelSmoothing", format!("must be in [0, 1), got {}", self.label_smoothing));
        }
        if let Some(w) = &self.class_weights {
            if w.iter().any(|x| !(*x >= 0.0 && x.is_finite())) {
                return bad("classWeights", "weights must be finite and ≥ 0".into());
            }
        }
        for (name, p) in [
            ("audio.dropout", self.audio.dropout),
            ("text.dropout", self.text.dropout),
            ("fusion.dropout", self.fusion.dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(name, format!("must be in [0, 1), got {p}"));
            }
        }
        if self.audio.channels.is_empty() || self.audio.hidden.is_empty() {
            return bad("audio.channels", "need at least one conv block and one hidden layer".into());
        }
        let widths = [
            ("audio.channels", self.audio.channels.clone()),
            ("audio.hidden", self.audio.hidden.clone()),
            ("fusion.hidden", self.fusion.hidden.clone()),
            ("text.embedding", vec![self.text.embedding]),
            ("text.hidden", vec![self.text.hidden]),
            ("text.layers", vec![self.text.layers]),
            ("text.head", vec![self.text.head]),
        ];
        for (name, values) in widths {
            if let Some(w) = values.iter().find(|&&w| w < 1) {
                return bad(name, format!("layer widths and counts must be ≥ 1, got {w}"));
            }
        }
        if self.resume && self.checkpoint_dir.is_none() {
            return bad("resume", "needs checkpointDir".into());
        }
        Ok(())
    }
}
