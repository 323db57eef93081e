//! Data-parallel training over a c10d process group: each rank takes its slice of every global
//! micro-batch (the single-process batch order, `batchSize` rows per rank), its loss is normalised by
//! the global batch's count (or class-weight sum), and the gradients are summed across ranks at the end
//! of each accumulation window in c10d's buckets (a few flat all-reduces, not one per parameter), so
//! every rank makes the same update as one process with the whole batch would. Rank 0's weights are
//! broadcast at the start; a stop asked on any rank rides on the gradient all-reduce, so all stop at
//! the same window. docs/DISTRIBUTED.md.

use super::events::DataParallelStats;
use super::window::EpochSums;
use super::Trainer;
use crate::control::CancelFlag;
use crate::distributed::group::{self, buckets, Backend, ProcessGroup, ReduceOp};
use crate::distributed::World;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::optim::Adam;
use crate::train::checkpoint::TrainState;
use crate::train::config::DistributedBackend;
use crate::train::settings::RunSettings;
use std::path::PathBuf;
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

pub(super) struct DataParallel<'w> {
    pub(super) world: &'w World,
    pub(super) group: ProcessGroup,
    /// Indices into the trainable parameters, per flat all-reduce.
    buckets: Vec<Vec<usize>>,
    /// Each trainable parameter's name (for `checkReplicas`' message).
    names: Vec<String>,
    pub(super) sync_batch_norm: bool,
    check_replicas: bool,
    /// A rank asked to stop (its cancel flag), as learnt from the last gradient all-reduce.
    pub(super) stop_agreed: bool,
    /// This job's cancel flag, read when the gradients are sent (so a stop lands at the next window).
    pub(super) cancel: Option<CancelFlag>,
    /// This rank's clips in windows not yet summed across ranks (at the next flush).
    pub(super) unreduced_seen: usize,
    /// Gradient all-reduce totals, for the result.
    pub(super) reduce_seconds: f64,
    pub(super) reduced_bytes: u64,
    pub(super) reductions: u64,
}

/// What a rank's loss is normalised by: the global micro-batch's rows, and its class-weight sum
/// (`classWeights`; the rows otherwise), 0-dim on the training device.
pub(super) struct GlobalBatch {
    pub(super) count: usize,
    /// This rank has no rows of this batch (a short last batch): it runs one stand-in row whose loss
    /// weighs nothing and whose batch-norm statistics do not count, so it calls every collective the
    /// others call.
    pub(super) padding: bool,
    pub(super) rows: Tensor,
    pub(super) weight_sum: Tensor,
}

/// This rank's rows of a global micro-batch and the global batch's size.
pub(super) struct Shard {
    pub(super) lo: usize,
    pub(super) hi: usize,
    pub(super) global_lo: usize,
    pub(super) global_rows: usize,
}

impl<'w> DataParallel<'w> {
    /// The group of job number `job` in `world` (see [`World::next`]), training on `device`.
    pub(super) fn new(
        world: &'w World,
        job: u64,
        vs: &VarStore,
        params: &[Tensor],
        run: &RunSettings,
        device: Device,
    ) -> Result<Self> {
        let backend = match (run.distributed_backend, device) {
            (DistributedBackend::Gloo, _) => Backend::Gloo,
            (DistributedBackend::Nccl, _) => Backend::Nccl,
            (DistributedBackend::Auto, Device::Cuda(_)) if group::available(Backend::Nccl).is_ok() => Backend::Nccl,
            (DistributedBackend::Auto, _) => Backend::Gloo,
        };
        // Every rank built its model (a rank that failed is named here, at once, not at Gloo's timeout).
        world.barrier(&format!("train-{job}/ready"))?;
        let group =
            ProcessGroup::new(world, &format!("train-{job}"), backend, device).map_err(|e| explain(world, e))?;
        let (sync_batch_norm, check_replicas) = (run.sync_batch_norm, run.check_replicas);
        let buckets = buckets(params)?;
        let named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        let name_of = |p: &Tensor| named.iter().find(|(_, t)| t.data_ptr() == p.data_ptr()).map(|(n, _)| n.clone());
        let names = params.iter().enumerate().map(|(i, p)| name_of(p).unwrap_or_else(|| format!("#{i}"))).collect();
        Ok(DataParallel {
            world,
            group,
            buckets,
            names,
            sync_batch_norm,
            check_replicas,
            stop_agreed: false,
            cancel: None,
            unreduced_seen: 0,
            reduce_seconds: 0.0,
            reduced_bytes: 0,
            reductions: 0,
        })
    }

    pub(super) fn size(&self) -> usize {
        self.group.size
    }

    pub(super) fn rank(&self) -> usize {
        self.group.rank
    }

    /// Rows of global micro-batch `b` (of `batch` rows per rank over `n` clips) for this rank: the
    /// global batch split as evenly as possible, in rank order (a short last batch leaves the last
    /// ranks fewer rows, possibly none).
    pub(super) fn shard(&self, b: usize, batch: usize, n: usize) -> Shard {
        let global = batch * self.size();
        let global_lo = b * global;
        let global_rows = global.min(n - global_lo);
        // Rounded up, so the first ranks take the rows of a short batch and the last go without.
        let cut = |r: usize| global_lo + (global_rows * r).div_ceil(self.size());
        Shard { lo: cut(self.rank()), hi: cut(self.rank() + 1), global_lo, global_rows }
    }

    /// Replaces every tensor with rank 0's (weights at the start, the best weights at the end).
    pub(super) fn broadcast(&self, tensors: &[Tensor]) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for t in tensors {
            let staged = t.f_to_device(self.group.device)?.f_contiguous()?;
            self.group.broadcast(&staged, 0).map_err(|e| self.explain(e))?;
            t.shallow_clone().f_copy_(&staged)?;
        }
        Ok(())
    }

    /// Every variable of `vs` (by name, so the order is the same on every rank) from rank 0.
    pub(super) fn broadcast_vars(&self, vs: &VarStore) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        self.broadcast(&named.into_iter().map(|(_, t)| t).collect::<Vec<_>>())
    }

    /// Sums the gradients of `params` over the ranks, bucket by bucket (a parameter this rank's
    /// backward did not reach adds zeros). The last bucket also carries this rank's cancel flag and a
    /// has-gradient flag per parameter: afterwards `stop_agreed` says whether any rank asked to stop,
    /// and a parameter no rank has a gradient for keeps none (Adam skips it, as in one process).
    pub(super) fn reduce_gradients(&mut self, params: &[Tensor]) -> Result<()> {
        let started = Instant::now();
        let _guard = tch::no_grad_guard();
        let device = params.first().map_or(Device::Cpu, |p| p.device());
        let stop = self.cancel.as_ref().is_some_and(|c| c.is_cancelled());
        let mut flags: Vec<f32> = params.iter().map(|p| if p.grad().defined() { 1.0 } else { 0.0 }).collect();
        flags.push(if stop { 1.0 } else { 0.0 });
        let mut reduced = Vec::with_capacity(self.buckets.len());
        for (i, bucket) in self.buckets.iter().enumerate() {
            let mut flat: Vec<Tensor> = bucket
                .iter()
                .map(|&p| match params[p].grad() {
                    g if g.defined() => g.f_reshape([-1])?.f_to_kind(Kind::Float),
                    _ => Tensor::f_zeros([params[p].numel() as i64], (Kind::Float, device)),
                })
                .collect::<Result<_, _>>()?;
            if i + 1 == self.buckets.len() {
                flat.push(Tensor::f_from_slice(&flags)?.f_to_device(device)?);
            }
            let buffer = Tensor::f_cat(&flat, 0)?.f_to_device(self.group.device)?;
            self.group.all_reduce(&buffer, ReduceOp::Sum).map_err(|e| self.explain(e))?;
            self.reduced_bytes += (buffer.numel() * 4) as u64;
            reduced.push(buffer);
        }
        let last = reduced.last().expect("at least one bucket");
        let n = flags.len() as i64;
        let seen = Vec::<f32>::try_from(&last.f_narrow(0, last.numel() as i64 - n, n)?.f_to_device(Device::Cpu)?)?;
        for (bucket, buffer) in self.buckets.iter().zip(&reduced) {
            let mut offset = 0i64;
            for &p in bucket {
                let n = params[p].numel() as i64;
                if seen[p] > 0.0 {
                    set_grad(&params[p], &buffer.f_narrow(0, offset, n)?.f_view(params[p].size().as_slice())?)?;
                }
                offset += n;
            }
        }
        self.stop_agreed = seen[params.len()] > 0.0;
        self.reduce_seconds += started.elapsed().as_secs_f64();
        self.reductions += 1;
        Ok(())
    }

    /// Sums host-side figures over the ranks (the epoch's loss, hits and clips).
    pub(super) fn sum(&self, values: &[f64]) -> Result<Vec<f64>> {
        let t = Tensor::f_from_slice(values)?.f_to_device(self.group.device)?;
        self.group.all_reduce(&t, ReduceOp::Sum).map_err(|e| self.explain(e))?;
        Ok(Vec::<f64>::try_from(&t.f_to_device(Device::Cpu)?)?)
    }

    /// With `checkReplicas`: stops when the ranks' parameters differ after optimiser step `step`.
    pub(super) fn check(&self, params: &[Tensor], step: i64) -> Result<()> {
        if !self.check_replicas {
            return Ok(());
        }
        let mut prints = Vec::with_capacity(params.len() * 2);
        for p in params {
            let p = p.f_to_kind(Kind::Double)?;
            prints.push(p.f_sum(Kind::Double)?.f_double_value(&[])?);
            prints.push(p.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?);
        }
        let staged = || Tensor::f_from_slice(&prints)?.f_to_device(self.group.device);
        let (high, low) = (staged()?, staged()?);
        self.group.all_reduce(&high, ReduceOp::Max).map_err(|e| self.explain(e))?;
        self.group.all_reduce(&low, ReduceOp::Min).map_err(|e| self.explain(e))?;
        let host = |t: Tensor| -> Result<Vec<f64>> { Ok(Vec::<f64>::try_from(&t.f_to_device(Device::Cpu)?)?) };
        let (high, low) = (host(high)?, host(low)?);
        if let Some(i) = (0..prints.len()).find(|&i| high[i] != low[i]) {
            return Err(Error::Distributed(format!(
                "checkReplicas: parameter `{}` differs across ranks after optimiser step {step} ({} vs {})",
                self.names[i / 2],
                low[i],
                high[i]
            )));
        }
        Ok(())
    }

    /// An error of a data-parallel forward or backward: a collective there (batch norm's statistics or
    /// their gradient) failed inside libtorch, so it comes back as a libtorch error naming Gloo.
    pub(super) fn collective_error(&self, e: Error) -> Error {
        match e {
            Error::Torch { message, .. } if message.contains("gloo") || message.contains("c10d") => {
                self.explain(Error::Distributed(message))
            }
            Error::Distributed(_) => self.explain(e),
            other => other,
        }
    }

    /// A failed collective, named by rank where the store knows (see [`explain`]).
    pub(super) fn explain(&self, e: Error) -> Error {
        explain(self.world, e)
    }

    /// Rank 0's validation loss, accuracy and weighted F1 for every rank (the ranks' own evaluations
    /// of the same weights may differ in the last bits), so every rank makes the same best-epoch and
    /// early-stopping decisions.
    pub(super) fn agree_on(&self, val: Option<(f64, Metrics)>) -> Result<Option<(f64, Metrics)>> {
        let Some((loss, mut metrics)) = val else { return Ok(None) };
        let figures = Tensor::f_from_slice(&[loss, metrics.accuracy, metrics.weighted_f1])?;
        self.broadcast(std::slice::from_ref(&figures))?;
        let [loss, accuracy, f1] = <[f64; 3]>::try_from(Vec::<f64>::try_from(&figures)?)
            .map_err(|_| Error::Internal("three validation figures".into()))?;
        metrics.accuracy = accuracy;
        metrics.weighted_f1 = f1;
        Ok(Some((loss, metrics)))
    }
}

/// A failed collective or rendezvous, with the rank behind it when the store knows (a failure report
/// or a silent heartbeat): c10d's own message names only an address.
fn explain(world: &World, e: Error) -> Error {
    match e {
        Error::Distributed(message) => match world.culprit() {
            Some(Error::Distributed(who)) => Error::Distributed(format!("{who} (c10d: {message})")),
            _ => Error::Distributed(message),
        },
        other => other,
    }
}

impl Trainer<'_> {
    /// The normaliser of the global micro-batch `shard` belongs to (no host sync: the class-weight
    /// sum stays on the device).
    pub(super) fn global_batch(&self, order: &Tensor, shard: &Shard) -> Result<GlobalBatch> {
        let rows = Tensor::f_full([], shard.global_rows as f64, (Kind::Float, self.device))?;
        let weight_sum = match &self.class_weights {
            Some(w) => {
                let index = order.f_narrow(0, shard.global_lo as i64, shard.global_rows as i64)?;
                w.f_index_select(0, &self.train_set.labels.f_index_select(0, &index)?)?.f_sum(Kind::Float)?
            }
            None => rows.shallow_clone(),
        };
        Ok(GlobalBatch { count: shard.global_rows, padding: shard.lo == shard.hi, rows, weight_sum })
    }

    /// Whether to stop at this window's start: this process's cancel flag alone, or, data-parallel,
    /// whether any rank's flag was up at the last window (so every rank stops at the same one).
    pub(super) fn stop_now(&mut self, cancel: &CancelFlag) -> bool {
        match &mut self.dp {
            None => cancel.is_cancelled(),
            Some(dp) => {
                dp.cancel.get_or_insert_with(|| cancel.clone());
                dp.stop_agreed
            }
        }
    }

    /// Where this rank writes checkpoints: the job's folder on rank 0 (or alone), nowhere on the others.
    pub(super) fn checkpoint_dir(&self) -> Option<&PathBuf> {
        match &self.dp {
            Some(dp) if dp.rank() != 0 => None,
            _ => self.job.run.checkpoint_dir.as_ref(),
        }
    }

    /// The epoch's sums over every rank's clips: loss, hits and clips (one all-reduce).
    pub(super) fn flush_reduced(&mut self, sums: &EpochSums, clock: Instant) -> Result<()> {
        let dp = self.dp.as_mut().expect("data-parallel");
        let local = [sums.loss.f_double_value(&[])?, sums.correct.f_double_value(&[])?, dp.unreduced_seen as f64];
        let total = dp.sum(&local)?;
        dp.unreduced_seen = 0;
        let p = &mut self.state.progress;
        p.loss_sum += total[0];
        p.correct += total[1];
        p.seen += total[2].round() as usize;
        p.seconds += clock.elapsed().as_secs_f64();
        Ok(())
    }

    /// Per-rank batch norm: rank 0's running statistics for every rank before an evaluation.
    pub(super) fn share_buffers(&self) -> Result<()> {
        match &self.dp {
            Some(dp) if !dp.sync_batch_norm => dp.broadcast(&self.buffers.live),
            _ => Ok(()),
        }
    }
}

impl DataParallel<'_> {
    /// Every rank starts from rank 0's weights, and a resumed job from its optimiser state too.
    pub(super) fn start(&self, vs: &VarStore, adam: &mut Adam, resumed: bool) -> Result<()> {
        self.broadcast_vars(vs)?;
        if resumed {
            self.broadcast(&adam.exp_avg)?;
            self.broadcast(&adam.exp_avg_sq)?;
            let step = Tensor::f_from_slice(&[adam.step as f64])?;
            self.broadcast(std::slice::from_ref(&step))?;
            adam.set_step(step.f_double_value(&[0])?.round() as i64)?;
        }
        Ok(())
    }

    pub(super) fn stats(&self) -> DataParallelStats {
        DataParallelStats {
            backend: format!("{:?}", self.group.backend).to_lowercase(),
            world_size: self.size() as u32,
            rank: self.rank() as u32,
            reductions: self.reductions,
            all_reduce_seconds: self.reduce_seconds,
            bytes_per_step: self.reduced_bytes / self.reductions.max(1),
            sync_batch_norm: self.sync_batch_norm,
        }
    }
}

/// Rank 0's resumable state (or `None`) for every rank of job `job`: rank 0 reads the checkpoint
/// folder, the others get the state through the store (they need not see the folder).
pub(super) fn share_resumed(
    world: &World,
    job: u64,
    read: impl FnOnce() -> Result<Option<TrainState>>,
) -> Result<Option<TrainState>> {
    let key = format!("train-{job}/resume");
    if world.options.rank == 0 {
        let state = read();
        let text = match &state {
            Ok(Some(s)) => format!("state:{}", serde_json::to_string(s).map_err(|e| Error::torch(e.to_string()))?),
            Ok(None) => "none:".into(),
            Err(e) => format!("error:{e}"),
        };
        world.set(&key, text.as_bytes())?;
        return state;
    }
    let text = String::from_utf8_lossy(&world.get(&key)?).into_owned();
    match text.split_once(':') {
        Some(("state", json)) => serde_json::from_str(json)
            .map(Some)
            .map_err(|e| Error::Distributed(format!("rank 0's resume state did not parse: {e}"))),
        Some(("none", _)) => Ok(None),
        Some((_, why)) => Err(Error::Distributed(format!("rank 0 could not resume: {why}"))),
        None => Err(Error::Distributed(format!("rank 0's resume state is malformed: {text:.80}"))),
    }
}

/// Writes `value` into the gradient of `param` (made when its backward did not reach it).
fn set_grad(param: &Tensor, value: &Tensor) -> Result<()> {
    let grad = param.grad();
    if grad.defined() {
        grad.shallow_clone().f_copy_(value)?;
        return Ok(());
    }
    let fresh = value.f_to_kind(param.kind())?.f_contiguous()?;
    // SAFETY: live `at::Tensor*`s; the shim assigns the parameter's gradient (a new reference).
    unsafe { crate::shims::emotion_set_grad(param.as_ptr() as *mut _, fresh.as_ptr() as *mut _) };
    Ok(())
}
