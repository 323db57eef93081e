// Mixed-precision switches tch 0.24 does not expose: the dtype of CUDA autocast regions (tch's is
// always fp16), and CPU autocast altogether (tch's `autocast` is CUDA-only). Autocast state is
// thread-local in libtorch; a training job runs on one thread.
#include <ATen/autocast_mode.h>

extern "C" void emotion_set_cuda_autocast_bf16(int bf16) {
  at::autocast::set_autocast_dtype(at::kCUDA, bf16 ? at::kBFloat16 : at::kHalf);
}

extern "C" int emotion_cuda_autocast_is_bf16() {
  return at::autocast::get_autocast_dtype(at::kCUDA) == at::kBFloat16;
}

// Enters a bf16 CPU autocast region, as `torch.autocast("cpu", torch.bfloat16)` does; returns whether
// CPU autocast was already on, for the matching exit.
extern "C" int emotion_cpu_autocast_enter() {
  int was = at::autocast::is_autocast_enabled(at::kCPU);
  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCPU, true);
  at::autocast::increment_nesting();
  return was;
}

extern "C" void emotion_cpu_autocast_exit(int was) {
  // The outermost exit drops the casted-weight cache, as Python's context manager does.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(at::kCPU, was != 0);
}

extern "C" int emotion_cpu_autocast_enabled() {
  return at::autocast::is_autocast_enabled(at::kCPU);
}

// Switches autocast's cache of casted weights on this thread; returns whether it was on. A CUDA graph
// capture needs it off (`torch.autocast(..., cache_enabled=False)`): a cached cast made during capture
// would be freed when the region ends while the graph still reads it.
extern "C" int emotion_set_autocast_cache(int enabled) {
  int was = at::autocast::is_autocast_cache_enabled();
  at::autocast::set_autocast_cache_enabled(enabled != 0);
  return was;
}
