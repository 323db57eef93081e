// Channels-last (NHWC) memory format, which tch 0.24 has no API for. Tensors cross as tch's
// `C_tensor`, which is `at::Tensor*`. Errors become a null result / non-zero status, never a throw
// across the C boundary.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

// `contiguous(ChannelsLast)` keeps a tensor with one channel (the mel input, the first conv's weight)
// as it is, since its NCHW strides also count as channels-last; the convolution then does not choose
// NHWC, and every later layer pays a reorder. A fresh NHWC tensor makes the layout unambiguous, as
// PyTorch's `module.to(memory_format=torch.channels_last)` does.
static at::Tensor nhwc(const at::Tensor& t) {
  return at::empty_like(t, at::MemoryFormat::ChannelsLast).copy_(t);
}

extern "C" at::Tensor* emotion_to_channels_last(const at::Tensor* t) {
  try {
    return new at::Tensor(nhwc(*t));
  } catch (...) {
    return nullptr;
  }
}

// Re-lays a parameter out as channels-last in place (`param.data = …`): the VarStore, the optimiser
// and autograd keep the same tensor.
extern "C" int emotion_set_data_channels_last(at::Tensor* t) {
  try {
    at::NoGradGuard no_grad;
    t->set_data(nhwc(*t));
    return 0;
  } catch (...) {
    return 1;
  }
}

extern "C" int emotion_is_channels_last(const at::Tensor* t) {
  return t->is_contiguous(at::MemoryFormat::ChannelsLast);
}
