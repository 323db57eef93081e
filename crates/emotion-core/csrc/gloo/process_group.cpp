// c10d's Gloo process group (ProcessGroupGloo, compiled into libtorch_cpu.so) for the Rust core: made
// over the core's TCPStore, then in-place all-reduce and broadcast of one dense tensor, and an
// all-reduce autograd knows (its gradient is the all-reduce of the gradient: synchronised batch norm).
// A separate shared object because the declarations need Gloo's headers, which the torch wheel lacks:
// scripts/gloo.mjs takes them from Debian's libgloo-dev. Only declarations are used: every Gloo
// function this file reaches is defined in libtorch_cpu.so (scripts/gloo.mjs checks the object
// references no `gloo::` symbol). Failures come back through `error`, never as C++ exceptions.
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include "../guarded.hpp"

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

// Objects this file allocates and libtorch's code fills in: their layout must be the one libtorch was
// built with. Pinned for torch 2.11.0 on x86-64 (their Gloo members are shared_ptrs, so Debian's
// older Gloo headers cannot change them); a torch upgrade that moves them stops the build here.
static_assert(sizeof(c10d::ProcessGroupGloo) == 488, "c10d::ProcessGroupGloo layout differs from torch 2.11.0's");
static_assert(sizeof(c10d::ProcessGroupGloo::Options) == 176,
              "c10d::ProcessGroupGloo::Options layout differs from torch 2.11.0's");

namespace {
struct Group {
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
};

using emotion::guarded;

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 1:
      return c10d::ReduceOp::MAX;
    case 2:
      return c10d::ReduceOp::MIN;
    default:
      return c10d::ReduceOp::SUM;
  }
}

void allreduce(c10d::ProcessGroupGloo& pg, at::Tensor& t, int op) {
  std::vector<at::Tensor> list{t};
  c10d::AllreduceOptions opts;
  opts.reduceOp = reduce_op(op);
  pg.allreduce(list, opts)->wait();
}

// A copy of `x` summed over ranks, on x's device: Gloo reduces host memory, so a CUDA tensor goes
// through the CPU (NCCL would reduce it in place).
at::Tensor summed(c10d::ProcessGroupGloo& pg, const at::Tensor& x) {
  auto host = x.to(at::kCPU, /*non_blocking=*/false, /*copy=*/true).contiguous();
  allreduce(pg, host, 0);
  return host.to(x.device());
}

// Sum over ranks whose gradient is the sum over ranks of the gradient (every rank's output depends
// on every rank's input): what statistics of the global batch need.
struct AllReduceSum : public torch::autograd::Function<AllReduceSum> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t group) {
    ctx->saved_data["group"] = group;
    return summed(*reinterpret_cast<Group*>(group)->pg, x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto group = ctx->saved_data["group"].toInt();
    return {summed(*reinterpret_cast<Group*>(group)->pg, grads[0]), at::Tensor()};
  }
};
}  // namespace

// A group of `size` ranks over the c10d store at `store` (a `c10d::Store*` from emotion_store_raw),
// its keys under `prefix`. Gloo's device: the network interface `iface` when given, else the address
// `host` resolves to (127.0.0.1 for a job on one machine), else this machine's hostname.
extern "C" void* emotion_gloo_new(void* store, const char* prefix, int rank, int size, const char* iface,
                                  const char* host, long long timeout_ms, char* error, int error_len) {
  Group* group = nullptr;
  guarded(error, error_len, [&] {
    auto base = c10::intrusive_ptr<c10d::Store>::reclaim_copy(static_cast<c10d::Store*>(store));
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), base);
    auto opts = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(timeout_ms));
    if (iface != nullptr && iface[0] != '\0') {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
    } else if (host != nullptr && host[0] != '\0') {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, size, opts);
    group = new Group{std::move(pg)};
  });
  return group;
}

extern "C" void emotion_gloo_free(void* group) { delete static_cast<Group*>(group); }

// In place over ranks: 0 sum, 1 max, 2 min. One dense CPU tensor.
extern "C" int emotion_gloo_allreduce(void* group, at::Tensor* tensor, int op, char* error, int error_len) {
  return guarded(error, error_len, [&] { allreduce(*static_cast<Group*>(group)->pg, *tensor, op); });
}

extern "C" int emotion_gloo_broadcast(void* group, at::Tensor* tensor, int root, char* error, int error_len) {
  return guarded(error, error_len, [&] {
    std::vector<at::Tensor> list{*tensor};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    static_cast<Group*>(group)->pg->broadcast(list, opts)->wait();
  });
}

// The differentiable sum over ranks of `tensor`: a new tensor the caller owns (tch frees it).
extern "C" at::Tensor* emotion_gloo_allreduce_grad(void* group, at::Tensor* tensor, char* error, int error_len) {
  at::Tensor* out = nullptr;
  guarded(error, error_len, [&] {
    auto sum = AllReduceSum::apply(*tensor, reinterpret_cast<int64_t>(group));
    out = new at::Tensor(std::move(sum));
  });
  return out;
}
