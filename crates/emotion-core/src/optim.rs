//! Adam with its state in plain tensors (so checkpoints can carry it) and a dynamic loss scaler for
//! fp16 mixed precision (tch has no GradScaler).

use crate::error::Result;
use crate::shims::{emotion_clear_grads, emotion_fused_adam, emotion_zero_grads};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::ffi::c_void;
use std::os::raw::{c_char, c_int};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
/// Adam, as `torch.optim.Adam`.
pub struct AdamConfig {
    /// Learning rate (the peak of the cosine schedule).
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// L2 penalty added to the gradient (PyTorch `Adam(weight_decay=…)`).
    pub weight_decay: f64,
    /// One fused kernel over all parameters (libtorch's `_fused_adam_`, as `Adam(fused=True)`);
    /// off: one small update per parameter tensor.
    pub fused: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, fused: true }
    }
}

pub struct Adam {
    pub config: AdamConfig,
    params: Vec<Tensor>,
    pub exp_avg: Vec<Tensor>,
    pub exp_avg_sq: Vec<Tensor>,
    pub step: i64,
    /// The step count per parameter as float32 scalars on its device, as the fused kernel wants it.
    steps: Vec<Tensor>,
}

impl Adam {
    pub fn new(params: Vec<Tensor>, config: AdamConfig) -> Result<Adam> {
        let exp_avg = params.iter().map(|p| p.f_zeros_like()).collect::<Result<_, _>>()?;
        let exp_avg_sq = params.iter().map(|p| p.f_zeros_like()).collect::<Result<_, _>>()?;
        let steps = params.iter().map(|p| Tensor::f_zeros([], (Kind::Float, p.device()))).collect::<Result<_, _>>()?;
        Ok(Adam { config, params, exp_avg, exp_avg_sq, step: 0, steps })
    }

    /// Sets the step count (a resumed run).
    pub fn set_step(&mut self, step: i64) -> Result<()> {
        self.step = step;
        for s in &mut self.steps {
            let _ = s.f_fill_(step as f64)?;
        }
        Ok(())
    }

    /// Drops the gradients, as `zero_grad(set_to_none=True)`: the next backward writes them afresh.
    pub fn zero_grad(&mut self) {
        let ptrs: Vec<*mut c_void> = self.params.iter().map(|p| p.as_ptr() as *mut c_void).collect();
        // SAFETY: live `at::Tensor*`s owned by `self`; the shim resets each one's gradient.
        unsafe { emotion_clear_grads(ptrs.as_ptr(), ptrs.len() as c_int) }
    }

    /// Zeroes the gradients in place, as `zero_grad(set_to_none=False)`: the next backward adds into
    /// the same memory (what a captured CUDA graph needs; 0 + g is g, so the values are the same).
    pub fn zero_grad_in_place(&mut self) {
        let ptrs: Vec<*mut c_void> = self.params.iter().map(|p| p.as_ptr() as *mut c_void).collect();
        // SAFETY: live `at::Tensor*`s owned by `self`; the shim zeroes each defined gradient.
        unsafe { emotion_zero_grads(ptrs.as_ptr(), ptrs.len() as c_int) }
    }

    /// The parameters it updates, in the order they were given.
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    pub fn grads(&self) -> Vec<Tensor> {
        self.params.iter().filter(|p| p.grad().defined()).map(|p| p.grad()).collect()
    }

    /// One update with learning rate `lr` (the schedule's value for this step).
    pub fn step(&mut self, lr: f64) -> Result<()> {
        if self.config.fused {
            return self.fused_step(lr);
        }
        self.step += 1;
        for s in &mut self.steps {
            let _ = s.f_add_scalar_(1.0)?;
        }
        let c = &self.config;
        let bias1 = 1.0 - c.beta1.powi(self.step as i32);
        let bias2 = 1.0 - c.beta2.powi(self.step as i32);
        let _guard = tch::no_grad_guard();
        for ((p, m), v) in self.params.iter_mut().zip(&mut self.exp_avg).zip(&mut self.exp_avg_sq) {
            let mut g = p.grad();
            if !g.defined() {
                continue;
            }
            if c.weight_decay != 0.0 {
                g = g.f_add(&p.f_mul_scalar(c.weight_decay)?)?;
            }
            // m = β1·m + (1−β1)·g ; v = β2·v + (1−β2)·g²
            let _ = m.f_lerp_(&g, 1.0 - c.beta1)?;
            let _ = v.f_mul_scalar_(c.beta2)?.f_addcmul_(&g, &g.f_mul_scalar(1.0 - c.beta2)?)?;
            let denom = v.f_sqrt()?.f_div_scalar(bias2.sqrt())?.f_add_scalar(c.eps)?;
            let _ = p.f_addcdiv_(m, &denom.f_mul_scalar(-bias1 / lr)?)?;
        }
        Ok(())
    }
}

impl Adam {
    fn fused_step(&mut self, lr: f64) -> Result<()> {
        self.step += 1;
        self.fused(lr, None)
    }

    /// The sync-free update: unscales the gradients by `inv_scale` (a 0-dim float tensor on the
    /// device), sets `found_inf` (0-dim float) to 1 when any is not finite, and updates unless it is
    /// 1, all on the device; the learning rate is read from `lr` (0-dim, see [`Adam::lr_tensor`]) when
    /// the kernel runs. The host's `step` is not advanced: read it back with [`Adam::sync_step`].
    pub fn masked_step(&mut self, lr: &Tensor, found_inf: &Tensor, inv_scale: &Tensor) -> Result<()> {
        self.fused(f64::NAN, Some((found_inf, inv_scale, lr)))
    }

    /// A 0-dim learning-rate tensor for [`Adam::masked_step`] on `device`: float32 on CUDA (what the
    /// fused kernel reads), float64 on the CPU (read back as a double: the same update as a number).
    pub fn lr_tensor(device: tch::Device) -> Result<Tensor> {
        let kind = if device.is_cuda() { Kind::Float } else { Kind::Double };
        Ok(Tensor::f_zeros([], (kind, device))?)
    }

    /// Sets the host's step count from the device's (the successful updates), one sync.
    pub fn sync_step(&mut self) -> Result<()> {
        if let Some(s) = self.steps.first() {
            self.step = s.f_double_value(&[])?.round() as i64;
        }
        Ok(())
    }

    fn fused(&mut self, lr: f64, mask: Option<(&Tensor, &Tensor, &Tensor)>) -> Result<()> {
        let with_grad: Vec<usize> = (0..self.params.len()).filter(|&i| self.params[i].grad().defined()).collect();
        if with_grad.is_empty() {
            return Ok(());
        }
        let grads: Vec<Tensor> = with_grad.iter().map(|&i| self.params[i].grad()).collect();
        let ptrs = |list: &[Tensor], pick: &[usize]| -> Vec<*mut c_void> {
            pick.iter().map(|&i| list[i].as_ptr() as *mut c_void).collect()
        };
        let all: Vec<usize> = (0..grads.len()).collect();
        let (p, g) = (ptrs(&self.params, &with_grad), ptrs(&grads, &all));
        let (m, v, s) =
            (ptrs(&self.exp_avg, &with_grad), ptrs(&self.exp_avg_sq, &with_grad), ptrs(&self.steps, &with_grad));
        let c = &self.config;
        let mut error = [0 as c_char; 512];
        let n = p.len() as c_int;
        let (found_inf, inv_scale, lr_tensor) = match mask {
            Some((f, i, l)) => (f.as_ptr() as *mut c_void, i.as_ptr() as *mut c_void, l.as_ptr() as *mut c_void),
            None => (std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut()),
        };
        // SAFETY: every pointer is a live `at::Tensor*` owned by `self`, `grads` or the caller for the
        // whole call (or null: the plain update); the shim updates parameters, moments, steps (and
        // gradients and `found_inf` in the masked form) in place and writes at most 512 bytes of error.
        let status = unsafe {
            emotion_fused_adam(
                p.as_ptr(),
                g.as_ptr(),
                m.as_ptr(),
                v.as_ptr(),
                s.as_ptr(),
                n,
                found_inf,
                inv_scale,
                lr_tensor,
                lr,
                c.beta1,
                c.beta2,
                c.weight_decay,
                c.eps,
                error.as_mut_ptr(),
                error.len() as c_int,
            )
        };
        if status != 0 {
            // SAFETY: the shim wrote a NUL-terminated message into `error`.
            let text = unsafe { std::ffi::CStr::from_ptr(error.as_ptr()) }.to_string_lossy().into_owned();
            return Err(crate::Error::from(tch::TchError::Torch(text)));
        }
        Ok(())
    }
}

/// Dynamic loss scaling as `torch.amp.GradScaler`: scale the loss, unscale the gradients, skip the
/// step when any is non-finite and halve the scale; double it after `growth_interval` good steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LossScaler {
    pub scale: f64,
    pub good_steps: u32,
    pub growth_interval: u32,
    pub enabled: bool,
}

impl LossScaler {
    pub fn new(enabled: bool) -> Self {
        LossScaler { scale: if enabled { 65536.0 } else { 1.0 }, good_steps: 0, growth_interval: 2000, enabled }
    }

    pub fn scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        Ok(if self.enabled { loss.f_mul_scalar(self.scale)? } else { loss.shallow_clone() })
    }

    /// Unscales `grads` in place; returns whether they are all finite (always checked, also in fp32).
    pub fn unscale_and_check(&self, grads: &[Tensor]) -> Result<bool> {
        let _guard = tch::no_grad_guard();
        let mut finite = true;
        for g in grads {
            if self.enabled {
                let _ = g.shallow_clone().f_mul_scalar_(1.0 / self.scale)?;
            }
        }
        if !grads.is_empty() {
            // One reduction for all gradients instead of one host sync per tensor.
            let sums: Vec<Tensor> = grads.iter().map(|g| g.f_sum(Kind::Float)).collect::<Result<_, _>>()?;
            let total = Tensor::f_stack(&sums, 0)?.f_sum(Kind::Float)?;
            finite = total.f_isfinite()?.f_int64_value(&[])? == 1;
        }
        Ok(finite)
    }

    pub fn update(&mut self, finite: bool) {
        if !self.enabled {
            return;
        }
        if finite {
            self.good_steps += 1;
            if self.good_steps >= self.growth_interval {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Three steps on the same parameters and gradients, with and without the fused kernel.
    fn run(fused: bool, weight_decay: f64) -> Vec<Tensor> {
        tch::manual_seed(7);
        let params: Vec<Tensor> = [vec![5, 3], vec![4, 2, 3, 3], vec![7]]
            .iter()
            .map(|shape| Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)).set_requires_grad(true))
            .collect();
        let mut adam = Adam::new(
            params.iter().map(|p| p.shallow_clone()).collect(),
            AdamConfig { fused, weight_decay, lr: 1e-2, ..Default::default() },
        )
        .unwrap();
        for k in 0..3 {
            adam.zero_grad();
            let loss =
                params.iter().map(|p| (p * p * (k + 1) as f64).sum(Kind::Float)).fold(Tensor::from(0f32), |a, b| a + b);
            loss.backward();
            adam.step(1e-2).unwrap();
        }
        params.iter().map(|p| p.detach().copy()).collect()
    }

    #[test]
    fn the_masked_step_equals_the_fused_one_and_skips_non_finite_gradients_on_the_device() {
        let run = |masked: bool, poison: bool| {
            // Deterministic values without libtorch's global generator (tests run in parallel threads).
            let params: Vec<Tensor> = [vec![6, 4], vec![3, 2, 3, 3]]
                .iter()
                .map(|shape| {
                    let n: i64 = shape.iter().product();
                    Tensor::arange(n, (Kind::Float, Device::Cpu))
                        .sin()
                        .reshape(shape.as_slice())
                        .set_requires_grad(true)
                })
                .collect();
            let mut adam =
                Adam::new(params.iter().map(|p| p.shallow_clone()).collect(), AdamConfig::default()).unwrap();
            let found_inf = Tensor::zeros([], (Kind::Float, Device::Cpu));
            let inv_scale = Tensor::ones([], (Kind::Float, Device::Cpu));
            let lr = Adam::lr_tensor(Device::Cpu).unwrap().fill_(1e-2);
            let mut flags = Vec::new();
            for k in 0..3 {
                // The masked (graph-ready) form keeps its gradients and zeroes them in place.
                if masked {
                    adam.zero_grad_in_place();
                } else {
                    adam.zero_grad();
                }
                let mut loss = params.iter().map(|p| (p * p).sum(Kind::Float)).fold(Tensor::from(0f32), |a, b| a + b);
                if poison && k == 1 {
                    loss *= f64::NAN;
                }
                loss.backward();
                if masked {
                    let _ = found_inf.shallow_clone().zero_();
                    adam.masked_step(&lr, &found_inf, &inv_scale).unwrap();
                    flags.push(found_inf.double_value(&[]));
                } else {
                    adam.step(1e-2).unwrap();
                }
            }
            if masked {
                adam.sync_step().unwrap();
            }
            (params.iter().map(|p| p.detach().copy()).collect::<Vec<_>>(), adam.step, flags)
        };
        let (fused, steps, _) = run(false, false);
        let (masked, masked_steps, flags) = run(true, false);
        assert_eq!((steps, masked_steps), (3, 3));
        assert_eq!(flags, vec![0.0, 0.0, 0.0]);
        for (a, b) in fused.iter().zip(&masked) {
            assert!(a.equal(b), "finite gradients: the same update, bit for bit");
        }
        let (skipped, skipped_steps, flags) = run(true, true);
        assert_eq!(flags, vec![0.0, 1.0, 0.0]);
        assert_eq!(skipped_steps, 2, "the skipped update is not counted");
        assert!(skipped.iter().all(|p| p.isfinite().all().int64_value(&[]) == 1));
        assert!(skipped.iter().zip(&masked).any(|(a, b)| !a.equal(b)), "one update fewer");
    }

    #[test]
    fn the_fused_kernel_matches_the_per_tensor_update() {
        let _turn = crate::rng_turn();
        for wd in [0.0, 0.01] {
            for (a, b) in run(true, wd).iter().zip(&run(false, wd)) {
                let diff = (a - b).abs().max().double_value(&[]);
                assert!(diff < 1e-6, "weight decay {wd}: max difference {diff}");
            }
        }
    }
}
