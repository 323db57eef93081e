//! What a training job tells its caller: progress events and the result.

use crate::metrics::Metrics;
use crate::train::checkpoint::EpochRecord;
use crate::train::config::{ModelKind, TrainConfig};
use crate::train::data::HostSet;
use crate::train::mixed::Precision;
use schemars::JsonSchema;
use serde::Serialize;

/// Which checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointKind {
    /// The weights of the best validation epoch so far.
    Best,
    /// The state after the last finished epoch, for resume.
    Last,
}

/// Progress of a training job, one tag: `type`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum TrainEvent {
    #[serde(rename_all = "camelCase")]
    Start {
        model: ModelKind,
        device: String,
        precision: Precision,
        epochs: u32,
        steps_per_epoch: usize,
        resumed_from_epoch: Option<u32>,
    },
    #[serde(rename_all = "camelCase")]
    EpochStart { model: ModelKind, epoch: u32, epochs: u32 },
    #[serde(rename_all = "camelCase")]
    Step { model: ModelKind, epoch: u32, step: usize, steps: usize, loss: f64 },
    #[serde(rename_all = "camelCase")]
    EpochEnd { model: ModelKind, record: EpochRecord, epochs: u32 },
    #[serde(rename_all = "camelCase")]
    Checkpoint { model: ModelKind, kind: CheckpointKind, path: String, epoch: u32 },
    #[serde(rename_all = "camelCase")]
    Warning { model: ModelKind, message: String },
}

/// What a training job returns.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainResult {
    pub model: ModelKind,
    pub labels: Vec<String>,
    pub device: String,
    /// `fp16` (autocast + loss scaling), `bf16` (autocast) or `fp32`.
    pub precision: Precision,
    /// Whether the CNN ran channels-last (NHWC).
    pub channels_last: bool,
    /// libtorch intra-op threads the job ran with.
    pub threads: u32,
    pub history: Vec<EpochRecord>,
    pub best_epoch: Option<u32>,
    pub val: Option<Metrics>,
    pub test: Option<Metrics>,
    pub checkpoint_dir: Option<String>,
    pub seconds: f64,
    pub optimizer_steps: i64,
    pub micro_steps_per_second: f64,
    pub skipped_steps: u32,
    pub stopped_early: bool,
    /// Accumulation windows replayed from a captured CUDA graph (`cudaGraph`); 0: the job ran eagerly.
    pub graphed_windows: u64,
    /// A data-parallel job's ranks and gradient all-reduces; absent for a job of one process.
    pub data_parallel: Option<DataParallelStats>,
    /// The settings this job ran with, every default filled in (what `config.json` records).
    pub config: TrainConfig,
    /// The model it trained: kind, labels, architecture and inputs (what its checkpoint stores).
    pub spec: crate::train::spec::ModelSpec,
}

/// How a data-parallel job communicated (every rank's figures are its own; they agree closely).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataParallelStats {
    /// `gloo` or `nccl`.
    pub backend: String,
    pub world_size: u32,
    pub rank: u32,
    /// Gradient all-reduces (one per optimiser step) and the seconds they took in all.
    pub reductions: u64,
    pub all_reduce_seconds: f64,
    /// Bytes each rank sent into the all-reduce per optimiser step (fp32 gradients).
    pub bytes_per_step: u64,
    /// Whether batch norm used the global batch's statistics.
    pub sync_batch_norm: bool,
}

pub struct Sets<'a> {
    pub train: &'a HostSet,
    pub val: Option<&'a HostSet>,
    pub test: Option<&'a HostSet>,
}
