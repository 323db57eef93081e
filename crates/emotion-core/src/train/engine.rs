//! The training loop: seeded shuffles, device-resident batches, gradient accumulation, fp16 autocast
//! with loss scaling on CUDA, per-epoch validation, checkpoints, resume, cancel and non-finite guards.

use super::checkpoint::{self, EpochProgress, EpochRecord, ModelMeta, TrainState, FORMAT};
use super::config::{Amp, LrSchedule, ModelKind, StopMetric, TrainConfig};
use super::data::{DeviceSet, HostSet};
use super::model::Model;
use crate::control::CancelFlag;
use crate::dataset::rng::SplitMix64;
use crate::device::{device_name, parse_device};
use crate::error::{catch_panic, Error, Result};
use crate::metrics::{classification_metrics, Metrics};
use crate::optim::{Adam, LossScaler};
use schemars::JsonSchema;
use serde::Serialize;
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, Tensor};

/// The precision a job trains in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// fp16 autocast with loss scaling (CUDA).
    Fp16,
    /// bf16 autocast, no loss scaling.
    Bf16,
    Fp32,
}

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
    /// The settings this job ran with, every default filled in (what `config.json` records).
    pub config: TrainConfig,
}

pub struct Sets<'a> {
    pub train: &'a HostSet,
    pub val: Option<&'a HostSet>,
    pub test: Option<&'a HostSet>,
}

extern "C" {
    fn emotion_set_cuda_autocast_bf16(bf16: std::os::raw::c_int);
    fn emotion_cuda_autocast_is_bf16() -> std::os::raw::c_int;
}

/// Chooses bf16 (no loss scaling needed) or fp16 for CUDA autocast regions (csrc/autocast.cpp).
fn set_cuda_autocast_bf16(bf16: bool) {
    // SAFETY: sets one thread-local/global dtype in libtorch; no pointers cross.
    unsafe { emotion_set_cuda_autocast_bf16(bf16 as std::os::raw::c_int) }
}

/// Whether CUDA autocast regions currently run in bf16.
pub fn cuda_autocast_is_bf16() -> bool {
    // SAFETY: reads one dtype from libtorch.
    unsafe { emotion_cuda_autocast_is_bf16() != 0 }
}

/// libtorch's random generator is process-global (dropout, init): training jobs in one process take
/// turns so each stays reproducible.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn train(
    config: &TrainConfig,
    sets: Sets,
    cancel: &CancelFlag,
    emit: &mut dyn FnMut(TrainEvent),
) -> Result<TrainResult> {
    config.validate()?;
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let kind = config.model;
    let name = kind.name();
    let needs_mel = kind != super::config::ModelKind::Text;
    let needs_tokens = kind != super::config::ModelKind::Audio;
    let classes = config.labels.len();
    sets.train.validate("train", classes, needs_mel, needs_tokens, config.vocab_size)?;
    if let Some(v) = sets.val {
        v.validate("val", classes, needs_mel, needs_tokens, config.vocab_size)?;
    }
    if let Some(t) = sets.test {
        t.validate("test", classes, needs_mel, needs_tokens, config.vocab_size)?;
    }
    let device = parse_device(&config.device)?;
    // `autocast`: a CUDA autocast region (fp16 or bf16); `fp16`: it is fp16, so losses are scaled.
    let (autocast, fp16, precision) = match (config.amp, device) {
        (Amp::Off, _) => (false, false, Precision::Fp32),
        (amp, Device::Cpu) => {
            let what = match amp {
                Amp::Fp16 => "amp 'fp16' needs CUDA",
                Amp::Bf16 => "amp 'bf16' needs CUDA",
                _ => "mixed precision is CUDA-only",
            };
            emit(TrainEvent::Warning { model: kind, message: format!("{what}: training in fp32 on the CPU") });
            (false, false, Precision::Fp32)
        }
        (Amp::Bf16, _) => (true, false, Precision::Bf16),
        _ => (true, true, Precision::Fp16),
    };
    if autocast {
        // Global libtorch state: set for every job (jobs take turns, see ONE_AT_A_TIME).
        set_cuda_autocast_bf16(!fp16);
    }
    if let Device::Cuda(_) = device {
        tch::Cuda::cudnn_set_benchmark(true);
    }

    let resumed = match (&config.checkpoint_dir, config.resume) {
        (Some(dir), true) => checkpoint::load_state(dir)?,
        _ => None,
    };
    if let Some(state) = &resumed {
        if state.config.model != config.model || state.config.labels != config.labels {
            return Err(Error::invalid("resume", "the checkpoint was trained with another model or label set"));
        }
    }
    let norm = resumed.as_ref().map(|s| s.norm).unwrap_or_else(|| sets.train.mel_stats());
    let train_set = sets.train.to_device(device, norm)?;
    let val_set = sets.val.map(|s| s.to_device(device, norm)).transpose()?;
    let test_set = sets.test.map(|s| s.to_device(device, norm)).transpose()?;

    tch::manual_seed(config.seed as i64);
    let mut vs = VarStore::new(device);
    let model = Model::build(&vs.root(), config);
    let mut adam = Adam::new(vs.trainable_variables(), config.optim.clone())?;
    // Batch-norm running statistics move in every forward pass; a window whose gradients turn out
    // non-finite restores them from this snapshot so the kept model stays usable.
    let buffers: Vec<Tensor> = {
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| !t.requires_grad()).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named.into_iter().map(|(_, t)| t).collect()
    };
    let mut buffer_snapshot: Vec<Tensor> = buffers.iter().map(|t| t.copy()).collect();
    let mut state = TrainState {
        format: FORMAT.into(),
        config: config.clone(),
        norm,
        epoch: 0,
        next_batch: 0,
        progress: EpochProgress::default(),
        history: Vec::new(),
        best_epoch: None,
        best_value: None,
        epochs_without_improvement: 0,
        scaler: LossScaler::new(fp16),
        finished: false,
        parts: None,
    };
    if let (Some(saved), Some(dir)) = (resumed, &config.checkpoint_dir) {
        checkpoint::load_resumable(dir, &saved, &mut vs, &mut adam)?;
        state = TrainState { config: config.clone(), ..saved };
    }
    let class_weights =
        config.class_weights.as_ref().map(|w| Tensor::from_slice(w).to_kind(Kind::Float).to_device(device));

    let bs = config.batch_size;
    let steps_per_epoch = train_set.len.div_ceil(bs);
    let total_opt_steps = (config.epochs as usize * steps_per_epoch.div_ceil(config.accumulation)) as f64;
    emit(TrainEvent::Start {
        model: kind,
        device: device_name(device),
        precision,
        epochs: config.epochs,
        steps_per_epoch,
        resumed_from_epoch: (state.epoch > 0 || state.next_batch > 0).then_some(state.epoch),
    });
    let started = Instant::now();
    let mut micro_steps = 0usize;
    let mut consecutive_bad = 0u32;
    let mut total_skipped = 0u32;
    let mut stopped_early = false;
    let meta = |state: &TrainState, val: Option<Metrics>| ModelMeta {
        format: FORMAT.into(),
        config: config.clone(),
        norm: state.norm,
        epoch: state.epoch,
        val,
    };
    let oom_context = |e: Error| match e {
        Error::OutOfMemory { device, reason } => Error::OutOfMemory {
            device,
            reason: format!(
                "{reason} (batch size {bs}); lower batchSize and raise accumulation to keep the effective batch"
            ),
        },
        other => other,
    };

    while state.epoch < config.epochs && !state.finished {
        let epoch = state.epoch;
        if state.next_batch == 0 {
            emit(TrainEvent::EpochStart { model: kind, epoch: epoch + 1, epochs: config.epochs });
        }
        let order = epoch_order(config.seed, epoch, train_set.len);
        let order = Tensor::from_slice(&order).to_device(device);
        let epoch_clock = Instant::now();
        let mut last_event = Instant::now();
        // Device-side sums for this epoch's windows that turned out finite: no sync per step.
        let mut window_loss = Tensor::zeros([], (Kind::Float, device));
        let mut window_correct = Tensor::zeros([], (Kind::Float, device));
        let mut epoch_loss = Tensor::zeros([], (Kind::Float, device));
        let mut epoch_correct = Tensor::zeros([], (Kind::Float, device));
        let mut window_seen = 0usize;

        let mut b = state.next_batch;
        while b < steps_per_epoch {
            let window_start = b - b % config.accumulation;
            let window_len = config.accumulation.min(steps_per_epoch - window_start);
            if b == window_start && cancel.is_cancelled() {
                flush_progress(&mut state.progress, &epoch_loss, &epoch_correct, epoch_clock.elapsed().as_secs_f64())?;
                state.next_batch = b;
                if let Some(dir) = &config.checkpoint_dir {
                    let path = checkpoint::save_resumable(dir, &vs, &adam, &state, &meta(&state, None))?;
                    emit(TrainEvent::Checkpoint {
                        model: kind,
                        kind: CheckpointKind::Last,
                        path: path.display().to_string(),
                        epoch: epoch + 1,
                    });
                }
                return Err(Error::Cancelled);
            }
            if b == window_start {
                let _guard = tch::no_grad_guard();
                for (saved, live) in buffer_snapshot.iter_mut().zip(&buffers) {
                    saved.f_copy_(live)?;
                }
            }
            // A seed per micro-batch makes dropout identical after a resume at any step.
            tch::manual_seed(step_seed(config.seed, epoch, b) as i64);
            let lo = (b * bs) as i64;
            let hi = ((b + 1) * bs).min(train_set.len) as i64;
            let index = order.f_narrow(0, lo, hi - lo)?;
            let (mel, tokens, labels) = train_set.batch(&index)?;
            // Model ops panic on libtorch errors (tch's non-`f_` API): catch here to add the batch size to an OOM.
            let logits = catch_panic(|| {
                let forward = || model.logits(mel.as_ref(), tokens.as_ref(), true);
                Ok(if autocast { tch::autocast(true, forward) } else { forward() }.f_to_kind(Kind::Float)?)
            })
            .map_err(oom_context)?;
            let loss = logits.f_cross_entropy_loss(
                &labels,
                class_weights.as_ref(),
                Reduction::Mean,
                -100,
                config.label_smoothing,
            )?;
            state
                .scaler
                .scale_loss(&loss.f_div_scalar(window_len as f64)?)?
                .f_backward()
                .map_err(Error::from)
                .map_err(oom_context)?;
            let _guard = tch::no_grad_guard();
            let n = (hi - lo) as f64;
            window_loss = window_loss.f_add(&loss.detach().f_mul_scalar(n)?)?;
            window_correct =
                window_correct.f_add(&logits.f_argmax(1, false)?.f_eq_tensor(&labels)?.f_sum(Kind::Float)?)?;
            window_seen += (hi - lo) as usize;
            micro_steps += 1;
            b += 1;

            if b == window_start + window_len {
                let finite = state.scaler.unscale_and_check(&adam.grads())?;
                if finite {
                    adam.step(lr_at(config, adam.step as f64, total_opt_steps))?;
                    epoch_loss = epoch_loss.f_add(&window_loss)?;
                    epoch_correct = epoch_correct.f_add(&window_correct)?;
                    state.progress.seen += window_seen;
                    state.progress.windows += 1;
                    consecutive_bad = 0;
                } else {
                    for (live, saved) in buffers.iter().zip(&buffer_snapshot) {
                        live.shallow_clone().f_copy_(saved)?;
                    }
                    state.progress.skipped += 1;
                    total_skipped += 1;
                    consecutive_bad += 1;
                    let what = if fp16 {
                        format!("fp16 overflow at loss scale {}", state.scaler.scale)
                    } else {
                        "NaN or infinite loss/gradients".into()
                    };
                    emit(TrainEvent::Warning {
                        model: kind,
                        message: format!("epoch {} step {b}: {what}; optimiser step skipped", epoch + 1),
                    });
                }
                state.scaler.update(finite);
                adam.zero_grad();
                window_loss = window_loss.f_zero_()?;
                window_correct = window_correct.f_zero_()?;
                window_seen = 0;
                // fp16 recovers by lowering the scale; in fp32 repeated failures mean divergence.
                let limit = if fp16 { config.max_non_finite_steps.max(30) } else { config.max_non_finite_steps };
                if consecutive_bad >= limit {
                    state.next_batch = b;
                    flush_progress(
                        &mut state.progress,
                        &epoch_loss,
                        &epoch_correct,
                        epoch_clock.elapsed().as_secs_f64(),
                    )?;
                    if let Some(dir) = &config.checkpoint_dir {
                        checkpoint::save_resumable(dir, &vs, &adam, &state, &meta(&state, None))?;
                    }
                    return Err(Error::NonFinite(format!(
                        "{name} model: {consecutive_bad} optimiser steps in a row had NaN or infinite gradients (epoch {}, lr {}); \
                         weights from the last good step are kept{}. Lower optim.lr or check the inputs",
                        epoch + 1,
                        config.optim.lr,
                        config.checkpoint_dir.as_ref().map(|d| format!(" in {}", d.display())).unwrap_or_default()
                    )));
                }
                if last_event.elapsed().as_millis() as u64 >= config.progress_interval_ms {
                    last_event = Instant::now();
                    emit(TrainEvent::Step {
                        model: kind,
                        epoch: epoch + 1,
                        step: b,
                        steps: steps_per_epoch,
                        loss: loss.f_double_value(&[])?,
                    });
                }
            }
        }

        flush_progress(&mut state.progress, &epoch_loss, &epoch_correct, epoch_clock.elapsed().as_secs_f64())?;
        let p = std::mem::take(&mut state.progress);
        let val = val_set.as_ref().map(|v| evaluate(&model, v, class_weights.as_ref(), config)).transpose()?;
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: if p.seen > 0 { p.loss_sum / p.seen as f64 } else { f64::NAN },
            train_accuracy: if p.seen > 0 { p.correct / p.seen as f64 } else { 0.0 },
            val_loss: val.as_ref().map(|(l, _)| *l),
            val_accuracy: val.as_ref().map(|(_, m)| m.accuracy),
            val_f1: val.as_ref().map(|(_, m)| m.weighted_f1),
            lr: lr_at(config, adam.step as f64, total_opt_steps),
            seconds: p.seconds,
            skipped_steps: p.skipped,
        };
        state.history.push(record.clone());
        emit(TrainEvent::EpochEnd { model: kind, record: record.clone(), epochs: config.epochs });
        state.epoch += 1;
        state.next_batch = 0;

        // Best: by the early-stopping metric, else validation weighted F1, else the last epoch.
        let (score, higher_better) = match (&config.early_stopping, &record) {
            (Some(es), r) => match es.metric {
                StopMetric::ValLoss => (r.val_loss, false),
                StopMetric::ValAccuracy => (r.val_accuracy, true),
                StopMetric::ValF1 => (r.val_f1, true),
            },
            (None, r) => (r.val_f1, true),
        };
        let improved = match (score, state.best_value) {
            (Some(s), Some(best)) => {
                if higher_better {
                    s > best
                } else {
                    s < best
                }
            }
            (Some(_), None) => true,
            (None, _) => true,
        };
        if improved {
            state.best_value = score;
            state.best_epoch = Some(record.epoch);
            state.epochs_without_improvement = 0;
            if let Some(dir) = &config.checkpoint_dir {
                let path =
                    checkpoint::save_model(dir, "best", &vs, &meta(&state, val.as_ref().map(|(_, m)| m.clone())))?;
                emit(TrainEvent::Checkpoint {
                    model: kind,
                    kind: CheckpointKind::Best,
                    path: path.display().to_string(),
                    epoch: record.epoch,
                });
            }
        } else {
            state.epochs_without_improvement += 1;
        }
        if let Some(es) = &config.early_stopping {
            if state.epochs_without_improvement >= es.patience && val_set.is_some() {
                stopped_early = true;
                state.finished = true;
            }
        }
        if state.epoch == config.epochs {
            state.finished = true;
        }
        if let Some(dir) = &config.checkpoint_dir {
            let path = checkpoint::save_resumable(dir, &vs, &adam, &state, &meta(&state, val.map(|(_, m)| m)))?;
            emit(TrainEvent::Checkpoint {
                model: kind,
                kind: CheckpointKind::Last,
                path: path.display().to_string(),
                epoch: record.epoch,
            });
        }
    }

    // Report the best checkpoint's scores when there is one.
    if let (Some(dir), Some(_)) = (&config.checkpoint_dir, state.best_epoch) {
        if dir.join("best.safetensors").exists() {
            vs.load(dir.join("best.safetensors"))?;
        }
    }
    let val =
        val_set.as_ref().map(|v| evaluate(&model, v, class_weights.as_ref(), config)).transpose()?.map(|(_, m)| m);
    let test =
        test_set.as_ref().map(|t| evaluate(&model, t, class_weights.as_ref(), config)).transpose()?.map(|(_, m)| m);
    let seconds = started.elapsed().as_secs_f64();
    Ok(TrainResult {
        model: kind,
        labels: config.labels.clone(),
        device: device_name(device),
        precision,
        history: state.history,
        best_epoch: state.best_epoch,
        val,
        test,
        checkpoint_dir: config.checkpoint_dir.as_ref().map(|d| d.display().to_string()),
        seconds,
        optimizer_steps: adam.step,
        micro_steps_per_second: micro_steps as f64 / seconds.max(1e-9),
        skipped_steps: total_skipped,
        stopped_early,
        config: config.clone(),
    })
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
    match config.lr_schedule {
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
    let loss = logits
        .f_cross_entropy_loss(&labels, weights, Reduction::Mean, -100, config.label_smoothing)?
        .f_double_value(&[])?;
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
        let (mel, tokens, _) = set.batch(&index)?;
        outs.push(model.logits(mel.as_ref(), tokens.as_ref(), false).f_to_kind(Kind::Float)?);
    }
    Ok((Tensor::f_cat(&outs, 0)?, set.labels.shallow_clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_autocast_shim_sets_and_reads_the_cuda_autocast_dtype() {
        set_cuda_autocast_bf16(true);
        assert!(cuda_autocast_is_bf16());
        set_cuda_autocast_bf16(false);
        assert!(!cuda_autocast_is_bf16());
    }
}
