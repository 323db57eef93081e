//! Augmentation of training batches, drawn from libtorch's generator (seeded per micro-batch, so a
//! resumed run draws the same masks and mixes): SpecAugment masks and mixup.

use super::config::SpecAugment;
use crate::error::Result;
use tch::{Device, Kind, Tensor};

/// `[B, M, T]` log-mel with `freq_masks` frequency and `time_masks` time masks per clip, each of a
/// width drawn from 0..=width at a random place, set to 0 (the mean of the normalised input).
pub fn spec_augment(mel: &Tensor, o: &SpecAugment) -> Result<Tensor> {
    let size = mel.size();
    let (b, m, t) = (size[0], size[1], size[2]);
    let device = mel.device();
    let mut keep = Tensor::f_ones([b, m, t], (Kind::Bool, device))?;
    for (count, width, len, dim) in [(o.freq_masks, o.freq_width, m, 1), (o.time_masks, o.time_width, t, 2)] {
        let width = width.min(len);
        if width == 0 {
            continue;
        }
        // Positions along the masked axis, shaped to broadcast against [B, M, T].
        let shape: [i64; 3] = if dim == 1 { [1, len, 1] } else { [1, 1, len] };
        let at = Tensor::f_arange(len, (Kind::Float, device))?.f_view(shape)?;
        for _ in 0..count {
            let w = Tensor::f_rand([b, 1, 1], (Kind::Float, device))?.f_mul_scalar((width + 1) as f64)?.f_floor()?;
            let start = Tensor::f_rand([b, 1, 1], (Kind::Float, device))?
                .f_mul(&(w.f_neg()?.f_add_scalar(len as f64)?))?
                .f_floor()?;
            let inside = at.f_ge_tensor(&start)?.f_logical_and(&at.f_lt_tensor(&start.f_add(&w)?)?)?;
            keep = keep.f_logical_and(&inside.f_logical_not()?)?;
        }
    }
    Ok(mel.f_mul(&keep.f_to_kind(mel.kind())?)?)
}

/// One mixup draw for a batch of `n`: the weight λ ~ Beta(α, α) of the batch itself, and the
/// permutation that pairs each clip with another.
pub struct Mix {
    pub lambda: f64,
    pub perm: Tensor,
}

pub fn draw_mix(alpha: f64, n: i64, device: Device) -> Result<Mix> {
    // Beta(α, α) as X / (X + Y) with X, Y ~ Gamma(α).
    let gammas = Tensor::f_full([2], alpha, (Kind::Double, Device::Cpu))?.f_internal_standard_gamma()?;
    let (x, y) = (gammas.f_double_value(&[0])?, gammas.f_double_value(&[1])?);
    let lambda = if x + y > 0.0 { x / (x + y) } else { 0.5 };
    Ok(Mix { lambda, perm: Tensor::f_randperm(n, (Kind::Int64, device))? })
}

impl Mix {
    /// λ·a + (1 − λ)·a[perm], for inputs (mel) of the batch.
    pub fn inputs(&self, a: &Tensor) -> Result<Tensor> {
        Ok(a.f_mul_scalar(self.lambda)?.f_add(&a.f_index_select(0, &self.perm)?.f_mul_scalar(1.0 - self.lambda)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_cover_whole_bands_within_the_widths_and_leave_the_rest() {
        let _turn = crate::rng_turn();
        tch::manual_seed(3);
        let mel = Tensor::ones([8, 64, 100], (Kind::Float, Device::Cpu));
        let o = SpecAugment { freq_masks: 1, freq_width: 10, time_masks: 1, time_width: 20 };
        let out = spec_augment(&mel, &o).unwrap();
        for i in 0..8 {
            let clip = out.get(i);
            // A masked frequency bin is zero in every frame; a masked frame is zero in every bin.
            let bins_masked = clip.eq(0.0).all_dim(1, false).sum(Kind::Int64).int64_value(&[]);
            let frames_masked = clip.eq(0.0).all_dim(0, false).sum(Kind::Int64).int64_value(&[]);
            assert!(bins_masked <= 10 && frames_masked <= 20, "clip {i}: {bins_masked} bins, {frames_masked} frames");
            let zeros = clip.eq(0.0).sum(Kind::Int64).int64_value(&[]);
            assert_eq!(zeros, bins_masked * 100 + frames_masked * 64 - bins_masked * frames_masked);
        }
        assert!(out.eq(0.0).any().int64_value(&[]) == 1, "some mask was drawn");
        tch::manual_seed(3);
        assert!(spec_augment(&mel, &o).unwrap().equal(&out), "the same seed draws the same masks");
    }

    #[test]
    fn mixup_weights_lie_in_zero_one_and_mix_pairs() {
        let _turn = crate::rng_turn();
        tch::manual_seed(5);
        let a = Tensor::arange(4, (Kind::Float, Device::Cpu)).view([4, 1]);
        let mix = draw_mix(0.4, 4, Device::Cpu).unwrap();
        assert!((0.0..=1.0).contains(&mix.lambda));
        let mixed = mix.inputs(&a).unwrap();
        let expected = &a * mix.lambda + a.index_select(0, &mix.perm) * (1.0 - mix.lambda);
        assert!(mixed.allclose(&expected, 1e-6, 1e-6, false));
    }
}
