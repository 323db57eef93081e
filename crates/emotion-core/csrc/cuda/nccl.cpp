// c10d's NCCL process group (ProcessGroupNCCL, in libtorch_cuda.so) for the Rust core, over the core's
// TCPStore; the collectives are csrc/process_group.hpp's, on the device's memory in place. Compiled
// into the CUDA shim (scripts/cuda-graph.mjs: it links libtorch_cuda), against the `nccl.h` of the
// nvidia-nccl wheel torch pins.
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <chrono>

#include "../process_group.hpp"

// A group of `size` ranks over the c10d store at `store`, its keys under `prefix`, this rank on CUDA
// device `device_index` (every rank on a device of its own). `iface` and `host` are Gloo's (unused).
extern "C" void* emotion_nccl_new(void* store, const char* prefix, int rank, int size, const char* /*iface*/,
                                  const char* /*host*/, int device_index, long long timeout_ms, char* error,
                                  int error_len) {
  emotion::Group* group = nullptr;
  emotion::guarded(error, error_len, [&] {
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::milliseconds(timeout_ms);
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(emotion::prefixed_store(store, prefix), rank, size, opts);
    pg->setBoundDeviceId(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device_index)));
    group = new emotion::Group{std::move(pg), /*host=*/false};
  });
  return group;
}

EMOTION_GROUP_FUNCTIONS(nccl)
