//! The two halves of a job's options besides the model's spec: how it trains (what changes the
//! weights it ends with, kept in checkpoints) and how it runs (where, how fast, where it saves: never
//! kept with a model). [`TrainConfig`] is the flat option bag users write; [`Job`] is what the engine
//! runs, with every default the preset and the kind fill in made explicit.

use super::config::{Amp, Augment, DistributedBackend, EarlyStopping, LrSchedule, MemoryFormat, Preset, TrainConfig};
use super::data::HostSet;
use super::kinds::check_spec;
use super::spec::{EmbeddingInput, Input, MelInput, ModelInputs, ModelSpec, TokenInput};
use crate::error::Result;
use crate::optim::AdamConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// How a model was trained, resolved (the preset's defaults filled in).
pub struct TrainingSettings {
    pub preset: Preset,
    pub optim: AdamConfig,
    pub epochs: u32,
    pub batch_size: usize,
    pub accumulation: usize,
    pub seed: u64,
    pub label_smoothing: f64,
    pub class_weights: Option<Vec<f64>>,
    pub lr_schedule: LrSchedule,
    pub augment: Augment,
    pub early_stopping: Option<EarlyStopping>,
    pub amp: Amp,
}

#[derive(Debug, Clone, PartialEq)]
/// Where and how a job runs; none of it changes what a model is.
pub struct RunSettings {
    pub device: String,
    /// Intra-op threads, resolved (the kind's default for `threads: 0`).
    pub threads: usize,
    pub memory_format: MemoryFormat,
    pub checkpoint_dir: Option<PathBuf>,
    pub resume: bool,
    pub max_non_finite_steps: u32,
    pub progress_interval_ms: u64,
    pub sync_free: Option<bool>,
    pub cuda_graph: bool,
    pub cudnn_benchmark: bool,
    pub sync_batch_norm: bool,
    pub check_replicas: bool,
    pub distributed_backend: DistributedBackend,
}

/// One training job: the model's spec, its training settings and its run settings.
#[derive(Debug, Clone)]
pub struct Job {
    pub spec: ModelSpec,
    pub training: TrainingSettings,
    pub run: RunSettings,
}

impl Job {
    /// The job `options` describe on the training rows `train`: the spec derived from both, every
    /// setting resolved and checked.
    pub fn new(options: &TrainConfig, train: &HostSet) -> Result<Job> {
        options.validate_settings()?;
        let spec = derive_spec(options, train)?;
        options.check_class_weights(spec.labels.len())?;
        let job = Job { spec, training: options.training_settings(), run: options.run_settings() };
        job.check_memory()?;
        Ok(job)
    }

    /// A model whose weights, gradients and two Adam moments (16 bytes a value) exceed the device's
    /// available memory is refused before anything is allocated, naming its architecture's options.
    /// On CUDA, "available" is the driver's free memory now (blocks libtorch caches from an earlier
    /// job in this process count as used); activations are not counted: libtorch's own
    /// out-of-memory error, which names the batch size, covers them.
    fn check_memory(&self) -> Result<()> {
        let device = crate::device::parse_device(&self.run.device)?;
        let available = match device {
            tch::Device::Cpu => available_memory(),
            tch::Device::Cuda(index) => crate::device::cuda_free_memory(index).map(|free| free.min(memory_limit_set())),
            _ => None,
        };
        let needed = self.spec.kind.kind().parameter_count(&self.spec).saturating_mul(16);
        match available {
            Some(free) if needed > free as u128 => Err(crate::Error::OutOfMemory {
                device: crate::device::device_name(device),
                reason: format!(
                    "the {} model would need {:.1} GB for its weights, gradients and optimiser state, more than the {:.1} GB available; \
                     make its layers narrower (the `{}` options)",
                    self.spec.kind.name(),
                    needed as f64 / 1e9,
                    free as f64 / 1e9,
                    self.spec.kind.kind().architecture_options(),
                ),
            }),
            _ => Ok(()),
        }
    }

    /// The options with everything the job resolved written back (what `TrainResult.config` and
    /// `config.json` record): the preset's values, and the architecture's shapes and speakers.
    pub fn resolved_options(&self, options: &TrainConfig) -> TrainConfig {
        let mut resolved = options.resolved();
        self.spec.kind.kind().write_back(&self.spec, &mut resolved);
        if let Some(t) = &self.spec.inputs.tokens {
            resolved.vocab_size = t.vocab_size;
        }
        resolved
    }
}

impl TrainConfig {
    /// The settings with what `preset` fills in made explicit (what results and `config.json` record).
    pub fn resolved(&self) -> TrainConfig {
        TrainConfig {
            epochs: Some(self.epochs()),
            label_smoothing: Some(self.smoothing()),
            lr_schedule: Some(self.schedule()),
            // SpecAugment lowered test accuracy at the recommended schedule (docs/RESULTS.md): off.
            augment: Some(self.augment.clone().unwrap_or_default()),
            ..self.clone()
        }
    }

    /// Epochs: as set, else the preset's for this model.
    pub fn epochs(&self) -> u32 {
        let preset = self.preset.defaults();
        self.epochs.unwrap_or_else(|| preset.epochs_for(self.model))
    }

    /// Label smoothing: as set, else the preset's.
    pub fn smoothing(&self) -> f64 {
        self.label_smoothing.unwrap_or(self.preset.defaults().label_smoothing)
    }

    /// Learning-rate schedule: as set, else the preset's.
    pub fn schedule(&self) -> LrSchedule {
        self.lr_schedule.unwrap_or(self.preset.defaults().lr_schedule)
    }

    /// The training half, resolved.
    pub fn training_settings(&self) -> TrainingSettings {
        TrainingSettings {
            preset: self.preset,
            optim: self.optim.clone(),
            epochs: self.epochs(),
            batch_size: self.batch_size,
            accumulation: self.accumulation,
            seed: self.seed,
            label_smoothing: self.smoothing(),
            class_weights: self.class_weights.clone(),
            lr_schedule: self.schedule(),
            augment: self.augment.clone().unwrap_or_default(),
            early_stopping: self.early_stopping.clone(),
            amp: self.amp,
        }
    }

    /// The run half, resolved.
    pub fn run_settings(&self) -> RunSettings {
        let threads = match (self.threads, self.model.kind().default_threads()) {
            (0, Some(n)) => n,
            (0, None) => crate::cores(),
            (n, _) => n,
        };
        RunSettings {
            device: self.device.clone(),
            threads,
            memory_format: self.memory_format,
            checkpoint_dir: self.checkpoint_dir.clone(),
            resume: self.resume,
            max_non_finite_steps: self.max_non_finite_steps,
            progress_interval_ms: self.progress_interval_ms,
            sync_free: self.sync_free,
            cuda_graph: self.cuda_graph,
            cudnn_benchmark: self.cudnn_benchmark,
            sync_batch_norm: self.sync_batch_norm,
            check_replicas: self.check_replicas,
            distributed_backend: self.distributed_backend,
        }
    }
}

/// The spec of a model trained with `options` on `train`: shapes, speakers and the mel
/// normalisation come from the data, the architecture from the options, checked.
pub fn derive_spec(options: &TrainConfig, train: &HostSet) -> Result<ModelSpec> {
    let kind = options.model;
    let mut inputs = ModelInputs {
        mel: kind.uses(Input::Mel).then(|| {
            let (mean, std) = train.mel_stats();
            MelInput { config: options.mel.clone(), mean, std }
        }),
        tokens: kind.uses(Input::Tokens).then(|| TokenInput {
            vocab_size: match (&options.vocabulary, options.vocab_size) {
                (Some(v), 0) => v.len() as i64,
                (_, n) => n,
            },
            vocabulary: options.vocabulary.clone(),
        }),
        embedding: kind.uses(Input::Embedding).then(|| {
            let [layers, width] = train.embedding.as_ref().map_or([0, 0], |(_, s)| [s[1] as i64, s[2] as i64]);
            let encoder = options.encoder_source.clone();
            let groups = encoder.as_ref().map_or(1, |e| e.pooling.groups() as i64);
            EmbeddingInput { layers, width, groups, encoder }
        }),
    };
    let architecture = kind.kind().architecture(options, train, &mut inputs);
    let spec = ModelSpec { kind, labels: options.labels.clone(), architecture, inputs };
    check_spec(&spec)?;
    Ok(spec)
}

/// Bytes a new allocation can take on the CPU: the kernel's `MemAvailable`, the container's cgroup v2
/// room (`memory.max − memory.current`), and `EMOTION_PIPELINE_MEMORY_LIMIT` (bytes) when set: the least.
fn available_memory() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let meminfo = crate::cpu_cache::meminfo_bytes("MemAvailable");
    let cgroup = (|| {
        let max: u64 = read("/sys/fs/cgroup/memory.max")?.trim().parse().ok()?;
        let current: u64 = read("/sys/fs/cgroup/memory.current")?.trim().parse().ok()?;
        Some(max.saturating_sub(current))
    })();
    [meminfo, cgroup, Some(memory_limit_set())].into_iter().flatten().min()
}

/// `EMOTION_PIPELINE_MEMORY_LIMIT` (bytes a job may take on its device), or no limit.
fn memory_limit_set() -> u64 {
    std::env::var("EMOTION_PIPELINE_MEMORY_LIMIT").ok().and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(u64::MAX)
}
