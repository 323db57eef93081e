// libtorch's fused Adam (`torch.optim.Adam(fused=True)`: one kernel over every parameter, CPU and
// CUDA), which tch 0.24 does not expose. Tensors cross as tch's `C_tensor` (`at::Tensor*`); a failure
// is reported through `error`, never thrown across the C boundary.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <cstdio>
#include <vector>

static std::vector<at::Tensor> list(at::Tensor** tensors, int n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) out.push_back(*tensors[i]);
  return out;
}

// Increments each parameter's step count (`steps`, float32 scalars), then updates parameters and
// moments in place. Parameters without a gradient must be left out by the caller.
// With `found_inf` and `inv_scale` (0-dim float tensors; both null for the plain update) the window
// end stays on the device, so a step can later be captured in a CUDA graph: the gradients are
// unscaled in place by `inv_scale` and `found_inf` set to 1 when any is not finite
// (`torch.amp.GradScaler.unscale_`), the kernel skips the update when it is 1, and the step counts are
// put back for a skipped step, as `torch.optim.Adam(fused=True)` does under a GradScaler.
// With `lr_tensor` (0-dim, on the parameters' device) the learning rate is read from it when the
// kernel runs, so a captured graph picks up a new value per replay: float32 on CUDA (what the kernel
// reads), float64 on the CPU (read back as a double, the same value as the `lr` argument path).
extern "C" int emotion_fused_adam(at::Tensor** params, at::Tensor** grads, at::Tensor** exp_avg,
                                  at::Tensor** exp_avg_sq, at::Tensor** steps, int n,
                                  at::Tensor* found_inf, at::Tensor* inv_scale, at::Tensor* lr_tensor, double lr,
                                  double beta1, double beta2, double weight_decay, double eps,
                                  char* error, int error_len) {
  try {
    at::NoGradGuard no_grad;
    auto grad_list = list(grads, n);
    if (found_inf != nullptr) at::_amp_foreach_non_finite_check_and_unscale_(grad_list, *found_inf, *inv_scale);
    auto step_list = list(steps, n);
    at::_foreach_add_(step_list, 1.0);
    std::optional<at::Tensor> skip;
    if (found_inf != nullptr) skip = *found_inf;
    if (lr_tensor != nullptr) {
      at::_fused_adam_(list(params, n), grad_list, list(exp_avg, n), list(exp_avg_sq, n), {}, step_list,
                       *lr_tensor, beta1, beta2, weight_decay, eps, /*amsgrad=*/false, /*maximize=*/false,
                       std::nullopt, skip);
    } else {
      at::_fused_adam_(list(params, n), grad_list, list(exp_avg, n), list(exp_avg_sq, n), {}, step_list,
                       lr, beta1, beta2, weight_decay, eps, /*amsgrad=*/false, /*maximize=*/false,
                       std::nullopt, skip);
    }
    if (found_inf != nullptr) at::_foreach_sub_(step_list, std::vector<at::Tensor>(n, *found_inf));
    return 0;
  } catch (const std::exception& e) {
    std::snprintf(error, error_len, "%s", e.what());
    return 1;
  }
}

// Drops the gradients (`zero_grad(set_to_none=True)`, PyTorch's default): the next backward writes
// fresh gradients in the parameter's layout instead of adding into stale ones.
extern "C" void emotion_clear_grads(at::Tensor** params, int n) {
  for (int i = 0; i < n; ++i) params[i]->mutable_grad().reset();
}

// Zeroes the gradients in place (`zero_grad(set_to_none=False)`): they keep their memory, so a CUDA
// graph that accumulates into them stays valid across replays.
extern "C" void emotion_zero_grads(at::Tensor** params, int n) {
  at::NoGradGuard no_grad;
  for (int i = 0; i < n; ++i) {
    auto& grad = params[i]->mutable_grad();
    if (grad.defined()) grad.zero_();
  }
}

// Sets a parameter's gradient to `grad` (a gradient summed across ranks for a parameter this rank's
// backward did not reach).
extern "C" void emotion_set_grad(at::Tensor* param, at::Tensor* grad) { param->mutable_grad() = *grad; }
