//! A training job's start: the sets checked, the job's threads, the CUDA-graph side stream, a resumed
//! state, the model, its optimiser and the state a resume continues.

use super::graphs::{graph_obstacle, GraphMode, GRAPH_WARMUP_WINDOWS};
use super::window::{BufferSnapshot, SyncFree};
use super::{Sets, TrainEvent, Trainer};
use crate::cuda_graph::SideStream;
use crate::device::parse_device;
use crate::error::{Error, Result};
use crate::optim::{Adam, LossScaler};
use crate::train::checkpoint::{self, EpochProgress, TrainState, FORMAT};
use crate::train::config::{ModelKind, TrainConfig};
use crate::train::mixed::{self, AutocastCacheOff, Mixed};
use crate::train::model::Model;
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

impl<'a> Trainer<'a> {
    pub(super) fn new(config: &'a TrainConfig, sets: Sets, emit: &mut dyn FnMut(TrainEvent)) -> Result<Trainer<'a>> {
        let kind = config.model;
        validate_sets(config, &sets)?;
        let device = parse_device(&config.device)?;
        let threads = enter_job_settings(config, device);
        let sync_free = config.sync_free.unwrap_or(device.is_cuda());
        // Graph mode runs the whole job on a side stream (capture cannot use the default stream), so
        // it is entered before the job's first allocation on the device.
        let side_stream =
            side_stream(config, device, sync_free, &mut |message| emit(TrainEvent::Warning { model: kind, message }));
        let resumed = resumed_state(config)?;
        // A resumed job goes on in the precision it started in, so the run is the same as uninterrupted.
        let mixed = match resumed.as_ref().and_then(|s| s.precision) {
            Some(precision) => Mixed::with(precision, device),
            None => Mixed::choose(kind, config.amp, config.preset, device, &mut |message| {
                emit(TrainEvent::Warning { model: kind, message })
            }),
        };
        let norm = resumed.as_ref().map(|s| s.norm).unwrap_or_else(|| sets.train.mel_stats());
        let train_set = sets.train.to_device(device, norm)?;
        let val_set = sets.val.map(|s| s.to_device(device, norm)).transpose()?;
        let test_set = sets.test.map(|s| s.to_device(device, norm)).transpose()?;
        let Built { mut vs, model, mut adam, channels_last } = build(config, device)?;
        let buffers = BufferSnapshot::new(&vs);
        let mut state = fresh_state(config, norm, mixed);
        if let (Some(saved), Some(dir)) = (resumed, &config.checkpoint_dir) {
            checkpoint::load_resumable(dir, &saved, &mut vs, &mut adam)?;
            state = TrainState { config: config.clone(), ..saved };
        }
        let class_weights =
            config.class_weights.as_ref().map(|w| Tensor::from_slice(w).to_kind(Kind::Float).to_device(device));
        let steps_per_epoch = train_set.len.div_ceil(config.batch_size);
        let total_opt_steps = (config.epochs() as usize * steps_per_epoch.div_ceil(config.accumulation)) as f64;
        let sync_free = sync_free.then(|| SyncFree::new(device, &state.scaler)).transpose()?;
        let graphs = side_stream.is_some();
        Ok(Trainer {
            side_stream,
            _autocast_cache: graphs.then(AutocastCacheOff::enter),
            graph: if graphs { GraphMode::WarmUp(GRAPH_WARMUP_WINDOWS) } else { GraphMode::Off },
            graphed_windows: 0,
            sums: None,
            config,
            kind,
            device,
            mixed,
            channels_last,
            threads,
            vs,
            model,
            adam,
            buffers,
            state,
            class_weights,
            train_set,
            val_set,
            test_set,
            steps_per_epoch,
            total_opt_steps,
            started: Instant::now(),
            micro_steps: 0,
            consecutive_bad: 0,
            total_skipped: 0,
            stopped_early: false,
            sync_free,
        })
    }
}

/// Each set has the inputs, label range and shapes the model needs; the adversary, speakers.
fn validate_sets(config: &TrainConfig, sets: &Sets) -> Result<()> {
    let kind = config.model;
    let classes = config.labels.len();
    let embedding = config.embedding_shape();
    sets.train.validate("train", classes, kind, config.vocab_size, embedding)?;
    if kind == ModelKind::Encoder && config.encoder_head.speaker_adversary > 0.0 {
        sets.train.validate_speaker_ids("train", config.encoder_head.speakers)?;
    }
    if let Some(v) = sets.val {
        v.validate("val", classes, kind, config.vocab_size, embedding)?;
    }
    if let Some(t) = sets.test {
        t.validate("test", classes, kind, config.vocab_size, embedding)?;
    }
    Ok(())
}

/// Sets libtorch's process-global settings for this job (jobs take turns, `job_turn`, so each sets
/// its own); returns the intra-op thread count.
fn enter_job_settings(config: &TrainConfig, device: Device) -> usize {
    let threads = match (config.threads, config.model) {
        (0, ModelKind::Encoder) => 1,
        (0, _) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        (n, _) => n,
    };
    tch::set_num_threads(threads as i32);
    if let Device::Cuda(_) = device {
        tch::Cuda::cudnn_set_benchmark(config.cudnn_benchmark);
    }
    threads
}

/// The side stream of graph mode, or `None` (with a warning when `cudaGraph` cannot run here).
fn side_stream(
    config: &TrainConfig,
    device: Device,
    sync_free: bool,
    warn: &mut dyn FnMut(String),
) -> Option<SideStream> {
    match (config.cuda_graph, graph_obstacle(config, config.model, device, sync_free), device) {
        (false, _, _) => None,
        (true, Some(why), _) => {
            warn(format!("cudaGraph: {why}; training runs eagerly"));
            None
        }
        (true, None, Device::Cuda(index)) => match SideStream::enter(index) {
            Ok(stream) => Some(stream),
            Err(e) => {
                warn(format!("cudaGraph: {e}; training runs eagerly"));
                None
            }
        },
        (true, None, _) => None,
    }
}

/// The state of the checkpoint a `resume` continues, checked against this job's model and labels.
fn resumed_state(config: &TrainConfig) -> Result<Option<TrainState>> {
    let resumed = match (&config.checkpoint_dir, config.resume) {
        (Some(dir), true) => checkpoint::load_state(dir)?,
        _ => None,
    };
    if let Some(state) = &resumed {
        if state.config.model != config.model || state.config.labels != config.labels {
            return Err(Error::invalid("resume", "the checkpoint was trained with another model or label set"));
        }
    }
    Ok(resumed)
}

struct Built {
    vs: VarStore,
    model: Model,
    adam: Adam,
    channels_last: bool,
}

/// The model with its seeded initial weights, in the job's memory format, and its optimiser.
fn build(config: &TrainConfig, device: Device) -> Result<Built> {
    let vs = VarStore::new(device);
    let model = {
        let _turn = crate::generator_turn();
        tch::manual_seed(config.seed as i64);
        Model::build(&vs.root(), config)
    };
    let mut params = vs.trainable_variables();
    let channels_last = mixed::channels_last(config.memory_format, config.model);
    if channels_last {
        model.use_channels_last(&mut params)?;
    }
    let adam = Adam::new(params, config.optim.clone())?;
    Ok(Built { vs, model, adam, channels_last })
}

fn fresh_state(config: &TrainConfig, norm: (f64, f64), mixed: Mixed) -> TrainState {
    TrainState {
        format: FORMAT.into(),
        config: config.clone(),
        norm,
        epoch: 0,
        next_batch: 0,
        progress: EpochProgress::default(),
        precision: Some(mixed.precision),
        history: Vec::new(),
        best_epoch: None,
        best_value: None,
        epochs_without_improvement: 0,
        scaler: LossScaler::new(mixed.scales_loss()),
        finished: false,
        parts: None,
    }
}
