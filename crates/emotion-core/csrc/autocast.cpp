// tch 0.24 can switch CUDA autocast on and off but not choose its dtype (always fp16). One call into
// libtorch's C++ API selects bf16 or fp16 for the next autocast region.
#include <ATen/autocast_mode.h>

extern "C" void emotion_set_cuda_autocast_bf16(int bf16) {
  at::autocast::set_autocast_dtype(at::kCUDA, bf16 ? at::kBFloat16 : at::kHalf);
}

extern "C" int emotion_cuda_autocast_is_bf16() {
  return at::autocast::get_autocast_dtype(at::kCUDA) == at::kBFloat16;
}
