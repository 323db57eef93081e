// A caching allocator for large CPU tensors, installed as libtorch's CPU allocator.
//
// libtorch's default CPU allocator returns every block to glibc, which hands blocks over 32 MiB (and
// trimmed heap tops) back to the kernel; the next training step maps them again and the kernel zeroes
// every page on first touch. Profiling the audio CNN step (perf, 2 cores) put 20 % of the time in page
// faults. Keeping freed blocks of 1 MiB and more for reuse, as the CUDA caching allocator does on the
// GPU, removes that cost; smaller blocks go to the default allocator, which serves them from the heap.
//
// Blocks are matched by size (rounded to 64 KiB; a cached block up to 1/8 larger is reused), the free
// cache is capped, and `emotion_cpu_cache_release` returns every cached block to the system (each job
// calls it when it ends). Pointers handed out are the allocation itself (a "simple" DataPtr), so the
// raw allocate/deallocate interface works too.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>

namespace {

constexpr size_t kMinCached = size_t(1) << 20;   // smaller blocks: the default allocator
constexpr size_t kGranule = size_t(64) << 10;    // sizes are rounded up to 64 KiB
constexpr size_t kHugeAlign = size_t(2) << 20;   // blocks ≥ 4 MiB: 2 MiB aligned, transparent huge pages

struct Stats {
  uint64_t hits = 0, misses = 0;
  uint64_t live_bytes = 0, cached_bytes = 0, peak_bytes = 0;
};

class CachingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    if (n < kMinCached) {
      c10::DataPtr small = fallback()->allocate(n);
      return small;
    }
    void* ptr = take(n);
    return {ptr, ptr, &delete_any, c10::Device(c10::DeviceType::CPU)};
  }

  // oneDNN (ideep) allocates through the raw interface, small blocks included.
  c10::DeleterFnPtr raw_deleter() const override { return &delete_any; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  static CachingCpuAllocator& get() {
    // Never destroyed: tensors may be freed during process exit, after static destructors ran.
    static auto* instance = new CachingCpuAllocator();
    return *instance;
  }

  static c10::Allocator* fallback() {
    static c10::Allocator* allocator = c10::GetDefaultCPUAllocator();
    return allocator;
  }

  void* take(size_t n) {
    size_t size = (n + kGranule - 1) / kGranule * kGranule;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.lower_bound(size);
      if (it != free_.end() && it->first <= size + size / 8) {
        void* ptr = it->second;
        size_t got = it->first;
        free_.erase(it);
        stats_.cached_bytes -= got;
        stats_.live_bytes += got;
        stats_.hits += 1;
        stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.live_bytes + stats_.cached_bytes);
        sizes_[ptr] = got;
        return ptr;
      }
    }
    void* ptr = system_alloc(size);
    if (ptr == nullptr) {
      // Out of memory: give the cache back and try once more before failing like libtorch does.
      release_all();
      ptr = system_alloc(size);
    }
    if (ptr == nullptr) {
      TORCH_CHECK_WITH(OutOfMemoryError, false, "CPU out of memory: tried to allocate ", n, " bytes");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    sizes_[ptr] = size;
    stats_.misses += 1;
    stats_.live_bytes += size;
    stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.live_bytes + stats_.cached_bytes);
    return ptr;
  }

  void give_back(void* ptr) {
    std::unique_lock<std::mutex> lock(mutex_);
    auto it = sizes_.find(ptr);
    if (it == sizes_.end()) {
      // A small block: the default allocator's (reached through `raw_deleter`).
      lock.unlock();
      c10::DeleterFnPtr small = fallback()->raw_deleter();
      if (small != nullptr) {
        small(ptr);
      } else {
        std::free(ptr);  // c10's default CPU allocator takes its blocks from posix_memalign
      }
      return;
    }
    size_t size = it->second;
    sizes_.erase(it);
    stats_.live_bytes -= size;
    if (enabled_ && stats_.cached_bytes + size <= limit_) {
      free_.emplace(size, ptr);
      stats_.cached_bytes += size;
      return;
    }
    lock.unlock();
    std::free(ptr);
  }

  void release_all() {
    std::multimap<size_t, void*> blocks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(free_);
      stats_.cached_bytes = 0;
    }
    for (auto& [size, ptr] : blocks) std::free(ptr);
  }

  void set_limit(uint64_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      limit_ = bytes;
      enabled_ = bytes > 0;
    }
    if (bytes == 0) release_all();
  }

  Stats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

  void reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.peak_bytes = stats_.live_bytes + stats_.cached_bytes;
    stats_.hits = stats_.misses = 0;
  }

 private:
  static void delete_any(void* ptr) {
    if (ptr != nullptr) get().give_back(ptr);
  }

  static void* system_alloc(size_t size) {
    size_t align = size >= 2 * kHugeAlign ? kHugeAlign : 64;
    void* ptr = nullptr;
    if (posix_memalign(&ptr, align, size) != 0) return nullptr;
    if (align == kHugeAlign) madvise(ptr, size, MADV_HUGEPAGE);  // advice only: failure is harmless
    return ptr;
  }

  std::mutex mutex_;
  std::multimap<size_t, void*> free_;
  // Node-based containers only: a hash table's bucket array would need GLIBCXX_3.4.29
  // (`__throw_bad_array_new_length`), above the addon's libstdc++ baseline (3.4.26).
  std::map<void*, size_t> sizes_;
  Stats stats_;
  uint64_t limit_ = uint64_t(4) << 30;
  bool enabled_ = true;
};

}  // namespace

// Installs the caching allocator as libtorch's CPU allocator (once; later calls only set the limit).
// `limit_bytes`: most bytes kept in the free cache; 0 keeps nothing (every block goes back at once).
extern "C" int emotion_cpu_cache_install(uint64_t limit_bytes) {
  try {
    static std::once_flag once;
    auto& cache = CachingCpuAllocator::get();
    cache.set_limit(limit_bytes);
    std::call_once(once, [&] {
      CachingCpuAllocator::fallback();  // capture the default before replacing it
      c10::SetCPUAllocator(&cache, /*priority=*/1);
    });
    return c10::GetCPUAllocator() == &cache ? 0 : 1;
  } catch (...) {
    return 2;
  }
}

extern "C" void emotion_cpu_cache_release() { CachingCpuAllocator::get().release_all(); }

// hits, misses, live bytes, cached bytes, peak bytes (live + cached) since the last reset.
extern "C" void emotion_cpu_cache_stats(uint64_t* out, int reset) {
  auto& cache = CachingCpuAllocator::get();
  Stats s = cache.stats();
  out[0] = s.hits;
  out[1] = s.misses;
  out[2] = s.live_bytes;
  out[3] = s.cached_bytes;
  out[4] = s.peak_bytes;
  if (reset) cache.reset_peak();
}
