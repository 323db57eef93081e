//! Training settings. Defaults reproduce the reference: Adam 1e-3, cross-entropy, batch 16,
//! 50 epochs, gradient accumulation 2, mixed precision (fp16) on CUDA.

use super::spec::EncoderIdentity;
pub use super::spec::ModelKind;
use crate::error::{Error, Result};
use crate::models::ProbeConfig;
use crate::models::{AudioCnnConfig, EncoderHeadConfig, FusionConfig, TextLstmConfig};
use crate::optim::AdamConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
/// The c10d backend of a data-parallel job's collectives.
pub enum DistributedBackend {
    /// NCCL when the job trains on CUDA (every rank on a GPU of its own) and the CUDA shim is loaded,
    /// else Gloo.
    Auto,
    /// Host memory over TCP, any device (CUDA gradients go through the CPU).
    Gloo,
    /// The GPUs' own links (NVLink, InfiniBand, or TCP), CUDA only.
    Nccl,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
/// A named recipe: the settings it fills in where the options leave them unset.
pub enum Preset {
    /// The best recipe measured (docs/RESULTS.md): cosine schedule, label smoothing 0.1, bf16 on CPUs
    /// with native bf16. (SpecAugment, measured, lowered accuracy at this schedule: an option, off.)
    Recommended,
    /// The published pipeline as it was: constant learning rate, no label smoothing, no augmentation,
    /// fp16 on CUDA and fp32 on the CPU.
    Reference,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
/// SpecAugment (Park et al., 2019) on the training batches: masks of random width at random places,
/// set to the mean of the normalised log-mel (0).
pub struct SpecAugment {
    /// Frequency masks per clip.
    pub freq_masks: u32,
    /// Widest frequency mask, in mel bins.
    pub freq_width: i64,
    /// Time masks per clip.
    pub time_masks: u32,
    /// Widest time mask, in frames.
    pub time_width: i64,
}

impl Default for SpecAugment {
    fn default() -> Self {
        SpecAugment { freq_masks: 2, freq_width: 16, time_masks: 2, time_width: 28 }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
/// Augmentation of the training batches (never of validation or test).
pub struct Augment {
    /// Time and frequency masks on the log-mel input.
    pub spec_augment: Option<SpecAugment>,
    /// Mixup (Zhang et al., 2018): each batch mixed with a shuffled copy of itself, weight drawn
    /// from Beta(α, α); this is α (0.2–0.4 is usual).
    pub mixup: Option<f64>,
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
/// Settings of one training job. Adam 1e-3, batch 16, 50 epochs and gradient accumulation 2 as the
/// reference; what the recipes differ in comes from `preset` unless set here.
pub struct TrainConfig {
    pub model: ModelKind,
    /// Fills in `lrSchedule`, `labelSmoothing`, `augment` and the CPU precision of `amp: 'auto'`.
    pub preset: Preset,
    /// Class names; label ids index into it.
    pub labels: Vec<String>,
    /// Architecture of the audio CNN (also the audio branch of fusion).
    pub audio: AudioCnnConfig,
    /// Architecture of the text BiLSTM (also the text branch of fusion).
    pub text: TextLstmConfig,
    /// Architecture of the fusion head.
    pub fusion: FusionConfig,
    /// Architecture of the `encoder` model's head.
    pub encoder_head: EncoderHeadConfig,
    /// Architecture of the `probe` model.
    pub probe: ProbeConfig,
    /// Token vocabulary size (text and fusion), `<pad>` = 0 included; 0: the length of `vocabulary`.
    pub vocab_size: i64,
    pub optim: AdamConfig,
    /// Unset: 50 (the reference), or 100 for the `encoder` model with the recommended preset (its
    /// head is small and keeps improving: docs/RESULTS.md).
    pub epochs: Option<u32>,
    /// Clips per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub accumulation: usize,
    /// Seeds initialisation, shuffling and dropout: the same seed gives the same weights.
    pub seed: u64,
    /// Cross-entropy label smoothing, in [0, 1); unset: the preset's (reference 0, recommended 0.1).
    pub label_smoothing: Option<f64>,
    /// Cross-entropy weight per class, one per label.
    pub class_weights: Option<Vec<f64>>,
    /// Unset: the preset's (reference `constant`, recommended `cosine`).
    pub lr_schedule: Option<LrSchedule>,
    /// Unset: the preset's (none for both presets).
    pub augment: Option<Augment>,
    pub early_stopping: Option<EarlyStopping>,
    pub amp: Amp,
    pub memory_format: MemoryFormat,
    /// libtorch intra-op threads while this job runs; 0: automatic (one per available core, but 1 for
    /// the `encoder` model, whose small head ran faster on one thread and 7× faster on a busy CPU).
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
    /// End each accumulation window without a host sync: the non-finite check, the skipped update,
    /// the batch-norm rollback and the loss scale stay on the device (the prerequisite for CUDA
    /// graphs). Skipped windows are then reported, and `maxNonFiniteSteps` enforced, at the next
    /// progress event or epoch end, and the learning-rate schedule counts windows rather than
    /// successful updates (the same unless a window is skipped). Unset: on for CUDA, off on the CPU.
    pub sync_free: Option<bool>,
    /// CUDA only: capture a micro-batch's forward and backward and the window end in CUDA graphs
    /// after two eager windows, then replay them (one launch each instead of hundreds); windows with a
    /// shorter last batch run eagerly. Needs the sync-free window end. A job that cannot be captured
    /// (the CPU, the text and fusion models' LSTM, mixup, the graph shim not loaded, a failed capture)
    /// runs eagerly with a warning event. Off by default until measured on a GPU host.
    pub cuda_graph: bool,
    /// CUDA only: cuDNN's benchmark mode (times the convolution algorithms for each new shape once and
    /// keeps the fastest; results may differ in the last bits from run to run). Off: cuDNN's heuristics.
    pub cudnn_benchmark: bool,
    /// Data-parallel jobs only (a `distributed` world of several ranks): batch norm normalises by the
    /// statistics of the global batch, every rank's rows (PyTorch's `SyncBatchNorm`). Off: each rank
    /// normalises by its own rows, and rank 0's running statistics are sent to the others before each
    /// evaluation.
    pub sync_batch_norm: bool,
    /// Data-parallel jobs only: after every optimiser step the ranks compare a fingerprint of their
    /// parameters (two small all-reduces) and stop with `DISTRIBUTED` at the first step where they
    /// differ. For checking a setup; costs a round trip per step.
    pub check_replicas: bool,
    /// Data-parallel jobs only: the c10d backend of the collectives.
    pub distributed_backend: DistributedBackend,
    /// The front-end settings the mel inputs were made with, kept in checkpoints so `predict` on
    /// audio files featurises them the same way.
    pub mel: Option<crate::audio::MelConfig>,
    /// Token vocabulary (index = id), kept in checkpoints for `predict` on text.
    pub vocabulary: Option<Vec<String>>,
    /// The encoder the embedding inputs came from, kept in checkpoints for `predict` on audio files.
    pub encoder_source: Option<EncoderIdentity>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: ModelKind::Audio,
            preset: Preset::Recommended,
            labels: crate::dataset::ravdess::EMOTIONS.iter().map(|s| s.to_string()).collect(),
            audio: AudioCnnConfig::default(),
            text: TextLstmConfig::default(),
            fusion: FusionConfig::default(),
            encoder_head: EncoderHeadConfig::default(),
            probe: ProbeConfig::default(),
            vocab_size: 0,
            optim: AdamConfig::default(),
            epochs: None,
            batch_size: 16,
            accumulation: 2,
            seed: 42,
            label_smoothing: None,
            class_weights: None,
            lr_schedule: None,
            augment: None,
            early_stopping: None,
            amp: Amp::Auto,
            memory_format: MemoryFormat::Auto,
            threads: 0,
            device: "auto".into(),
            checkpoint_dir: None,
            resume: false,
            max_non_finite_steps: 10,
            progress_interval_ms: 250,
            sync_free: None,
            cuda_graph: false,
            cudnn_benchmark: true,
            sync_batch_norm: true,
            check_replicas: false,
            distributed_backend: DistributedBackend::Auto,
            mel: None,
            vocabulary: None,
            encoder_source: None,
        }
    }
}

impl TrainConfig {
    /// `classWeights` has one weight per label.
    pub fn check_class_weights(&self, labels: usize) -> Result<()> {
        match &self.class_weights {
            Some(w) if w.len() != labels => {
                Err(Error::invalid("classWeights", format!("need {labels} weights, one per label")))
            }
            _ => Ok(()),
        }
    }

    /// The checks that need no data, so a pipeline can refuse bad settings before it extracts features.
    pub fn validate_settings(&self) -> Result<()> {
        let bad = |opt: &str, why: String| Err(Error::invalid(opt, why));
        if self.epochs == Some(0) {
            return bad("epochs", "must be ≥ 1".into());
        }
        if self.batch_size == 0 {
            return bad("batchSize", "must be ≥ 1".into());
        }
        if self.accumulation == 0 {
            return bad("accumulation", "must be ≥ 1".into());
        }
        if self.cuda_graph && self.sync_free == Some(false) {
            return bad(
                "cudaGraph",
                "needs the sync-free window end (a captured step cannot read the non-finite check on the host); \
                 leave syncFree unset or set it to true"
                    .into(),
            );
        }
        if !(self.optim.lr > 0.0 && self.optim.lr.is_finite()) {
            return bad("optim.lr", format!("must be a positive number, got {}", self.optim.lr));
        }
        if let Some(ls) = self.label_smoothing {
            if !(0.0..1.0).contains(&ls) {
                return bad("labelSmoothing", format!("must be in [0, 1), got {ls}"));
            }
        }
        if let Some(augment) = &self.augment {
            if let Some(alpha) = augment.mixup {
                if !(alpha > 0.0 && alpha.is_finite()) {
                    return bad("augment.mixup", format!("must be a positive number (Beta α), got {alpha}"));
                }
            }
            if let Some(sa) = &augment.spec_augment {
                if sa.freq_width < 0 || sa.time_width < 0 {
                    return bad("augment.specAugment", "mask widths must be ≥ 0".into());
                }
            }
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
            ("encoderHead.dropout", self.encoder_head.dropout),
            ("probe.dropout", self.probe.dropout),
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
            ("encoderHead.hidden", self.encoder_head.hidden.clone()),
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
