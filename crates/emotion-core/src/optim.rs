//! Adam with its state in plain tensors (so checkpoints can carry it) and a dynamic loss scaler for
//! fp16 mixed precision (tch has no GradScaler).

use crate::error::Result;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
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
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

pub struct Adam {
    pub config: AdamConfig,
    params: Vec<Tensor>,
    pub exp_avg: Vec<Tensor>,
    pub exp_avg_sq: Vec<Tensor>,
    pub step: i64,
}

impl Adam {
    pub fn new(params: Vec<Tensor>, config: AdamConfig) -> Result<Adam> {
        let exp_avg = params.iter().map(|p| p.f_zeros_like()).collect::<Result<_, _>>()?;
        let exp_avg_sq = params.iter().map(|p| p.f_zeros_like()).collect::<Result<_, _>>()?;
        Ok(Adam { config, params, exp_avg, exp_avg_sq, step: 0 })
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    pub fn grads(&self) -> Vec<Tensor> {
        self.params.iter().filter(|p| p.grad().defined()).map(|p| p.grad()).collect()
    }

    /// One update with learning rate `lr` (the schedule's value for this step).
    pub fn step(&mut self, lr: f64) -> Result<()> {
        self.step += 1;
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
