//! The training loop: seeded shuffles, device-resident batches, gradient accumulation, fp16 autocast
//! with loss scaling on CUDA, per-epoch validation, checkpoints, resume, cancel and non-finite guards.
//! The job's start is `setup`, the end of an accumulation window (synced, sync-free, CUDA graph) is
//! `window` and `graphs`, the schedule and evaluation are `schedule`.

mod data_parallel;
mod events;
mod graphs;
mod schedule;
mod setup;
mod window;

use super::augment;
use super::checkpoint::{self, EpochRecord, ModelMeta, TrainState, FORMAT};
use super::config::{ModelKind, TrainConfig};
use super::data::DeviceSet;
use super::kinds::Net;
use super::mixed::{AutocastCacheOff, Mixed};
use super::settings::Job;
use crate::control::CancelFlag;
use crate::cuda_graph::SideStream;
use crate::device::device_name;
use crate::distributed::sync_bn::SyncScope;
use crate::distributed::World;
use crate::error::{catch_panic, Error, Result};
use crate::metrics::Metrics;
use crate::optim::Adam;
use data_parallel::DataParallel;
use data_parallel::GlobalBatch;
use graphs::GraphMode;
use schedule::{best_score, flush_progress, improves, lr_at, step_seed};
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, Tensor};
use window::{BufferSnapshot, EpochSums, SyncFree};

pub use super::mixed::Precision;
pub use events::{CheckpointKind, DataParallelStats, Sets, TrainEvent, TrainResult};
pub use schedule::{epoch_order, evaluate, predict_logits};

/// Trains one model: validates the sets, builds or resumes the model, runs the epochs, and scores the
/// best weights on the validation and test sets.
pub fn train(
    config: &TrainConfig,
    sets: Sets,
    cancel: &CancelFlag,
    emit: &mut dyn FnMut(TrainEvent),
) -> Result<TrainResult> {
    train_in(config, sets, None, cancel, emit)
}

/// [`train`] as one rank of a data-parallel job in `world` (every rank calls it with the same
/// options and sets; docs/DISTRIBUTED.md), or alone with `None`.
pub fn train_in(
    config: &TrainConfig,
    sets: Sets,
    world: Option<&World>,
    cancel: &CancelFlag,
    emit: &mut dyn FnMut(TrainEvent),
) -> Result<TrainResult> {
    let world = world.filter(|w| w.options.world_size > 1);
    let result = (|| {
        // Each rank on a GPU of its own (cuda:LOCAL_RANK) unless the options name one.
        let ranked;
        let config = match world {
            Some(w) => {
                let device = crate::device::rank_device(&config.device, w.options.local_rank)?;
                // The machine's cores shared by its ranks, unless OMP_NUM_THREADS or `threads` says.
                let shared = config.threads == 0
                    && config.model.kind().default_threads().is_none()
                    && std::env::var_os("OMP_NUM_THREADS").is_none();
                let threads =
                    if shared { (crate::cores() / w.options.local_world_size).max(1) } else { config.threads };
                ranked = TrainConfig { device, threads, ..config.clone() };
                &ranked
            }
            None => config,
        };
        let job = Job::new(config, sets.train)?;
        let _cache = crate::cpu_cache::JobCache::enter();
        let _turn = crate::job_turn();
        let mut trainer = Trainer::new(&job, sets, world, emit)?;
        trainer.announce(emit);
        while trainer.state.epoch < job.training.epochs && !trainer.state.finished {
            trainer.run_epoch(cancel, emit)?;
            trainer.end_epoch(emit)?;
        }
        trainer.finish(job.resolved_options(config))
    })();
    if let (Some(world), Err(e)) = (world, &result) {
        // The other ranks stop waiting for this one at once (they name it); a stop all ranks agreed
        // on is no failure.
        if !matches!(e, Error::Cancelled) {
            world.fail(&e.to_string());
        }
    }
    result
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
    job: &'a Job,
    kind: ModelKind,
    device: Device,
    mixed: Mixed,
    channels_last: bool,
    threads: usize,
    vs: VarStore,
    model: Box<dyn Net>,
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
    /// A data-parallel job's group, buckets and agreed stop; `None` alone.
    dp: Option<DataParallel<'a>>,
}

impl<'a> Trainer<'a> {
    fn announce(&mut self, emit: &mut dyn FnMut(TrainEvent)) {
        emit(TrainEvent::Start {
            model: self.kind,
            device: device_name(self.device),
            precision: self.mixed.precision,
            epochs: self.job.training.epochs,
            steps_per_epoch: self.steps_per_epoch,
            resumed_from_epoch: (self.state.epoch > 0 || self.state.next_batch > 0).then_some(self.state.epoch),
        });
        self.started = Instant::now();
    }

    fn meta(&self, val: Option<Metrics>) -> ModelMeta {
        ModelMeta {
            format: FORMAT.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            spec: self.state.spec.clone(),
            training: self.job.training.clone(),
            epoch: self.state.epoch,
            val,
        }
    }

    fn lr(&self) -> f64 {
        lr_at(&self.job.training, self.adam.step as f64, self.total_opt_steps)
    }

    /// The sync-free schedule's position: windows before the one starting at micro-batch `b`.
    fn lr_at_window(&self, b: usize) -> f64 {
        let per_epoch = self.steps_per_epoch.div_ceil(self.job.training.accumulation);
        let window = self.state.epoch as usize * per_epoch + b / self.job.training.accumulation;
        lr_at(&self.job.training, window as f64, self.total_opt_steps)
    }

    /// An out-of-memory error says which batch size ran out and how to keep the effective batch.
    fn oom_context(&self, e: Error) -> Error {
        match e {
            Error::OutOfMemory { device, reason } => Error::OutOfMemory {
                device,
                reason: format!(
                    "{reason} (batch size {}); lower batchSize and raise accumulation to keep the effective batch",
                    self.job.training.batch_size
                ),
            },
            other => other,
        }
    }

    /// Saves the resumable checkpoint (when there is a checkpoint folder) and says so.
    fn save_last(&self, val: Option<Metrics>, epoch: u32, emit: &mut dyn FnMut(TrainEvent)) -> Result<()> {
        if let Some(dir) = self.checkpoint_dir() {
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
        let config = self.job;
        let epoch = self.state.epoch;
        if self.state.next_batch == 0 {
            emit(TrainEvent::EpochStart { model: self.kind, epoch: epoch + 1, epochs: config.training.epochs });
        }
        let order =
            Tensor::from_slice(&epoch_order(config.training.seed, epoch, self.train_set.len)).to_device(self.device);
        let clock = Instant::now();
        let mut last_event = Instant::now();
        let mut sums = match self.sums.take() {
            Some(sums) => sums,
            None => EpochSums::new(self.device)?,
        };
        sums.zero()?;
        let mut b = self.state.next_batch;
        while b < self.steps_per_epoch {
            let window_start = b - b % config.training.accumulation;
            let window_len = config.training.accumulation.min(self.steps_per_epoch - window_start);
            let mut graphed = None;
            if b == window_start {
                if self.stop_now(cancel) {
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
            if window_done && last_event.elapsed().as_millis() as u64 >= config.run.progress_interval_ms {
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
        if self.dp.is_some() {
            return self.flush_reduced(sums, clock);
        }
        flush_progress(&mut self.state.progress, &sums.loss, &sums.correct, clock.elapsed().as_secs_f64())
    }

    /// Forward and backward of micro-batch `b`; returns its (unscaled, mean) loss.
    fn micro_step(&mut self, b: usize, order: &Tensor, window_len: usize, sums: &mut EpochSums) -> Result<Tensor> {
        let config = self.job;
        let bs = config.training.batch_size;
        let (lo, hi, global) = match &self.dp {
            Some(dp) => {
                let shard = dp.shard(b, bs, self.train_set.len);
                let global = self.global_batch(order, &shard)?;
                // No rows here: the global batch's first row stands in (see `GlobalBatch::padding`).
                let (lo, hi) =
                    if global.padding { (shard.global_lo, shard.global_lo + 1) } else { (shard.lo, shard.hi) };
                (lo as i64, hi as i64, Some(global))
            }
            None => ((b * bs) as i64, ((b + 1) * bs).min(self.train_set.len) as i64, None),
        };
        let index = order.f_narrow(0, lo, hi - lo)?;
        let loss = {
            let _turn = crate::generator_turn();
            // A seed per micro-batch makes dropout identical after a resume at any step.
            let rank = self.dp.as_ref().map_or(0, |dp| dp.rank() as u64);
            tch::manual_seed(
                step_seed(config.training.seed ^ rank.wrapping_mul(0x9E37_79B9), self.state.epoch, b) as i64
            );
            let loss = self.micro_compute(&index, window_len, global.as_ref(), sums);
            match &self.dp {
                Some(dp) => loss.map_err(|e| dp.collective_error(e))?,
                None => loss?,
            }
        };
        self.micro_steps += 1;
        match global {
            Some(g) if g.padding => Ok(loss),
            Some(g) => {
                sums.window_seen += (hi - lo) as usize;
                // Shown in progress: this rank's mean (its share of the global batch's, rescaled).
                Ok(loss.f_mul_scalar(g.count as f64 / (hi - lo) as f64)?)
            }
            None => {
                sums.window_seen += (hi - lo) as usize;
                Ok(loss)
            }
        }
    }

    /// The device work of a micro-batch (what a graph captures: no host sync, sums added in place):
    /// augmentation, forward, loss, backward into the gradients, the window's loss and hit sums.
    fn micro_compute(
        &mut self,
        index: &Tensor,
        window_len: usize,
        global: Option<&GlobalBatch>,
        sums: &mut EpochSums,
    ) -> Result<Tensor> {
        let config = self.job;
        let n = index.size()[0];
        let mut batch = self.train_set.batch(index)?;
        let labels = batch.labels.shallow_clone();
        let augment = &config.training.augment;
        if let (Some(m), Some(o)) = (&batch.mel, augment.spec_augment.as_ref()) {
            batch.mel = Some(augment::spec_augment(m, o)?);
        }
        let mix = augment.mixup.map(|alpha| augment::draw_mix(alpha, n, self.device)).transpose()?;
        if let Some(mix) = &mix {
            batch.mel = batch.mel.as_ref().map(|m| mix.inputs(m)).transpose()?;
            batch.embedding = batch.embedding.as_ref().map(|e| mix.inputs(e)).transpose()?;
        }
        let (model, mixed) = (&self.model, self.mixed);
        let padding = global.is_some_and(|g| g.padding);
        let _scope = self.dp.as_ref().map(|dp| SyncScope::enter(&dp.group, dp.sync_batch_norm, padding));
        // Model ops panic on libtorch errors (tch's non-`f_` API): catch here to add the batch size to an OOM.
        let (logits, speakers) = catch_panic(|| {
            let out = mixed.forward(|| model.forward(&batch, true));
            let (logits, speakers) = (out.logits, out.speakers);
            Ok((logits.f_to_kind(Kind::Float)?, speakers.map(|s| s.f_to_kind(Kind::Float)).transpose()?))
        })
        .map_err(|e| self.oom_context(e))?;
        // Mixup: the loss of the mixed input against both targets, weighted as the inputs were.
        // Data-parallel: this rank's sum over the global batch's count (or class-weight sum), so the
        // ranks' gradients add up to the whole batch's mean.
        let loss_of = |logits: &Tensor, target: &Tensor, weights: Option<&Tensor>, smoothing: f64| -> Result<Tensor> {
            let ce = |t: &Tensor| match global {
                Some(g) => logits
                    .f_cross_entropy_loss(t, weights, Reduction::Sum, -100, smoothing)?
                    .f_div(if weights.is_some() { &g.weight_sum } else { &g.rows }),
                None => logits.f_cross_entropy_loss(t, weights, Reduction::Mean, -100, smoothing),
            };
            Ok(match &mix {
                Some(mix) => ce(target)?
                    .f_mul_scalar(mix.lambda)?
                    .f_add(&ce(&target.f_index_select(0, &mix.perm)?)?.f_mul_scalar(1.0 - mix.lambda)?)?,
                None => ce(target)?,
            })
        };
        let loss = loss_of(&logits, &labels, self.class_weights.as_ref(), config.training.label_smoothing)?;
        // The speaker adversary's loss trains its classifier; its reversed gradient, the head.
        let objective = match (&speakers, &batch.speaker_ids) {
            (Some(s), Some(ids)) => loss.f_add(&loss_of(s, ids, None, 0.0)?)?,
            _ => loss.shallow_clone(),
        };
        let weight = if padding { 0.0 } else { 1.0 };
        let per_window = objective.f_div_scalar(window_len as f64)?.f_mul_scalar(weight)?;
        let scaled = match self.sync_free.as_ref().and_then(|s| s.scale.as_ref()) {
            Some((scale, _)) => per_window.f_mul(&scale.f_to_kind(per_window.kind())?.f_squeeze()?)?,
            None => self.state.scaler.scale_loss(&per_window)?,
        };
        scaled.f_backward().map_err(Error::from).map_err(|e| self.oom_context(e))?;
        let _guard = tch::no_grad_guard();
        let rows = global.map_or(n as f64, |g| g.count as f64);
        let _ = sums.window_loss.f_add_(&loss.detach().f_mul_scalar(rows * weight)?)?;
        let hits = logits.f_argmax(1, false)?.f_eq_tensor(&labels)?.f_sum(Kind::Float)?;
        let _ = sums.window_correct.f_add_(&hits.f_mul_scalar(weight)?)?;
        Ok(loss)
    }

    /// Validation, the epoch's record, the best checkpoint, early stopping and the resumable checkpoint.
    fn end_epoch(&mut self, emit: &mut dyn FnMut(TrainEvent)) -> Result<()> {
        let config = self.job;
        let p = std::mem::take(&mut self.state.progress);
        self.share_buffers()?;
        let val = self.evaluate_on(self.val_set.as_ref())?;
        let val = match &self.dp {
            Some(dp) => dp.agree_on(val)?,
            None => val,
        };
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
        emit(TrainEvent::EpochEnd { model: self.kind, record: record.clone(), epochs: config.training.epochs });
        self.state.epoch += 1;
        self.state.next_batch = 0;

        let score = best_score(&config.training, &record);
        if improves(score, self.state.best_value) {
            self.state.best_value = score.map(|(s, _)| s);
            self.state.best_epoch = Some(record.epoch);
            self.state.epochs_without_improvement = 0;
            if let Some(dir) = self.checkpoint_dir() {
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
        if let Some(es) = &config.training.early_stopping {
            if self.state.epochs_without_improvement >= es.patience && self.val_set.is_some() {
                self.stopped_early = true;
                self.state.finished = true;
            }
        }
        if self.state.epoch == config.training.epochs {
            self.state.finished = true;
        }
        self.save_last(val.map(|(_, m)| m), record.epoch, emit)
    }

    fn evaluate_on(&self, set: Option<&DeviceSet>) -> Result<Option<(f64, Metrics)>> {
        set.map(|s| {
            evaluate(self.model.as_ref(), s, self.class_weights.as_ref(), &self.job.training, &self.state.spec.labels)
        })
        .transpose()
    }

    /// Scores the best checkpoint's weights (when there is one) and builds the result.
    fn finish(mut self, resolved_options: TrainConfig) -> Result<TrainResult> {
        let config = self.job;
        if let (Some(dir), Some(_)) = (self.checkpoint_dir(), self.state.best_epoch) {
            if dir.join("best.safetensors").exists() {
                self.vs.load(dir.join("best.safetensors"))?;
            }
        }
        // Every rank scores rank 0's best weights.
        if let Some(dp) = &self.dp {
            dp.broadcast_vars(&self.vs)?;
        }
        let val = self.evaluate_on(self.val_set.as_ref())?.map(|(_, m)| m);
        let test = self.evaluate_on(self.test_set.as_ref())?.map(|(_, m)| m);
        // Waits for the side stream's work here, so its errors surface (a drop would swallow them).
        self.side_stream.take().map(SideStream::exit).transpose()?;
        let seconds = self.started.elapsed().as_secs_f64();
        Ok(TrainResult {
            model: self.kind,
            labels: config.spec.labels.clone(),
            device: device_name(self.device),
            precision: self.mixed.precision,
            channels_last: self.channels_last,
            threads: self.threads as u32,
            history: self.state.history,
            best_epoch: self.state.best_epoch,
            val,
            test,
            checkpoint_dir: config.run.checkpoint_dir.as_ref().map(|d| d.display().to_string()),
            seconds,
            optimizer_steps: self.adam.step,
            micro_steps_per_second: self.micro_steps as f64 / seconds.max(1e-9),
            skipped_steps: self.total_skipped,
            stopped_early: self.stopped_early,
            graphed_windows: self.graphed_windows,
            data_parallel: self.dp.as_ref().map(|dp| dp.stats()),
            config: resolved_options,
            spec: self.state.spec,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::AudioCnnConfig;
    use crate::train::config::Preset;
    use crate::train::data::HostSet;

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
        };
        let job = Job::new(&config, &set).unwrap();
        let mut emit = |_: TrainEvent| {};
        let mut trainer = Trainer::new(&job, Sets { train: &set, val: None, test: None }, None, &mut emit).unwrap();
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
