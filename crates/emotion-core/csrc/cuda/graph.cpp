// CUDA graph capture and replay for the training step (`TrainConfig.cudaGraph`), and the side stream
// capture needs. Built apart from the addon (scripts/cuda-graph.mjs) into its own shared object:
// it needs symbols of `libtorch_cuda.so`, which the addon does not link, so the package's loader
// opens it with RTLD_GLOBAL only after `libtorch_cuda` loaded, and the core finds these functions
// with `dlsym` (absent: graphs are unavailable and training runs eagerly). Handles cross as opaque
// pointers; a failure is reported through `error`, never thrown across the C boundary.
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <cstdio>
#include <memory>

namespace {

int fail(const std::exception& e, char* error, int error_len) {
  std::snprintf(error, error_len, "%s", e.what());
  return 1;
}

// The calling thread's current stream on `device` replaced by a stream of libtorch's pool until exit
// (capture cannot run on the default stream). It first waits for work queued on the stream it replaces.
struct SideStream {
  c10::cuda::CUDAStream stream;
  std::unique_ptr<c10::cuda::CUDAStreamGuard> guard;
};

// A CUDAGraph that can name its memory pool before the capture ended (`pool()` refuses then), which
// the abort of a failed capture needs.
struct Graph : at::cuda::CUDAGraph {
  bool capturing = false;
  c10::DeviceIndex device() const { return capture_dev_; }
  decltype(mempool_id_) pool_id() const { return mempool_id_; }
};

}  // namespace

extern "C" void* emotion_cuda_stream_enter(int device, char* error, int error_len) {
  try {
    auto index = static_cast<c10::DeviceIndex>(device);
    auto previous = c10::cuda::getCurrentCUDAStream(index);
    auto stream = c10::cuda::getStreamFromPool(false, index);
    cudaEvent_t queued;
    C10_CUDA_CHECK(cudaEventCreateWithFlags(&queued, cudaEventDisableTiming));
    C10_CUDA_CHECK(cudaEventRecord(queued, previous.stream()));
    C10_CUDA_CHECK(cudaStreamWaitEvent(stream.stream(), queued, 0));
    C10_CUDA_CHECK(cudaEventDestroy(queued));
    return new SideStream{stream, std::make_unique<c10::cuda::CUDAStreamGuard>(stream)};
  } catch (const std::exception& e) {
    fail(e, error, error_len);
    return nullptr;
  }
}

// Waits for the side stream's work, then restores the stream it replaced.
extern "C" int emotion_cuda_stream_exit(void* handle, char* error, int error_len) {
  auto side = static_cast<SideStream*>(handle);
  int status = 0;
  try {
    side->stream.synchronize();
  } catch (const std::exception& e) {
    status = fail(e, error, error_len);
  }
  delete side;
  return status;
}

extern "C" void* emotion_cuda_graph_new(char* error, int error_len) {
  try {
    return new Graph();
  } catch (const std::exception& e) {
    fail(e, error, error_len);
    return nullptr;
  }
}

// Starts recording the current stream's work on the current device into the graph (its own memory
// pool; libtorch's default CUDA generator registered, so dropout draws anew at each replay).
extern "C" int emotion_cuda_graph_begin(void* handle, char* error, int error_len) {
  auto g = static_cast<Graph*>(handle);
  try {
    g->capturing = true;
    g->capture_begin();
    return 0;
  } catch (const std::exception& e) {
    return fail(e, error, error_len);
  }
}

extern "C" int emotion_cuda_graph_end(void* handle, char* error, int error_len) {
  auto g = static_cast<Graph*>(handle);
  try {
    g->capturing = false;
    g->capture_end();
    return 0;
  } catch (const std::exception& e) {
    return fail(e, error, error_len);
  }
}

// After a failed capture: ends a capture still open on the stream (an invalidated one included) and
// routes allocations back out of the graph's pool, so eager execution can go on.
extern "C" void emotion_cuda_graph_abort(void* handle) {
  auto g = static_cast<Graph*>(handle);
  auto stream = c10::cuda::getCurrentCUDAStream();
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream.stream(), &status) == cudaSuccess && status != cudaStreamCaptureStatusNone) {
    cudaGraph_t partial = nullptr;
    cudaStreamEndCapture(stream.stream(), &partial);
    if (partial != nullptr) cudaGraphDestroy(partial);
  }
  cudaGetLastError();  // clears the (non-sticky) capture error
  if (g->device() >= 0) {
    try {
      c10::cuda::CUDACachingAllocator::endAllocateToPool(g->device(), g->pool_id());
    } catch (const std::exception&) {
      // capture_end already did it, or capture_begin failed before routing allocations to the pool
    }
  }
  g->capturing = false;
}

extern "C" int emotion_cuda_graph_replay(void* handle, char* error, int error_len) {
  try {
    static_cast<Graph*>(handle)->replay();
    return 0;
  } catch (const std::exception& e) {
    return fail(e, error, error_len);
  }
}

extern "C" void emotion_cuda_graph_free(void* handle) {
  auto g = static_cast<Graph*>(handle);
  if (g->capturing) emotion_cuda_graph_abort(handle);
  try {
    delete g;
  } catch (...) {
    // a destructor that failed to release the pool: the memory stays with the allocator
  }
}
