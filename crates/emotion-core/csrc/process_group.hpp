// What the Gloo and NCCL shims share: a c10d backend behind an opaque handle, in-place all-reduce and
// broadcast of one dense tensor, and a sum over ranks autograd differentiates (its gradient is the sum
// over ranks of the gradient: synchronised batch norm). Failures come back through `error`.
#pragma once
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "guarded.hpp"

namespace emotion {

struct Group {
  c10::intrusive_ptr<c10d::Backend> pg;
  // Whether the backend reduces host memory (Gloo): device tensors then go through the CPU.
  bool host;
};

// The core's store (a `c10d::Store*` from emotion_store_raw, which we take a reference to) with our
// keys under `prefix`.
inline c10::intrusive_ptr<c10d::Store> prefixed_store(void* store, const char* prefix) {
  auto base = c10::intrusive_ptr<c10d::Store>::reclaim_copy(static_cast<c10d::Store*>(store));
  return c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), base);
}

inline c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 1:
      return c10d::ReduceOp::MAX;
    case 2:
      return c10d::ReduceOp::MIN;
    default:
      return c10d::ReduceOp::SUM;
  }
}

inline void allreduce(c10d::Backend& pg, at::Tensor& t, int op) {
  std::vector<at::Tensor> list{t};
  c10d::AllreduceOptions opts;
  opts.reduceOp = reduce_op(op);
  pg.allreduce(list, opts)->wait();
}

// A copy of `x` summed over ranks, on x's device.
inline at::Tensor summed(const Group& group, const at::Tensor& x) {
  auto staged = group.host ? x.to(at::kCPU, /*non_blocking=*/false, /*copy=*/true).contiguous() : x.contiguous().clone();
  allreduce(*group.pg, staged, 0);
  return staged.to(x.device());
}

// The group travels in the autograd context as a plain pointer: the trainer runs every backward of a
// micro-batch before it drops the group (DataParallel outlives the job's graphs).
struct AllReduceSum : public torch::autograd::Function<AllReduceSum> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t group) {
    ctx->saved_data["group"] = group;
    return summed(*reinterpret_cast<Group*>(group), x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto group = ctx->saved_data["group"].toInt();
    return {summed(*reinterpret_cast<Group*>(group), grads[0]), at::Tensor()};
  }
};

// In place over ranks: 0 sum, 1 max, 2 min. One dense tensor where the backend reduces.
inline int group_allreduce(void* group, at::Tensor* tensor, int op, char* error, int error_len) {
  return guarded(error, error_len, [&] { allreduce(*static_cast<Group*>(group)->pg, *tensor, op); });
}

inline int group_broadcast(void* group, at::Tensor* tensor, int root, char* error, int error_len) {
  return guarded(error, error_len, [&] {
    std::vector<at::Tensor> list{*tensor};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    static_cast<Group*>(group)->pg->broadcast(list, opts)->wait();
  });
}

// The differentiable sum over ranks of `tensor`: a new tensor the caller owns (tch frees it).
inline at::Tensor* group_allreduce_grad(void* group, at::Tensor* tensor, char* error, int error_len) {
  at::Tensor* out = nullptr;
  guarded(error, error_len, [&] {
    auto sum = AllReduceSum::apply(*tensor, reinterpret_cast<int64_t>(group));
    out = new at::Tensor(std::move(sum));
  });
  return out;
}

}  // namespace emotion

// The C functions of one backend's shim, `emotion_<name>_*`, over the shared implementation.
#define EMOTION_GROUP_FUNCTIONS(name)                                                                  \
  extern "C" void emotion_##name##_free(void* group) { delete static_cast<emotion::Group*>(group); }   \
  extern "C" int emotion_##name##_allreduce(void* group, at::Tensor* tensor, int op, char* error,      \
                                            int error_len) {                                          \
    return emotion::group_allreduce(group, tensor, op, error, error_len);                             \
  }                                                                                                   \
  extern "C" int emotion_##name##_broadcast(void* group, at::Tensor* tensor, int root, char* error,    \
                                            int error_len) {                                          \
    return emotion::group_broadcast(group, tensor, root, error, error_len);                           \
  }                                                                                                   \
  extern "C" at::Tensor* emotion_##name##_allreduce_grad(void* group, at::Tensor* tensor, char* error, \
                                                         int error_len) {                             \
    return emotion::group_allreduce_grad(group, tensor, error, error_len);                            \
  }
