// c10d's TCPStore (libtorch_cpu.so, the rendezvous PyTorch's own process groups and torchrun use) for
// the Rust core: create a server or client, set/get/add/check/wait keys. Values cross as bytes; a
// failure (timeout, refused connection, a port in use) is reported through `error`, never thrown
// across the C boundary. Gloo and NCCL are not involved here.
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "guarded.hpp"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

namespace {
struct StoreHandle {
  c10::intrusive_ptr<c10d::TCPStore> store;
};

using emotion::guarded;
}  // namespace

// A store at host:port: the server (which also counts `world_size` workers, waiting for them when
// `wait_workers`) or a client. `timeout_ms` bounds connecting and every blocking call.
extern "C" void* emotion_store_new(const char* host, int port, int is_server, int world_size, int wait_workers,
                                   long long timeout_ms, char* error, int error_len) {
  StoreHandle* handle = nullptr;
  guarded(error, error_len, [&] {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = is_server != 0;
    if (world_size > 0) opts.numWorkers = static_cast<std::size_t>(world_size);
    opts.waitWorkers = wait_workers != 0;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    handle = new StoreHandle{std::move(store)};
  });
  return handle;
}

extern "C" void emotion_store_free(void* handle) { delete static_cast<StoreHandle*>(handle); }

extern "C" int emotion_store_set(void* handle, const char* key, const unsigned char* value, long long len,
                                 char* error, int error_len) {
  return guarded(error, error_len, [&] {
    std::vector<uint8_t> bytes(value, value + len);
    static_cast<StoreHandle*>(handle)->store->set(std::string(key), bytes);
  });
}

// Blocks until `key` exists (up to the timeout); the value is returned through `out` (malloc'd; the
// caller frees it with emotion_store_free_bytes).
extern "C" int emotion_store_get(void* handle, const char* key, unsigned char** out, long long* out_len, char* error,
                                 int error_len) {
  return guarded(error, error_len, [&] {
    auto bytes = static_cast<StoreHandle*>(handle)->store->get(std::string(key));
    *out_len = static_cast<long long>(bytes.size());
    *out = static_cast<unsigned char*>(std::malloc(bytes.size() > 0 ? bytes.size() : 1));
    if (*out == nullptr) throw std::bad_alloc();
    if (!bytes.empty()) std::memcpy(*out, bytes.data(), bytes.size());
  });
}

extern "C" void emotion_store_free_bytes(unsigned char* bytes) { std::free(bytes); }

extern "C" int emotion_store_add(void* handle, const char* key, long long delta, long long* out, char* error,
                                 int error_len) {
  return guarded(error, error_len,
                 [&] { *out = static_cast<StoreHandle*>(handle)->store->add(std::string(key), delta); });
}

extern "C" int emotion_store_check(void* handle, const char* key, int* out, char* error, int error_len) {
  return guarded(error, error_len, [&] {
    *out = static_cast<StoreHandle*>(handle)->store->check({std::string(key)}) ? 1 : 0;
  });
}

extern "C" int emotion_store_wait(void* handle, const char* key, long long timeout_ms, char* error, int error_len) {
  return guarded(error, error_len, [&] {
    static_cast<StoreHandle*>(handle)->store->wait({std::string(key)}, std::chrono::milliseconds(timeout_ms));
  });
}

// The store as a `c10d::Store*`, for a process group made over it (csrc/gloo/process_group.cpp takes
// its own reference).
extern "C" void* emotion_store_raw(void* handle) {
  // Through `c10d::Store*` before the type is erased: the reader casts `void*` back to that.
  return static_cast<c10d::Store*>(static_cast<StoreHandle*>(handle)->store.get());
}
