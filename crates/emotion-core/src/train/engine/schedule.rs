//! The pure parts of the loop: shuffles and per-step seeds, the learning-rate schedule, the best-epoch
//! rule, and evaluation.

use crate::dataset::rng::SplitMix64;
use crate::error::Result;
use crate::metrics::{classification_metrics, Metrics};
use crate::train::checkpoint::{EpochProgress, EpochRecord};
use crate::train::config::{LrSchedule, StopMetric};
use crate::train::data::DeviceSet;
use crate::train::kinds::Net;
use crate::train::settings::TrainingSettings;
use tch::{Device, Kind, Reduction, Tensor};

/// The epoch's score for choosing the best model, and whether higher is better: the early-stopping
/// metric, else validation weighted F1; `None` without a validation set (then the last epoch is best).
pub(super) fn best_score(config: &TrainingSettings, record: &EpochRecord) -> Option<(f64, bool)> {
    match &config.early_stopping {
        Some(es) => match es.metric {
            StopMetric::ValLoss => record.val_loss.map(|v| (v, false)),
            StopMetric::ValAccuracy => record.val_accuracy.map(|v| (v, true)),
            StopMetric::ValF1 => record.val_f1.map(|v| (v, true)),
        },
        None => record.val_f1.map(|v| (v, true)),
    }
}

pub(super) fn improves(score: Option<(f64, bool)>, best: Option<f64>) -> bool {
    match (score, best) {
        (Some((s, true)), Some(best)) => s > best,
        (Some((s, false)), Some(best)) => s < best,
        (Some(_), None) | (None, _) => true,
    }
}

/// Adds the device-side epoch sums to the host-side progress (one sync).
pub(super) fn flush_progress(
    progress: &mut EpochProgress,
    loss: &Tensor,
    correct: &Tensor,
    seconds: f64,
) -> Result<()> {
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

pub(super) fn step_seed(seed: u64, epoch: u32, batch: usize) -> u64 {
    SplitMix64::new(seed.wrapping_mul(1_000_003) ^ ((epoch as u64) << 32) ^ batch as u64).next_u64() >> 1
}

pub(super) fn lr_at(config: &TrainingSettings, step: f64, total: f64) -> f64 {
    match config.lr_schedule {
        LrSchedule::Constant => config.optim.lr,
        LrSchedule::Cosine => {
            config.optim.lr * 0.5 * (1.0 + (std::f64::consts::PI * (step / total.max(1.0)).min(1.0)).cos())
        }
    }
}

/// Loss and metrics of `set` in inference mode.
pub fn evaluate(
    model: &dyn Net,
    set: &DeviceSet,
    weights: Option<&Tensor>,
    config: &TrainingSettings,
    labels: &[String],
) -> Result<(f64, Metrics)> {
    let (logits, targets) = predict_logits(model, set)?;
    let loss = logits
        .f_cross_entropy_loss(&targets, weights, Reduction::Mean, -100, config.label_smoothing)?
        .f_double_value(&[])?;
    let predicted: Vec<i64> = Vec::<i64>::try_from(logits.f_argmax(1, false)?.f_to_device(Device::Cpu)?)?;
    let truth: Vec<i64> = Vec::<i64>::try_from(targets.f_to_device(Device::Cpu)?)?;
    Ok((loss, classification_metrics(&truth, &predicted, labels)))
}

pub fn predict_logits(model: &dyn Net, set: &DeviceSet) -> Result<(Tensor, Tensor)> {
    let _guard = tch::no_grad_guard();
    let device = set.labels.device();
    let mut outs = Vec::new();
    let chunk = 256usize;
    for lo in (0..set.len).step_by(chunk) {
        let n = chunk.min(set.len - lo) as i64;
        let index = Tensor::f_arange_start(lo as i64, lo as i64 + n, (Kind::Int64, device))?;
        outs.push(model.forward(&set.batch(&index)?, false).logits.f_to_kind(Kind::Float)?);
    }
    Ok((Tensor::f_cat(&outs, 0)?, set.labels.shallow_clone()))
}
