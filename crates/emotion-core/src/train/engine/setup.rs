//! A training job's start: the sets checked, the job's threads, the CUDA-graph side stream, a resumed
//! state, the model, its optimiser and the state a resume continues.

use super::data_parallel::{share_resumed, DataParallel};
use super::graphs::{graph_obstacle, GraphMode, GRAPH_WARMUP_WINDOWS};
use super::window::{BufferSnapshot, SyncFree};
use super::{Sets, TrainEvent, Trainer};
use crate::cuda_graph::SideStream;
use crate::device::parse_device;
use crate::distributed::World;
use crate::error::{Error, Result};
use crate::optim::{Adam, LossScaler};
use crate::train::checkpoint::{self, EpochProgress, TrainState, FORMAT};
use crate::train::data::DeviceSet;
use crate::train::kinds::Net;
use crate::train::mixed::{self, AutocastCacheOff, Mixed};
use crate::train::settings::Job;
use crate::train::spec::ModelSpec;
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

impl<'a> Trainer<'a> {
    pub(super) fn new(
        config: &'a Job,
        sets: Sets,
        world: Option<&'a World>,
        emit: &mut dyn FnMut(TrainEvent),
    ) -> Result<Trainer<'a>> {
        let kind = config.spec.kind;
        validate_sets(&config.spec, &sets)?;
        let device = parse_device(&config.run.device)?;
        let threads = enter_job_settings(config, device);
        let mut warn = |message: String| emit(TrainEvent::Warning { model: kind, message });
        let (sync_free, side_stream) = window_modes(config, device, world.is_some(), &mut warn);
        let job_no = world.map(|w| w.next("train"));
        let rank0 = world.is_none_or(|w| w.options.rank == 0);
        let world_size = world.map_or(1, |w| w.options.world_size);
        let resumed = resumed_in_world(config, world.zip(job_no), world_size)?;
        // A resumed job goes on in the precision it started in, so the run is the same as uninterrupted.
        let mixed = match resumed.as_ref().map(|s| s.precision) {
            Some(precision) => Mixed::with(precision, device),
            None => Mixed::choose(kind, config.training.amp, config.training.preset, device, &mut warn),
        };
        // A resumed job goes on with the spec it started with (the same data gives the same one).
        let spec = resumed.as_ref().map_or_else(|| config.spec.clone(), |s| s.spec.clone());
        let (train_set, val_set, test_set) = on_device(&sets, device, spec.mel_norm())?;
        let Built { mut vs, model, mut adam, channels_last } = build(config, &spec, device)?;
        let buffers = BufferSnapshot::new(&vs);
        let mut state = TrainState { world_size, ..fresh_state(config, spec, mixed) };
        let resuming = resumed.is_some();
        if let (Some(saved), Some(dir)) = (resumed, &config.run.checkpoint_dir) {
            if rank0 {
                checkpoint::load_resumable(dir, &saved, &mut vs, &mut adam)?;
            }
            state = TrainState { training: config.training.clone(), ..saved };
        }
        let dp = match world.zip(job_no) {
            Some((w, job)) => {
                let dp = DataParallel::new(w, job, &vs, adam.params(), &config.run, device)?;
                dp.start(&vs, &mut adam, resuming)?;
                Some(dp)
            }
            None => None,
        };
        let class_weights = config.training.class_weights.as_ref().map(|w| class_weight_tensor(w, device));
        let steps_per_epoch = train_set.len.div_ceil(config.training.batch_size * world_size);
        let total_opt_steps =
            (config.training.epochs as usize * steps_per_epoch.div_ceil(config.training.accumulation)) as f64;
        let sync_free = sync_free.then(|| SyncFree::new(device, &state.scaler)).transpose()?;
        let graphs = side_stream.is_some();
        Ok(Trainer {
            side_stream,
            _autocast_cache: graphs.then(AutocastCacheOff::enter),
            graph: if graphs { GraphMode::WarmUp(GRAPH_WARMUP_WINDOWS) } else { GraphMode::Off },
            graphed_windows: 0,
            sums: None,
            job: config,
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
            dp,
        })
    }
}

type DeviceSets = (DeviceSet, Option<DeviceSet>, Option<DeviceSet>);

/// The three sets on the training device, mel normalised by `norm`.
fn on_device(sets: &Sets, device: Device, norm: (f64, f64)) -> Result<DeviceSets> {
    let train = sets.train.to_device(device, norm)?;
    let val = sets.val.map(|s| s.to_device(device, norm)).transpose()?;
    let test = sets.test.map(|s| s.to_device(device, norm)).transpose()?;
    Ok((train, val, test))
}

fn class_weight_tensor(weights: &[f64], device: Device) -> Tensor {
    Tensor::from_slice(weights).to_kind(Kind::Float).to_device(device)
}

/// How windows end: synced or on the device (`syncFree`), and on the CUDA-graph side stream or not.
/// Graph mode runs the whole job on a side stream (capture cannot use the default stream), so it is
/// entered before the job's first allocation on the device.
fn window_modes(config: &Job, device: Device, world: bool, warn: &mut dyn FnMut(String)) -> (bool, Option<SideStream>) {
    if world {
        return (false, data_parallel_modes(config, warn));
    }
    if config.run.check_replicas {
        warn("checkReplicas: read only in a data-parallel job (a world of several ranks); ignored".into());
    }
    let sync_free = config.run.sync_free.unwrap_or(device.is_cuda());
    (sync_free, side_stream(config, device, sync_free, warn))
}

/// The state a `resume` continues (rank 0 reads it, the others get it through the store), checked
/// against the world's size; rank 0 (or a job alone) first clears a save killed mid-write.
fn resumed_in_world(config: &Job, world: Option<(&World, u64)>, world_size: usize) -> Result<Option<TrainState>> {
    if let (Some(dir), true) = (&config.run.checkpoint_dir, world.is_none_or(|(w, _)| w.options.rank == 0)) {
        // A save killed mid-write (kill -9) leaves a temporary file; this job alone writes here.
        crate::atomic::remove_stale_temporaries(dir);
    }
    let resumed = match world {
        Some((w, job)) => share_resumed(w, job, || resumed_state(config))?,
        None => resumed_state(config)?,
    };
    check_world_size(config, resumed.as_ref(), world_size)?;
    Ok(resumed)
}

/// A data-parallel job ends its windows synced and eagerly (its gradient all-reduce runs on the host
/// between the backward and the update, which neither the sync-free end nor a graph can hold).
fn data_parallel_modes(config: &Job, warn: &mut dyn FnMut(String)) -> Option<SideStream> {
    if config.run.sync_free == Some(true) {
        warn(
            "syncFree: a data-parallel job ends each window synced with the host (the gradient all-reduce); ignored"
                .into(),
        );
    }
    if config.run.cuda_graph {
        warn("cudaGraph: a data-parallel job trains eagerly (the gradient all-reduce is not captured)".into());
    }
    None
}

/// A resume continues with as many processes as the checkpoint was trained by (the batch order and
/// each rank's share depend on it).
fn check_world_size(config: &Job, resumed: Option<&TrainState>, world_size: usize) -> Result<()> {
    match resumed {
        Some(s) if s.world_size != world_size => Err(Error::invalid(
            "resume",
            format!(
                "the checkpoint in {} was trained by {} process(es) (WORLD_SIZE {}), this job has {world_size}: \
                 resume with as many (--nproc-per-node {}), or train without resume",
                config.run.checkpoint_dir.as_ref().map_or(String::new(), |d| d.display().to_string()),
                s.world_size,
                s.world_size,
                s.world_size
            ),
        )),
        _ => Ok(()),
    }
}

/// Each set has the inputs, label range and shapes the model needs; an adversary, speakers.
fn validate_sets(spec: &ModelSpec, sets: &Sets) -> Result<()> {
    sets.train.validate("train", spec)?;
    if let Some(speakers) = spec.kind.kind().speakers(spec) {
        sets.train.validate_speaker_ids("train", speakers)?;
    }
    if let Some(v) = sets.val {
        v.validate("val", spec)?;
    }
    if let Some(t) = sets.test {
        t.validate("test", spec)?;
    }
    Ok(())
}

/// Sets libtorch's process-global settings for this job (jobs take turns, `job_turn`, so each sets
/// its own); returns the intra-op thread count.
fn enter_job_settings(config: &Job, device: Device) -> usize {
    let threads = config.run.threads;
    tch::set_num_threads(threads as i32);
    if let Device::Cuda(_) = device {
        tch::Cuda::cudnn_set_benchmark(config.run.cudnn_benchmark);
    }
    threads
}

/// The side stream of graph mode, or `None` (with a warning when `cudaGraph` cannot run here).
fn side_stream(config: &Job, device: Device, sync_free: bool, warn: &mut dyn FnMut(String)) -> Option<SideStream> {
    match (config.run.cuda_graph, graph_obstacle(config, device, sync_free), device) {
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
fn resumed_state(config: &Job) -> Result<Option<TrainState>> {
    let resumed = match (&config.run.checkpoint_dir, config.run.resume) {
        (Some(dir), true) => checkpoint::load_state(dir)?,
        _ => None,
    };
    if let Some(state) = &resumed {
        let (saved, now) = (&state.spec, &config.spec);
        if saved.kind != now.kind || saved.labels != now.labels || saved.architecture != now.architecture {
            return Err(Error::invalid("resume", "the checkpoint was trained with another model or label set"));
        }
        if saved.inputs != now.inputs {
            return Err(Error::invalid(
                "resume",
                "the checkpoint was trained on other inputs (another encoder, precision, front end, vocabulary or data): \
                 resume with the settings and data of that run, or train without resume",
            ));
        }
    }
    Ok(resumed)
}

struct Built {
    vs: VarStore,
    model: Box<dyn Net>,
    adam: Adam,
    channels_last: bool,
}

/// The model with its seeded initial weights, in the job's memory format, and its optimiser.
fn build(config: &Job, spec: &ModelSpec, device: Device) -> Result<Built> {
    let vs = VarStore::new(device);
    let model = {
        let _turn = crate::generator_turn();
        tch::manual_seed(config.training.seed as i64);
        spec.kind.kind().build(&vs.root(), spec)
    };
    let mut params = vs.trainable_variables();
    let channels_last = mixed::channels_last(config.run.memory_format, spec.kind);
    if channels_last {
        // The conv weights, re-laid out in place; before the optimiser is built.
        mixed::params_to_channels_last(&mut params)?;
    }
    let adam = Adam::new(params, config.training.optim.clone())?;
    Ok(Built { vs, model, adam, channels_last })
}

fn fresh_state(config: &Job, spec: ModelSpec, mixed: Mixed) -> TrainState {
    TrainState {
        format: FORMAT.into(),
        spec,
        training: config.training.clone(),
        epoch: 0,
        next_batch: 0,
        progress: EpochProgress::default(),
        precision: mixed.precision,
        history: Vec::new(),
        best_epoch: None,
        best_value: None,
        epochs_without_improvement: 0,
        scaler: LossScaler::new(mixed.scales_loss()),
        finished: false,
        world_size: 1,
        parts: None,
    }
}
