// c10d's Gloo process group (ProcessGroupGloo, compiled into libtorch_cpu.so) for the Rust core, over
// the core's TCPStore; the collectives are csrc/process_group.hpp's. A separate shared object because
// the declarations need Gloo's headers, which the torch wheel lacks: scripts/gloo.mjs takes them from
// Debian's libgloo-dev. Only declarations are used: every Gloo function this file reaches is defined in
// libtorch_cpu.so (scripts/gloo.mjs checks the object references no `gloo::` symbol).
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <chrono>

#include "../process_group.hpp"

// Objects this file allocates and libtorch's code fills in: their layout must be the one libtorch was
// built with. Pinned for torch 2.11.0 on x86-64 (their Gloo members are shared_ptrs, so Debian's
// older Gloo headers cannot change them); a torch upgrade that moves them stops the build here.
static_assert(sizeof(c10d::ProcessGroupGloo) == 488, "c10d::ProcessGroupGloo layout differs from torch 2.11.0's");
static_assert(sizeof(c10d::ProcessGroupGloo::Options) == 176,
              "c10d::ProcessGroupGloo::Options layout differs from torch 2.11.0's");

// A group of `size` ranks over the c10d store at `store`, its keys under `prefix`. Gloo's device: the
// network interface `iface` when given, else the address `host` resolves to (127.0.0.1 for a job on
// one machine), else this machine's hostname. `device_index` is NCCL's (unused here).
extern "C" void* emotion_gloo_new(void* store, const char* prefix, int rank, int size, const char* iface,
                                  const char* host, int /*device_index*/, long long timeout_ms, char* error,
                                  int error_len) {
  emotion::Group* group = nullptr;
  emotion::guarded(error, error_len, [&] {
    auto opts = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(timeout_ms));
    if (iface != nullptr && iface[0] != '\0') {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
    } else if (host != nullptr && host[0] != '\0') {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(emotion::prefixed_store(store, prefix), rank, size, opts);
    group = new emotion::Group{std::move(pg), /*host=*/true};
  });
  return group;
}

EMOTION_GROUP_FUNCTIONS(gloo)
