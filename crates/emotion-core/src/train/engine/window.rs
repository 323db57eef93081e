//! The end of an accumulation window, in its modes: synced with the host (`end_window`: check, step
//! or skip), sync-free on the device (`end_window_on_device`, whose `window_compute` is what a CUDA graph
//! captures), and the two stops (too many non-finite windows, cancelled); with the device-side state
//! they keep (`SyncFree`, `EpochSums`) and the batch-norm snapshot a skipped window rolls back to.

use super::{TrainEvent, Trainer};
use crate::error::{Error, Result};
use crate::optim::{Adam, LossScaler};
use crate::train::checkpoint;
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// Batch-norm running statistics move in every forward pass; a window whose gradients turn out
/// non-finite restores them from the snapshot taken at its start, so the kept model stays usable.
pub(super) struct BufferSnapshot {
    pub(super) live: Vec<Tensor>,
    pub(super) saved: Vec<Tensor>,
}

impl BufferSnapshot {
    pub(super) fn new(vs: &VarStore) -> BufferSnapshot {
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| !t.requires_grad()).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let live: Vec<Tensor> = named.into_iter().map(|(_, t)| t).collect();
        let saved = live.iter().map(|t| t.copy()).collect();
        BufferSnapshot { live, saved }
    }

    pub(super) fn take(&mut self) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for (saved, live) in self.saved.iter_mut().zip(&self.live) {
            saved.f_copy_(live)?;
        }
        Ok(())
    }

    pub(super) fn restore(&self) -> Result<()> {
        for (live, saved) in self.live.iter().zip(&self.saved) {
            live.shallow_clone().f_copy_(saved)?;
        }
        Ok(())
    }

    /// Restores the snapshot where `found_inf` (0-dim float) is 1, on the device, without a sync.
    pub(super) fn restore_where(&self, found_inf: &Tensor) -> Result<()> {
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
pub(super) struct SyncFree {
    pub(super) found_inf: Tensor,
    /// 1 / loss scale for the unscale (1 without loss scaling).
    pub(super) inv_scale: Tensor,
    /// The window's learning rate, read by the update kernel when it runs (a graph replays it).
    pub(super) lr: Tensor,
    /// fp16's loss scale and growth tracker, moved by `_amp_update_scale_`.
    pub(super) scale: Option<(Tensor, Tensor)>,
    pub(super) seen: Tensor,
    pub(super) windows: Tensor,
    pub(super) skipped: Tensor,
    /// Consecutive skipped windows.
    pub(super) bad_run: Tensor,
    /// Skipped windows already reported in a warning this epoch.
    pub(super) reported: u32,
}

impl SyncFree {
    pub(super) fn new(device: Device, scaler: &LossScaler) -> Result<SyncFree> {
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
pub(super) struct EpochSums {
    /// The accumulation window in progress (added to the epoch only when its step is finite).
    pub(super) window_loss: Tensor,
    pub(super) window_correct: Tensor,
    pub(super) window_seen: usize,
    pub(super) loss: Tensor,
    pub(super) correct: Tensor,
}

impl EpochSums {
    pub(super) fn new(device: Device) -> Result<EpochSums> {
        let zero = || Tensor::f_zeros([], (Kind::Float, device));
        Ok(EpochSums { window_loss: zero()?, window_correct: zero()?, window_seen: 0, loss: zero()?, correct: zero()? })
    }

    /// Zeroes the window's device sums (in place: a captured window end does this too).
    pub(super) fn zero_window(&mut self) -> Result<()> {
        let _ = self.window_loss.f_zero_()?;
        let _ = self.window_correct.f_zero_()?;
        Ok(())
    }

    pub(super) fn clear_window(&mut self) -> Result<()> {
        self.window_seen = 0;
        self.zero_window()
    }

    pub(super) fn zero(&mut self) -> Result<()> {
        let _ = self.loss.f_zero_()?;
        let _ = self.correct.f_zero_()?;
        self.clear_window()
    }
}

impl Trainer<'_> {
    /// Non-finite windows in a row before `NON_FINITE`: fp16 recovers by lowering the loss scale (at
    /// least 30 tries); in fp32/bf16 repeated failures mean divergence.
    pub(super) fn non_finite_limit(&self) -> u32 {
        let limit = self.job.run.max_non_finite_steps;
        if self.mixed.scales_loss() {
            limit.max(30)
        } else {
            limit
        }
    }

    /// Sync-free only: warns about windows skipped since the last report and stops with `NON_FINITE`
    /// after too many in a row (checked here, at progress events and epoch ends: one sync each).
    pub(super) fn check_skipped(
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

    /// The optimiser step that closes an accumulation window, or its rollback when the gradients are
    /// not finite; stops with `NON_FINITE` after too many bad windows in a row.
    pub(super) fn end_window(
        &mut self,
        b: usize,
        sums: &mut EpochSums,
        clock: Instant,
        emit: &mut dyn FnMut(TrainEvent),
    ) -> Result<()> {
        if let Some(dp) = &mut self.dp {
            dp.reduce_gradients(self.adam.params())?;
        }
        let finite = self.state.scaler.unscale_and_check(&self.adam.grads())?;
        if finite {
            self.adam.step(self.lr())?;
            if let Some(dp) = &self.dp {
                dp.check(self.adam.params(), self.adam.step)?;
            }
            let _ = sums.loss.f_add_(&sums.window_loss)?;
            let _ = sums.correct.f_add_(&sums.window_correct)?;
            match &mut self.dp {
                Some(dp) => dp.unreduced_seen += sums.window_seen,
                None => self.state.progress.seen += sums.window_seen,
            }
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
    pub(super) fn stop_non_finite(&mut self, b: usize, sums: &mut EpochSums, clock: Instant) -> Result<()> {
        let config = self.job;
        self.state.next_batch = b;
        self.flush(sums, clock)?;
        if let Some(dir) = self.checkpoint_dir() {
            checkpoint::save_resumable(dir, &self.vs, &self.adam, &self.state, &self.meta(None))?;
        }
        Err(Error::NonFinite(format!(
            "{} model: {} optimiser steps in a row had NaN or infinite gradients (epoch {}, lr {}); \
             weights from the last good step are kept{}. Lower optim.lr or check the inputs",
            self.kind.name(),
            self.consecutive_bad,
            self.state.epoch + 1,
            config.training.optim.lr,
            config.run.checkpoint_dir.as_ref().map(|d| format!(" in {}", d.display())).unwrap_or_default()
        )))
    }

    /// The sync-free window end: unscale, check, update or skip, roll batch norm back, count and move
    /// the loss scale, all on the device (`TrainConfig::sync_free`).
    pub(super) fn end_window_on_device(&mut self, window_start: usize, sums: &mut EpochSums) -> Result<()> {
        let lr = self.lr_at_window(window_start);
        let _ = self.sync_free.as_mut().expect("sync-free state").lr.f_fill_(lr)?;
        self.window_compute(sums.window_seen as f64, sums)?;
        sums.window_seen = 0;
        Ok(())
    }

    /// The device work of the sync-free window end (what a graph captures: everything in place, the
    /// learning rate read from `SyncFree::lr`); `seen` is the window's clip count.
    pub(super) fn window_compute(&mut self, seen: f64, sums: &mut EpochSums) -> Result<()> {
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
    pub(super) fn stop_cancelled(
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
}
