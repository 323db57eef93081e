//! The training loop: seeded shuffles, device-resident batches, gradient accumulation, fp16 autocast
//! with loss scaling on CUDA, per-epoch validation, checkpoints, resume, cancel and non-finite guards.

mod graphs;

use super::augment;
use super::checkpoint::{self, EpochProgress, EpochRecord, ModelMeta, TrainState, FORMAT};
use super::config::{LrSchedule, ModelKind, StopMetric, TrainConfig};
use super::data::{DeviceSet, HostSet};
use super::mixed::{self, AutocastCacheOff, Mixed};
use super::model::Model;
use crate::control::CancelFlag;
use crate::cuda_graph::SideStream;
use crate::dataset::rng::SplitMix64;
use crate::device::{device_name, parse_device};
use crate::error::{catch_panic, Error, Result};
use crate::metrics::{classification_metrics, Metrics};
use crate::optim::{Adam, LossScaler};
use graphs::{graph_obstacle, GraphMode, GRAPH_WARMUP_WINDOWS};
use schemars::JsonSchema;
use serde::Serialize;
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, Tensor};

pub use super::mixed::Precision;

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
    /// The settings this job ran with, every default filled in (what `config.json` records).
    pub config: TrainConfig,
}

pub struct Sets<'a> {
    pub train: &'a HostSet,
    pub val: Option<&'a HostSet>,
    pub test: Option<&'a HostSet>,
}

/// Trains one model: validates the sets, builds or resumes the model, runs the epochs, and scores the
/// best weights on the validation and test sets.
pub fn train(
    config: &TrainConfig,
    sets: Sets,
    cancel: &CancelFlag,
    emit: &mut dyn FnMut(TrainEvent),
) -> Result<TrainResult> {
    config.validate()?;
    let config = &config.resolved();
    let _cache = crate::cpu_cache::JobCache::enter();
    let _turn = crate::job_turn();
    let mut trainer = Trainer::new(config, sets, emit)?;
    trainer.announce(emit);
    while trainer.state.epoch < config.epochs() && !trainer.state.finished {
        trainer.run_epoch(cancel, emit)?;
        trainer.end_epoch(emit)?;
    }
    trainer.finish()
}

/// Batch-norm running statistics move in every forward pass; a window whose gradients turn out
/// non-finite restores them from the snapshot taken at its start, so the kept model stays usable.
struct BufferSnapshot {
    live: Vec<Tensor>,
    saved: Vec<Tensor>,
}

impl BufferSnapshot {
    fn new(vs: &VarStore) -> BufferSnapshot {
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| !t.requires_grad()).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let live: Vec<Tensor> = named.into_iter().map(|(_, t)| t).collect();
        let saved = live.iter().map(|t| t.copy()).collect();
        BufferSnapshot { live, saved }
    }

    fn take(&mut self) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for (saved, live) in self.saved.iter_mut().zip(&self.live) {
            saved.f_copy_(live)?;
        }
        Ok(())
    }

    fn restore(&self) -> Result<()> {
        for (live, saved) in self.live.iter().zip(&self.saved) {
            live.shallow_clone().f_copy_(saved)?;
        }
        Ok(())
    }

    /// Restores the snapshot where `found_inf` (0-dim float) is 1, on the device, without a sync.
    fn restore_where(&self, found_inf: &Tensor) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let bad = found_inf.f_gt(0.0)?;
        for (live, saved) in self.live.iter().zip(&self.saved) {
            live.shallow_clone().f_copy_(&saved.f_where_self(&bad, live)?)?;
        }
        Ok(())
    }
}

/// Device-side state of the sync-free window end (`TrainConfig::sync_free`): the non-finite flag and
/// the counters the host reads only at progress events and epoch ends.
struct SyncFree {
    found_inf: Tensor,
    /// 1 / loss scale for the unscale (1 without loss scaling).
    inv_scale: Tensor,
    /// The window's learning rate, read by the update kernel when it runs (a graph replays it).
    lr: Tensor,
    /// fp16's loss scale and growth tracker, moved by `_amp_update_scale_`.
    scale: Option<(Tensor, Tensor)>,
    seen: Tensor,
    windows: Tensor,
    skipped: Tensor,
    /// Consecutive skipped windows.
    bad_run: Tensor,
    /// Skipped windows already reported in a warning this epoch.
    reported: u32,
}

impl SyncFree {
    fn new(device: Device, scaler: &LossScaler) -> Result<SyncFree> {
        let zero = || Tensor::f_zeros([], (Kind::Float, device));
        let scale = if scaler.enabled {
            let s = Tensor::f_full([1], scaler.scale, (Kind::Float, device))?;
            let g = Tensor::f_full([1], scaler.good_steps as i64, (Kind::Int, device))?;
            Some((s, g))
        } else {
            None
        };
        Ok(SyncFree {
            found_inf: zero()?,
            inv_scale: Tensor::f_ones([], (Kind::Float, device))?,
            lr: Adam::lr_tensor(device)?,
            scale,
            seen: zero()?,
            windows: zero()?,
            skipped: zero()?,
            bad_run: zero()?,
            reported: 0,
        })
    }
}

/// Device-side sums of the epoch in progress: nothing syncs with the host per step. Updated in place,
/// and kept for the whole job, so captured CUDA graphs keep adding into the same tensors.
struct EpochSums {
    /// The accumulation window in progress (added to the epoch only when its step is finite).
    window_loss: Tensor,
    window_correct: Tensor,
    window_seen: usize,
    loss: Tensor,
    correct: Tensor,
}

impl EpochSums {
    fn new(device: Device) -> Result<EpochSums> {
        let zero = || Tensor::f_zeros([], (Kind::Float, device));
        Ok(EpochSums { window_loss: zero()?, window_correct: zero()?, window_seen: 0, loss: zero()?, correct: zero()? })
    }

    /// Zeroes the window's device sums (in place: a captured window end does this too).
    fn zero_window(&mut self) -> Result<()> {
        let _ = self.window_loss.f_zero_()?;
        let _ = self.window_correct.f_zero_()?;
        Ok(())
    }

    fn clear_window(&mut self) -> Result<()> {
        self.window_seen = 0;
        self.zero_window()
    }

    fn zero(&mut self) -> Result<()> {
        let _ = self.loss.f_zero_()?;
        let _ = self.correct.f_zero_()?;
        self.clear_window()
    }
}

/// One training job's model, optimiser, data on the device and resumable state.
struct Trainer<'a> {
    /// Graph mode: the job's CUDA work runs on a side stream (declared first, so it is dropped first:
    /// its work is waited for before the graphs and tensors below are freed).
    side_stream: Option<SideStream>,
    _autocast_cache: Option<AutocastCacheOff>,
    graph: GraphMode,
    graphed_windows: u64,
    /// The device-side sums, made once per job (see `EpochSums`).
    sums: Option<EpochSums>,
    config: &'a TrainConfig,
    kind: ModelKind,
    device: Device,
    mixed: Mixed,
    channels_last: bool,
    threads: usize,
    vs: VarStore,
    model: Model,
    adam: Adam,
    buffers: BufferSnapshot,
    /// Everything a resume needs (saved with every `last` checkpoint).
    state: TrainState,
    class_weights: Option<Tensor>,
    train_set: DeviceSet,
    val_set: Option<DeviceSet>,
    test_set: Option<DeviceSet>,
    steps_per_epoch: usize,
    total_opt_steps: f64,
    started: Instant,
    micro_steps: usize,
    consecutive_bad: u32,
    total_skipped: u32,
    stopped_early: bool,
    sync_free: Option<SyncFree>,
}

impl<'a> Trainer<'a> {
    fn new(config: &'a TrainConfig, sets: Sets, emit: &mut dyn FnMut(TrainEvent)) -> Result<Trainer<'a>> {
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
        let device = parse_device(&config.device)?;
        let threads = match (config.threads, kind) {
            (0, ModelKind::Encoder) => 1,
            (0, _) => std::thread::available_parallelism().map_or(1, |n| n.get()),
            (n, _) => n,
        };
        // Process-global in libtorch; jobs take turns (`job_turn`), so each sets its own.
        tch::set_num_threads(threads as i32);
        if let Device::Cuda(_) = device {
            // Process-global in libtorch, like the threads: each job sets its own.
            tch::Cuda::cudnn_set_benchmark(config.cudnn_benchmark);
        }
        let sync_free = config.sync_free.unwrap_or(device.is_cuda());
        // Graph mode runs the whole job on a side stream (capture cannot use the default stream), so
        // it is entered before the job's first allocation on the device.
        let mut warn = |message: String| emit(TrainEvent::Warning { model: kind, message });
        let side_stream = match (config.cuda_graph, graph_obstacle(config, kind, device, sync_free), device) {
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
        };

        let resumed = match (&config.checkpoint_dir, config.resume) {
            (Some(dir), true) => checkpoint::load_state(dir)?,
            _ => None,
        };
        if let Some(state) = &resumed {
            if state.config.model != config.model || state.config.labels != config.labels {
                return Err(Error::invalid("resume", "the checkpoint was trained with another model or label set"));
            }
        }
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

        let mut vs = VarStore::new(device);
        let model = {
            let _turn = crate::generator_turn();
            tch::manual_seed(config.seed as i64);
            Model::build(&vs.root(), config)
        };
        let mut params = vs.trainable_variables();
        let channels_last = mixed::channels_last(config.memory_format, kind);
        if channels_last {
            model.use_channels_last(&mut params)?;
        }
        let mut adam = Adam::new(params, config.optim.clone())?;
        let buffers = BufferSnapshot::new(&vs);
        let mut state = TrainState {
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
        };
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

    fn announce(&mut self, emit: &mut dyn FnMut(TrainEvent)) {
        emit(TrainEvent::Start {
            model: self.kind,
            device: device_name(self.device),
            precision: self.mixed.precision,
            epochs: self.config.epochs(),
            steps_per_epoch: self.steps_per_epoch,
            resumed_from_epoch: (self.state.epoch > 0 || self.state.next_batch > 0).then_some(self.state.epoch),
        });
        self.started = Instant::now();
    }

    fn meta(&self, val: Option<Metrics>) -> ModelMeta {
        ModelMeta {
            format: FORMAT.into(),
            config: self.config.clone(),
            norm: self.state.norm,
            epoch: self.state.epoch,
            val,
        }
    }

    fn lr(&self) -> f64 {
        lr_at(self.config, self.adam.step as f64, self.total_opt_steps)
    }

    /// The sync-free schedule's position: windows before the one starting at micro-batch `b`.
    fn lr_at_window(&self, b: usize) -> f64 {
        let per_epoch = self.steps_per_epoch.div_ceil(self.config.accumulation);
        let window = self.state.epoch as usize * per_epoch + b / self.config.accumulation;
        lr_at(self.config, window as f64, self.total_opt_steps)
    }

    /// An out-of-memory error says which batch size ran out and how to keep the effective batch.
    fn oom_context(&self, e: Error) -> Error {
        match e {
            Error::OutOfMemory { device, reason } => Error::OutOfMemory {
                device,
                reason: format!(
                    "{reason} (batch size {}); lower batchSize and raise accumulation to keep the effective batch",
                    self.config.batch_size
                ),
            },
            other => other,
        }
    }

    /// Saves the resumable checkpoint (when there is a checkpoint folder) and says so.
    fn save_last(&self, val: Option<Metrics>, epoch: u32, emit: &mut dyn FnMut(TrainEvent)) -> Result<()> {
        if let Some(dir) = &self.config.checkpoint_dir {
            let path = checkpoint::save_resumable(dir, &self.vs, &self.adam, &self.state, &self.meta(val))?;
            emit(TrainEvent::Checkpoint {
                model: self.kind,
                kind: CheckpointKind::Last,
                path: path.display().to_string(),
                epoch,
            });
        }
        Ok(())
    }

    /// The micro-batches of the epoch in progress, from `state.next_batch` (a resume starts mid-epoch).
    fn run_epoch(&mut self, cancel: &CancelFlag, emit: &mut dyn FnMut(TrainEvent)) -> Result<()> {
        let config = self.config;
        let epoch = self.state.epoch;
        if self.state.next_batch == 0 {
            emit(TrainEvent::EpochStart { model: self.kind, epoch: epoch + 1, epochs: config.epochs() });
        }
        let order = Tensor::from_slice(&epoch_order(config.seed, epoch, self.train_set.len)).to_device(self.device);
        let clock = Instant::now();
        let mut last_event = Instant::now();
        let mut sums = match self.sums.take() {
            Some(sums) => sums,
            None => EpochSums::new(self.device)?,
        };
        sums.zero()?;
        let mut b = self.state.next_batch;
        while b < self.steps_per_epoch {
            let window_start = b - b % config.accumulation;
            let window_len = config.accumulation.min(self.steps_per_epoch - window_start);
            let mut graphed = None;
            if b == window_start {
                if cancel.is_cancelled() {
                    return self.stop_cancelled(b, &sums, clock, emit);
                }
                self.buffers.take()?;
                if self.graphs_ready(window_start, window_len, &mut sums, emit)? {
                    graphed = Some(self.replay_window(window_start, &order)?);
                    b += window_len;
                }
            }
            let loss = match graphed {
                Some(loss) => loss,
                None => {
                    let loss = self.micro_step(b, &order, window_len, &mut sums)?;
                    b += 1;
                    if b == window_start + window_len {
                        if self.sync_free.is_some() {
                            self.end_window_on_device(window_start, &mut sums)?;
                        } else {
                            self.end_window(b, &mut sums, clock, emit)?;
                        }
                    }
                    loss
                }
            };
            let window_done = b == window_start + window_len;
            if window_done && last_event.elapsed().as_millis() as u64 >= config.progress_interval_ms {
                last_event = Instant::now();
                self.check_skipped(b, &mut sums, clock, emit)?;
                emit(TrainEvent::Step {
                    model: self.kind,
                    epoch: epoch + 1,
                    step: b,
                    steps: self.steps_per_epoch,
                    loss: loss.f_double_value(&[])?,
                });
            }
        }
        self.check_skipped(b, &mut sums, clock, emit)?;
        self.flush(&sums, clock)?;
        self.sums = Some(sums);
        Ok(())
    }

    /// Adds the epoch's device-side sums (and, sync-free, counters, step count and loss scale) to the
    /// host-side state: one sync.
    fn flush(&mut self, sums: &EpochSums, clock: Instant) -> Result<()> {
        if let Some(sf) = &mut self.sync_free {
            let p = &mut self.state.progress;
            p.seen += sf.seen.f_double_value(&[])?.round() as usize;
            p.windows += sf.windows.f_double_value(&[])?.round() as usize;
            let skipped = sf.skipped.f_double_value(&[])?.round() as u32;
            p.skipped += skipped;
            self.total_skipped += skipped;
            for t in [&sf.seen, &sf.windows, &sf.skipped] {
                let _ = t.shallow_clone().f_zero_()?;
            }
            sf.reported = 0;
            if let Some((scale, growth)) = &sf.scale {
                self.state.scaler.scale = scale.f_double_value(&[0])?;
                self.state.scaler.good_steps = growth.f_int64_value(&[0])? as u32;
            }
            self.adam.sync_step()?;
        }
        flush_progress(&mut self.state.progress, &sums.loss, &sums.correct, clock.elapsed().as_secs_f64())
    }

    /// Non-finite windows in a row before `NON_FINITE`: fp16 recovers by lowering the loss scale (at
    /// least 30 tries); in fp32/bf16 repeated failures mean divergence.
    fn non_finite_limit(&self) -> u32 {
        let limit = self.config.max_non_finite_steps;
        if self.mixed.scales_loss() {
            limit.max(30)
        } else {
            limit
        }
    }

    /// Sync-free only: warns about windows skipped since the last report and stops with `NON_FINITE`
    /// after too many in a row (checked here, at progress events and epoch ends: one sync each).
    fn check_skipped(
        &mut self,
        b: usize,
        sums: &mut EpochSums,
        clock: Instant,
        emit: &mut dyn FnMut(TrainEvent),
    ) -> Result<()> {
        let Some(sf) = &mut self.sync_free else { return Ok(()) };
        let skipped = sf.skipped.f_double_value(&[])?.round() as u32;
        let bad_run = sf.bad_run.f_double_value(&[])?.round() as u32;
        if skipped > sf.reported {
            let what = if self.mixed.scales_loss() { "fp16 overflow" } else { "NaN or infinite loss/gradients" };
            emit(TrainEvent::Warning {
                model: self.kind,
                message: format!(
                    "epoch {} up to step {b}: {} optimiser step(s) skipped ({what})",
                    self.state.epoch + 1,
                    skipped - sf.reported
                ),
            });
            sf.reported = skipped;
        }
        self.consecutive_bad = bad_run;
        if bad_run < self.non_finite_limit() {
            return Ok(());
        }
        self.stop_non_finite(b, sums, clock)
    }

    /// Forward and backward of micro-batch `b`; returns its (unscaled, mean) loss.
    fn micro_step(&mut self, b: usize, order: &Tensor, window_len: usize, sums: &mut EpochSums) -> Result<Tensor> {
        let config = self.config;
        let bs = config.batch_size;
        let lo = (b * bs) as i64;
        let hi = ((b + 1) * bs).min(self.train_set.len) as i64;
        let index = order.f_narrow(0, lo, hi - lo)?;
        let loss = {
            let _turn = crate::generator_turn();
            // A seed per micro-batch makes dropout identical after a resume at any step.
            tch::manual_seed(step_seed(config.seed, self.state.epoch, b) as i64);
            self.micro_compute(&index, window_len, sums)?
        };
        sums.window_seen += (hi - lo) as usize;
        self.micro_steps += 1;
        Ok(loss)
    }

    /// The device work of a micro-batch (what a graph captures: no host sync, sums added in place):
    /// augmentation, forward, loss, backward into the gradients, the window's loss and hit sums.
    fn micro_compute(&mut self, index: &Tensor, window_len: usize, sums: &mut EpochSums) -> Result<Tensor> {
        let config = self.config;
        let n = index.size()[0];
        let mut batch = self.train_set.batch(index)?;
        let labels = batch.labels.shallow_clone();
        let augment = config.augment.as_ref();
        if let (Some(m), Some(o)) = (&batch.mel, augment.and_then(|a| a.spec_augment.as_ref())) {
            batch.mel = Some(augment::spec_augment(m, o)?);
        }
        let mix = augment.and_then(|a| a.mixup).map(|alpha| augment::draw_mix(alpha, n, self.device)).transpose()?;
        if let Some(mix) = &mix {
            batch.mel = batch.mel.as_ref().map(|m| mix.inputs(m)).transpose()?;
            batch.embedding = batch.embedding.as_ref().map(|e| mix.inputs(e)).transpose()?;
        }
        let (model, mixed) = (&self.model, self.mixed);
        // Model ops panic on libtorch errors (tch's non-`f_` API): catch here to add the batch size to an OOM.
        let (logits, speakers) = catch_panic(|| {
            let (logits, speakers) = mixed.forward(|| model.logits_with_adversary(&batch, true));
            Ok((logits.f_to_kind(Kind::Float)?, speakers.map(|s| s.f_to_kind(Kind::Float)).transpose()?))
        })
        .map_err(|e| self.oom_context(e))?;
        // Mixup: the loss of the mixed input against both targets, weighted as the inputs were.
        let loss_of = |logits: &Tensor, target: &Tensor, weights: Option<&Tensor>, smoothing: f64| -> Result<Tensor> {
            let ce = |t: &Tensor| logits.f_cross_entropy_loss(t, weights, Reduction::Mean, -100, smoothing);
            Ok(match &mix {
                Some(mix) => ce(target)?
                    .f_mul_scalar(mix.lambda)?
                    .f_add(&ce(&target.f_index_select(0, &mix.perm)?)?.f_mul_scalar(1.0 - mix.lambda)?)?,
                None => ce(target)?,
            })
        };
        let loss = loss_of(&logits, &labels, self.class_weights.as_ref(), config.smoothing())?;
        // The speaker adversary's loss trains its classifier; its reversed gradient, the head.
        let objective = match (&speakers, &batch.speaker_ids) {
            (Some(s), Some(ids)) => loss.f_add(&loss_of(s, ids, None, 0.0)?)?,
            _ => loss.shallow_clone(),
        };
        let per_window = objective.f_div_scalar(window_len as f64)?;
        let scaled = match self.sync_free.as_ref().and_then(|s| s.scale.as_ref()) {
            Some((scale, _)) => per_window.f_mul(&scale.f_to_kind(per_window.kind())?.f_squeeze()?)?,
            None => self.state.scaler.scale_loss(&per_window)?,
        };
        scaled.f_backward().map_err(Error::from).map_err(|e| self.oom_context(e))?;
        let _guard = tch::no_grad_guard();
        let _ = sums.window_loss.f_add_(&loss.detach().f_mul_scalar(n as f64)?)?;
        let _ = sums.window_correct.f_add_(&logits.f_argmax(1, false)?.f_eq_tensor(&labels)?.f_sum(Kind::Float)?)?;
        Ok(loss)
    }

    /// The optimiser step that closes an accumulation window, or its rollback when the gradients are
    /// not finite; stops with `NON_FINITE` after too many bad windows in a row.
    fn end_window(
        &mut self,
        b: usize,
        sums: &mut EpochSums,
        clock: Instant,
        emit: &mut dyn FnMut(TrainEvent),
    ) -> Result<()> {
        let finite = self.state.scaler.unscale_and_check(&self.adam.grads())?;
        if finite {
            self.adam.step(self.lr())?;
            let _ = sums.loss.f_add_(&sums.window_loss)?;
            let _ = sums.correct.f_add_(&sums.window_correct)?;
            self.state.progress.seen += sums.window_seen;
            self.state.progress.windows += 1;
            self.consecutive_bad = 0;
        } else {
            self.buffers.restore()?;
            self.state.progress.skipped += 1;
            self.total_skipped += 1;
            self.consecutive_bad += 1;
            let what = if self.mixed.scales_loss() {
                format!("fp16 overflow at loss scale {}", self.state.scaler.scale)
            } else {
                "NaN or infinite loss/gradients".into()
            };
            emit(TrainEvent::Warning {
                model: self.kind,
                message: format!("epoch {} step {b}: {what}; optimiser step skipped", self.state.epoch + 1),
            });
        }
        self.state.scaler.update(finite);
        self.adam.zero_grad();
        sums.clear_window()?;
        if self.consecutive_bad < self.non_finite_limit() {
            return Ok(());
        }
        self.stop_non_finite(b, sums, clock)
    }

    /// Saves where to go on from and stops with `NON_FINITE` (too many non-finite windows in a row).
    fn stop_non_finite(&mut self, b: usize, sums: &mut EpochSums, clock: Instant) -> Result<()> {
        let config = self.config;
        self.state.next_batch = b;
        self.flush(sums, clock)?;
        if let Some(dir) = &config.checkpoint_dir {
            checkpoint::save_resumable(dir, &self.vs, &self.adam, &self.state, &self.meta(None))?;
        }
        Err(Error::NonFinite(format!(
            "{} model: {} optimiser steps in a row had NaN or infinite gradients (epoch {}, lr {}); \
             weights from the last good step are kept{}. Lower optim.lr or check the inputs",
            self.kind.name(),
            self.consecutive_bad,
            self.state.epoch + 1,
            config.optim.lr,
            config.checkpoint_dir.as_ref().map(|d| format!(" in {}", d.display())).unwrap_or_default()
        )))
    }

    /// The sync-free window end: unscale, check, update or skip, roll batch norm back, count and move
    /// the loss scale, all on the device (`TrainConfig::sync_free`).
    fn end_window_on_device(&mut self, window_start: usize, sums: &mut EpochSums) -> Result<()> {
        let lr = self.lr_at_window(window_start);
        let _ = self.sync_free.as_mut().expect("sync-free state").lr.f_fill_(lr)?;
        self.window_compute(sums.window_seen as f64, sums)?;
        sums.window_seen = 0;
        Ok(())
    }

    /// The device work of the sync-free window end (what a graph captures: everything in place, the
    /// learning rate read from `SyncFree::lr`); `seen` is the window's clip count.
    fn window_compute(&mut self, seen: f64, sums: &mut EpochSums) -> Result<()> {
        let sf = self.sync_free.as_mut().expect("sync-free state");
        let _guard = tch::no_grad_guard();
        let _ = sf.found_inf.f_zero_()?;
        if let Some((scale, _)) = &sf.scale {
            sf.inv_scale.f_copy_(&scale.f_reciprocal()?.f_squeeze()?)?;
        }
        self.adam.masked_step(&sf.lr, &sf.found_inf, &sf.inv_scale)?;
        self.buffers.restore_where(&sf.found_inf)?;
        let ok = sf.found_inf.f_neg()?.f_add_scalar(1.0)?;
        let _ = sums.loss.f_add_(&sums.window_loss.f_mul(&ok)?)?;
        let _ = sums.correct.f_add_(&sums.window_correct.f_mul(&ok)?)?;
        let _ = sf.seen.f_add_(&ok.f_mul_scalar(seen)?)?;
        let _ = sf.windows.f_add_(&ok)?;
        let _ = sf.skipped.f_add_(&sf.found_inf)?;
        let _ = sf.bad_run.f_add_(&sf.found_inf)?;
        let _ = sf.bad_run.f_mul_(&sf.found_inf)?;
        if let Some((scale, growth)) = &mut sf.scale {
            let interval = self.state.scaler.growth_interval as i64;
            let found = sf.found_inf.f_reshape([1])?;
            let _ = scale.f_internal_amp_update_scale_(growth, &found, 2.0, 0.5, interval)?;
        }
        // In place, not set to none: a captured micro-batch accumulates into the same memory.
        self.adam.zero_grad_in_place();
        sums.zero_window()
    }

    /// Cancelled at the start of a window: save where to go on from, then stop with `CANCELLED`.
    fn stop_cancelled(
        &mut self,
        b: usize,
        sums: &EpochSums,
        clock: Instant,
        emit: &mut dyn FnMut(TrainEvent),
    ) -> Result<()> {
        self.flush(sums, clock)?;
        self.state.next_batch = b;
        self.save_last(None, self.state.epoch + 1, emit)?;
        Err(Error::Cancelled)
    }

    /// Validation, the epoch's record, the best checkpoint, early stopping and the resumable checkpoint.
    fn end_epoch(&mut self, emit: &mut dyn FnMut(TrainEvent)) -> Result<()> {
        let config = self.config;
        let p = std::mem::take(&mut self.state.progress);
        let val = self.evaluate_on(self.val_set.as_ref())?;
        let record = EpochRecord {
            epoch: self.state.epoch + 1,
            train_loss: if p.seen > 0 { p.loss_sum / p.seen as f64 } else { f64::NAN },
            train_accuracy: if p.seen > 0 { p.correct / p.seen as f64 } else { 0.0 },
            val_loss: val.as_ref().map(|(l, _)| *l),
            val_accuracy: val.as_ref().map(|(_, m)| m.accuracy),
            val_f1: val.as_ref().map(|(_, m)| m.weighted_f1),
            lr: self.lr(),
            seconds: p.seconds,
            skipped_steps: p.skipped,
        };
        self.state.history.push(record.clone());
        emit(TrainEvent::EpochEnd { model: self.kind, record: record.clone(), epochs: config.epochs() });
        self.state.epoch += 1;
        self.state.next_batch = 0;

        let score = best_score(config, &record);
        if improves(score, self.state.best_value) {
            self.state.best_value = score.map(|(s, _)| s);
            self.state.best_epoch = Some(record.epoch);
            self.state.epochs_without_improvement = 0;
            if let Some(dir) = &config.checkpoint_dir {
                let meta = self.meta(val.as_ref().map(|(_, m)| m.clone()));
                let path = checkpoint::save_model(dir, "best", &self.vs, &meta)?;
                emit(TrainEvent::Checkpoint {
                    model: self.kind,
                    kind: CheckpointKind::Best,
                    path: path.display().to_string(),
                    epoch: record.epoch,
                });
            }
        } else {
            self.state.epochs_without_improvement += 1;
        }
        if let Some(es) = &config.early_stopping {
            if self.state.epochs_without_improvement >= es.patience && self.val_set.is_some() {
                self.stopped_early = true;
                self.state.finished = true;
            }
        }
        if self.state.epoch == config.epochs() {
            self.state.finished = true;
        }
        self.save_last(val.map(|(_, m)| m), record.epoch, emit)
    }

    fn evaluate_on(&self, set: Option<&DeviceSet>) -> Result<Option<(f64, Metrics)>> {
        set.map(|s| evaluate(&self.model, s, self.class_weights.as_ref(), self.config)).transpose()
    }

    /// Scores the best checkpoint's weights (when there is one) and builds the result.
    fn finish(mut self) -> Result<TrainResult> {
        let config = self.config;
        if let (Some(dir), Some(_)) = (&config.checkpoint_dir, self.state.best_epoch) {
            if dir.join("best.safetensors").exists() {
                self.vs.load(dir.join("best.safetensors"))?;
            }
        }
        let val = self.evaluate_on(self.val_set.as_ref())?.map(|(_, m)| m);
        let test = self.evaluate_on(self.test_set.as_ref())?.map(|(_, m)| m);
        // Waits for the side stream's work here, so its errors surface (a drop would swallow them).
        self.side_stream.take().map(SideStream::exit).transpose()?;
        let seconds = self.started.elapsed().as_secs_f64();
        Ok(TrainResult {
            model: self.kind,
            labels: config.labels.clone(),
            device: device_name(self.device),
            precision: self.mixed.precision,
            channels_last: self.channels_last,
            threads: self.threads as u32,
            history: self.state.history,
            best_epoch: self.state.best_epoch,
            val,
            test,
            checkpoint_dir: config.checkpoint_dir.as_ref().map(|d| d.display().to_string()),
            seconds,
            optimizer_steps: self.adam.step,
            micro_steps_per_second: self.micro_steps as f64 / seconds.max(1e-9),
            skipped_steps: self.total_skipped,
            stopped_early: self.stopped_early,
            graphed_windows: self.graphed_windows,
            config: config.clone(),
        })
    }
}

/// The epoch's score for choosing the best model, and whether higher is better: the early-stopping
/// metric, else validation weighted F1; `None` without a validation set (then the last epoch is best).
fn best_score(config: &TrainConfig, record: &EpochRecord) -> Option<(f64, bool)> {
    match &config.early_stopping {
        Some(es) => match es.metric {
            StopMetric::ValLoss => record.val_loss.map(|v| (v, false)),
            StopMetric::ValAccuracy => record.val_accuracy.map(|v| (v, true)),
            StopMetric::ValF1 => record.val_f1.map(|v| (v, true)),
        },
        None => record.val_f1.map(|v| (v, true)),
    }
}

fn improves(score: Option<(f64, bool)>, best: Option<f64>) -> bool {
    match (score, best) {
        (Some((s, true)), Some(best)) => s > best,
        (Some((s, false)), Some(best)) => s < best,
        (Some(_), None) | (None, _) => true,
    }
}

/// Adds the device-side epoch sums to the host-side progress (one sync).
fn flush_progress(progress: &mut EpochProgress, loss: &Tensor, correct: &Tensor, seconds: f64) -> Result<()> {
    progress.loss_sum += loss.f_double_value(&[])?;
    progress.correct += correct.f_double_value(&[])?;
    progress.seconds += seconds;
    Ok(())
}

/// The shuffled order of epoch `epoch` (independent of batch size, so accumulation can be compared).
pub fn epoch_order(seed: u64, epoch: u32, n: usize) -> Vec<i64> {
    let mut order: Vec<i64> = (0..n as i64).collect();
    SplitMix64::new(seed ^ (0x5EED_0000_0000 + epoch as u64)).shuffle(&mut order);
    order
}

fn step_seed(seed: u64, epoch: u32, batch: usize) -> u64 {
    SplitMix64::new(seed.wrapping_mul(1_000_003) ^ ((epoch as u64) << 32) ^ batch as u64).next_u64() >> 1
}

fn lr_at(config: &TrainConfig, step: f64, total: f64) -> f64 {
    match config.schedule() {
        LrSchedule::Constant => config.optim.lr,
        LrSchedule::Cosine => {
            config.optim.lr * 0.5 * (1.0 + (std::f64::consts::PI * (step / total.max(1.0)).min(1.0)).cos())
        }
    }
}

/// Loss and metrics of `set` in inference mode.
pub fn evaluate(
    model: &Model,
    set: &DeviceSet,
    weights: Option<&Tensor>,
    config: &TrainConfig,
) -> Result<(f64, Metrics)> {
    let (logits, labels) = predict_logits(model, set)?;
    let loss =
        logits.f_cross_entropy_loss(&labels, weights, Reduction::Mean, -100, config.smoothing())?.f_double_value(&[])?;
    let predicted: Vec<i64> = Vec::<i64>::try_from(logits.f_argmax(1, false)?.f_to_device(Device::Cpu)?)?;
    let truth: Vec<i64> = Vec::<i64>::try_from(labels.f_to_device(Device::Cpu)?)?;
    Ok((loss, classification_metrics(&truth, &predicted, &config.labels)))
}

pub fn predict_logits(model: &Model, set: &DeviceSet) -> Result<(Tensor, Tensor)> {
    let _guard = tch::no_grad_guard();
    let device = set.labels.device();
    let mut outs = Vec::new();
    let chunk = 256usize;
    for lo in (0..set.len).step_by(chunk) {
        let n = chunk.min(set.len - lo) as i64;
        let index = Tensor::f_arange_start(lo as i64, lo as i64 + n, (Kind::Int64, device))?;
        outs.push(model.logits(&set.batch(&index)?, false).f_to_kind(Kind::Float)?);
    }
    Ok((Tensor::f_cat(&outs, 0)?, set.labels.shallow_clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::AudioCnnConfig;
    use crate::train::config::Preset;

    /// Where each tensor a captured CUDA graph reads or writes lives (its data pointer).
    fn graph_addresses(t: &Trainer) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for (i, g) in t.adam.grads().iter().enumerate() {
            out.push((format!("grad {i}"), g.data_ptr() as usize));
        }
        let sums = t.sums.as_ref().expect("sums after an epoch");
        for (name, x) in [
            ("window loss", &sums.window_loss),
            ("window correct", &sums.window_correct),
            ("loss", &sums.loss),
            ("correct", &sums.correct),
        ] {
            out.push((name.into(), x.data_ptr() as usize));
        }
        let sf = t.sync_free.as_ref().expect("sync-free");
        for (name, x) in [
            ("found_inf", &sf.found_inf),
            ("inv_scale", &sf.inv_scale),
            ("lr", &sf.lr),
            ("seen", &sf.seen),
            ("windows", &sf.windows),
            ("skipped", &sf.skipped),
            ("bad run", &sf.bad_run),
        ] {
            out.push((name.into(), x.data_ptr() as usize));
        }
        for (i, (live, saved)) in t.buffers.live.iter().zip(&t.buffers.saved).enumerate() {
            out.push((format!("buffer {i}"), live.data_ptr() as usize));
            out.push((format!("saved {i}"), saved.data_ptr() as usize));
        }
        out
    }

    /// The prerequisite of graph replay that the CPU can check: the sync-free path updates every
    /// tensor a captured micro-batch or window end touches in place, across windows and epochs (a
    /// tensor re-made between replays would leave the graph reading stale memory).
    #[test]
    fn the_sync_free_step_keeps_every_tensor_a_graph_touches_at_one_address() {
        let _turn = crate::rng_turn();
        let (n, m, t) = (24usize, 8usize, 16usize);
        let mel: Vec<f32> = (0..n * m * t).map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 45.0).collect();
        let set = HostSet {
            mel: Some((mel, [n, m, t])),
            tokens: None,
            embedding: None,
            labels: (0..n as i64).map(|i| i % 3).collect(),
            speaker_ids: None,
        };
        let config = TrainConfig {
            preset: Preset::Reference,
            labels: vec!["a".into(), "b".into(), "c".into()],
            audio: AudioCnnConfig { channels: vec![4, 8], hidden: vec![8], ..AudioCnnConfig::default() },
            epochs: Some(3),
            batch_size: 4,
            accumulation: 2,
            device: "cpu".into(),
            sync_free: Some(true),
            ..TrainConfig::default()
        }
        .resolved();
        let mut emit = |_: TrainEvent| {};
        let mut trainer = Trainer::new(&config, Sets { train: &set, val: None, test: None }, &mut emit).unwrap();
        let cancel = CancelFlag::new();
        trainer.run_epoch(&cancel, &mut emit).unwrap();
        trainer.end_epoch(&mut emit).unwrap();
        let first = graph_addresses(&trainer);
        assert!(first.iter().filter(|(name, _)| name.starts_with("grad")).count() >= 4, "{first:?}");
        for _ in 0..2 {
            trainer.run_epoch(&cancel, &mut emit).unwrap();
            trainer.end_epoch(&mut emit).unwrap();
            assert_eq!(graph_addresses(&trainer), first);
        }
    }
}
