//! CUDA graph mode of a training job (`TrainConfig::cuda_graph`): whether a job can use it, the
//! capture of a micro-batch and a window end after the warm-up windows, and their replay. What the
//! graphs capture is the eager sync-free path (`Trainer::micro_compute`, `Trainer::window_compute`).

use super::{step_seed, EpochSums, TrainEvent, Trainer};
use crate::cuda_graph::{self, Graph};
use crate::error::{Error, Result};
use crate::train::settings::Job;
use tch::{Device, Kind, Tensor};

/// How a job uses CUDA graphs (`TrainConfig::cuda_graph`).
pub(super) enum GraphMode {
    Off,
    /// Full windows still to run eagerly before capture (cuDNN picks its algorithms, lazily made state
    /// exists before the capture sees it).
    WarmUp(u32),
    Ready(Graphs),
}

/// Eager windows before capture.
pub(super) const GRAPH_WARMUP_WINDOWS: u32 = 2;

/// A captured micro-batch (forward, backward, sums) and window end (unscale, check, update, rollback,
/// counters, loss scale, zeroed gradients), with the tensors they read and write.
pub(super) struct Graphs {
    /// The micro-batch's clip indices, copied in before each replay of `micro`.
    index: Tensor,
    /// The loss of the last replayed micro-batch (written by `micro`, in its memory pool: declared
    /// before the graphs so it is freed before they release their pools).
    loss: Tensor,
    micro: Graph,
    window: Graph,
}

/// Why this job's step cannot be captured in a CUDA graph, when it cannot.
pub(super) fn graph_obstacle(job: &Job, device: Device, sync_free: bool) -> Option<String> {
    if !device.is_cuda() {
        return Some("CUDA graphs need a CUDA device".into());
    }
    if !sync_free {
        return Some("CUDA graphs need the sync-free window end (syncFree)".into());
    }
    if let Some(why) = job.spec.kind.kind().graph_obstacle() {
        return Some(why.into());
    }
    if job.training.augment.mixup.is_some() {
        return Some("mixup draws its weight on the host at every step".into());
    }
    cuda_graph::available().err()
}

impl Trainer<'_> {
    /// Whether the window starting at `window_start` runs from the captured graphs. Only full windows
    /// of full batches do (a graph holds fixed shapes); the first capture happens after the warm-up
    /// windows, and a failed one is a warning, after which the job runs eagerly.
    pub(super) fn graphs_ready(
        &mut self,
        window_start: usize,
        window_len: usize,
        sums: &mut EpochSums,
        emit: &mut dyn FnMut(TrainEvent),
    ) -> Result<bool> {
        let (bs, acc) = (self.job.training.batch_size, self.job.training.accumulation);
        if window_len != acc || (window_start + acc) * bs > self.train_set.len {
            return Ok(false);
        }
        match &mut self.graph {
            GraphMode::Off => Ok(false),
            GraphMode::Ready(_) => Ok(true),
            GraphMode::WarmUp(left) if *left > 0 => {
                *left -= 1;
                Ok(false)
            }
            GraphMode::WarmUp(_) => match self.capture(sums) {
                Ok(graphs) => {
                    self.graph = GraphMode::Ready(graphs);
                    Ok(true)
                }
                Err(e) => {
                    self.graph = GraphMode::Off;
                    emit(TrainEvent::Warning {
                        model: self.kind,
                        message: format!("cudaGraph: capture failed ({e}); training goes on eagerly"),
                    });
                    Ok(false)
                }
            },
        }
    }

    /// Records a full micro-batch and a window end into two graphs. Nothing runs while capturing:
    /// the window that triggered it is then replayed like every later one.
    fn capture(&mut self, sums: &mut EpochSums) -> Result<Graphs> {
        let (bs, acc) = (self.job.training.batch_size, self.job.training.accumulation);
        if let Device::Cuda(index) = self.device {
            tch::Cuda::synchronize(index as i64);
        }
        let index = Tensor::f_zeros([bs as i64], (Kind::Int64, self.device))?;
        let mut micro = Graph::new()?;
        // Detached: the captured backward's autograd nodes need not outlive the capture.
        let loss = micro.capture(|| self.micro_compute(&index, acc, None, sums))?.f_detach()?;
        let mut window = Graph::new()?;
        window.capture(|| self.window_compute((bs * acc) as f64, sums))?;
        Ok(Graphs { index, loss, micro, window })
    }

    /// Runs the window starting at `window_start` from the graphs: per micro-batch its seed and clip
    /// indices, then the learning rate, go in before the replays. Returns the last micro-batch's loss.
    pub(super) fn replay_window(&mut self, window_start: usize, order: &Tensor) -> Result<Tensor> {
        let (config, epoch) = (self.job, self.state.epoch);
        let (bs, acc) = (config.training.batch_size, config.training.accumulation);
        let lr = self.lr_at_window(window_start);
        let GraphMode::Ready(graphs) = &mut self.graph else {
            return Err(Error::Internal("replay_window without captured graphs".into()));
        };
        let _turn = crate::generator_turn();
        for b in window_start..window_start + acc {
            // The graph's dropout and SpecAugment draws start from the generator's seed at each replay.
            tch::manual_seed(step_seed(config.training.seed, epoch, b) as i64);
            graphs.index.f_copy_(&order.f_narrow(0, (b * bs) as i64, bs as i64)?)?;
            graphs.micro.replay()?;
        }
        let _ = self.sync_free.as_mut().expect("graphs need the sync-free state").lr.f_fill_(lr)?;
        graphs.window.replay()?;
        self.micro_steps += acc;
        self.graphed_windows += 1;
        Ok(graphs.loss.shallow_clone())
    }
}
