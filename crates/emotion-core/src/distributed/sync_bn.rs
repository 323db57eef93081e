//! Batch norm over the global batch of a data-parallel job (PyTorch's `SyncBatchNorm` algorithm, which
//! libtorch 2.11 has for CUDA only): each rank's count, sum and centred sum of squares per channel are
//! gathered with one differentiable all-reduce, combined as Chan et al.'s parallel variance, and the
//! batch is normalised by the global statistics; autograd carries the gradient through the gather
//! (its backward is an all-reduce too). Models call [`batch_norm`]; the trainer enters a [`SyncScope`]
//! around a data-parallel forward, and outside one it is the ordinary batch norm.

use super::group::ProcessGroup;
use std::cell::Cell;
use std::marker::PhantomData;
use tch::{nn, Kind, Tensor};

/// tch's `BatchNormConfig` defaults, which every model here uses.
const EPS: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

/// A data-parallel forward's batch norm: the group, whether to synchronise over it, and whether this
/// rank's rows are padding (a rank with no rows of a short last batch still takes part in every
/// collective, contributing no statistics).
#[derive(Clone, Copy)]
struct Scope {
    group: *const ProcessGroup,
    sync: bool,
    padding: bool,
}

thread_local! {
    static SCOPE: Cell<Option<Scope>> = const { Cell::new(None) };
}

/// While alive, training-mode batch norm on this thread is a data-parallel rank's.
pub struct SyncScope<'a> {
    previous: Option<Scope>,
    _group: PhantomData<&'a ProcessGroup>,
}

impl<'a> SyncScope<'a> {
    /// `sync`: normalise by the global batch over `group` (else by this rank's rows); `padding`: the
    /// batch is a stand-in row whose statistics must not count (without `sync` it is normalised by
    /// the running statistics, which it leaves alone).
    pub fn enter(group: &'a ProcessGroup, sync: bool, padding: bool) -> SyncScope<'a> {
        let scope = Scope { group: group as *const ProcessGroup, sync, padding };
        let previous = SCOPE.with(|s| s.replace(Some(scope)));
        SyncScope { previous, _group: PhantomData }
    }
}

impl Drop for SyncScope<'_> {
    fn drop(&mut self) {
        SCOPE.with(|s| s.set(self.previous));
    }
}

/// `x.apply_t(bn, train)`, with the global batch's statistics inside a [`SyncScope`]. Panics on a
/// libtorch or collective error, as tch's module calls do, with the [`Error`](crate::error::Error) as
/// payload (`catch_panic` returns it as it was).
pub fn batch_norm(bn: &nn::BatchNorm, x: &Tensor, train: bool) -> Tensor {
    match SCOPE.with(|s| s.get()) {
        // SAFETY: the scope borrows the group for as long as the pointer is set.
        Some(s) if train && s.sync => synced(bn, x, unsafe { &*s.group }, s.padding).unwrap_or_else(|e| raise(e)),
        Some(s) if train && s.padding => x.apply_t(bn, false),
        _ => x.apply_t(bn, train),
    }
}

/// Unwinds with `error` as the payload (`catch_panic` returns it as it was), without the default
/// hook's "panicked at" report: the error reaches the caller with its own message.
fn raise(error: crate::error::Error) -> ! {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<crate::error::Error>().is_none() {
                previous(info)
            }
        }));
    });
    std::panic::panic_any(error)
}

fn synced(bn: &nn::BatchNorm, x: &Tensor, group: &ProcessGroup, padding: bool) -> crate::error::Result<Tensor> {
    let kind = x.kind();
    let xf = x.f_to_kind(Kind::Float)?;
    let size = xf.size();
    let channels = size[1];
    let dims: Vec<i64> = (0..size.len() as i64).filter(|&d| d != 1).collect();
    let mut shape = vec![1i64; size.len()];
    shape[1] = channels;
    let rows = if padding { xf.f_narrow(0, 0, 0)? } else { xf.shallow_clone() };
    let count = (rows.size()[0] * size[2..].iter().product::<i64>()) as f64;
    let sum = rows.f_sum_dim_intlist(dims.as_slice(), false, Kind::Float)?;
    let local_mean = sum.f_div_scalar(count.max(1.0))?;
    let m2 = rows.f_sub(&local_mean.f_view(shape.as_slice())?)?.f_square()?.f_sum_dim_intlist(
        dims.as_slice(),
        false,
        Kind::Float,
    )?;
    // This rank's row of the gathered [ranks, 1 + 2C] table; the others' rows are zeros here.
    let row = Tensor::f_cat(&[Tensor::f_full([1], count, (Kind::Float, xf.device()))?, sum, m2], 0)?.f_unsqueeze(0)?;
    let width = 1 + 2 * channels;
    let zeros = |rows: usize| Tensor::f_zeros([rows as i64, width], (Kind::Float, xf.device()));
    let table = Tensor::f_cat(&[zeros(group.rank)?, row, zeros(group.size - group.rank - 1)?], 0)?;
    let all = group.all_reduce_sum_differentiable(&table)?;
    let counts = all.f_narrow(1, 0, 1)?;
    let (sums, m2s) = (all.f_narrow(1, 1, channels)?, all.f_narrow(1, 1 + channels, channels)?);
    let total = counts.f_sum(Kind::Float)?;
    let mean = sums.f_sum_dim_intlist([0].as_slice(), false, Kind::Float)?.f_div(&total)?;
    let rank_means = sums.f_div(&counts.f_clamp_min(1.0)?)?;
    let spread = counts.f_mul(&rank_means.f_sub(&mean.f_unsqueeze(0)?)?.f_square()?)?;
    let m2_total = m2s.f_add(&spread)?.f_sum_dim_intlist([0].as_slice(), false, Kind::Float)?;
    let var = m2_total.f_div(&total)?;
    let inv_std = var.f_add_scalar(EPS)?.f_rsqrt()?;
    let mut y = xf.f_sub(&mean.f_view(shape.as_slice())?)?.f_mul(&inv_std.f_view(shape.as_slice())?)?;
    if let (Some(w), Some(b)) = (&bn.ws, &bn.bs) {
        y = y.f_mul(&w.f_view(shape.as_slice())?)?.f_add(&b.f_view(shape.as_slice())?)?;
    }
    let _guard = tch::no_grad_guard();
    let unbiased = m2_total.f_div(&total.f_sub_scalar(1.0)?.f_clamp_min(1.0)?)?;
    let _ = bn.running_mean.shallow_clone().f_mul_scalar_(1.0 - MOMENTUM)?.f_add_(&mean.f_mul_scalar(MOMENTUM)?)?;
    let _ = bn.running_var.shallow_clone().f_mul_scalar_(1.0 - MOMENTUM)?.f_add_(&unbiased.f_mul_scalar(MOMENTUM)?)?;
    drop(_guard);
    Ok(y.f_to_kind(kind)?)
}
