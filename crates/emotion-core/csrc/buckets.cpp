// c10d's gradient bucketing (`compute_bucket_assignment_by_size`, what DDP's Reducer uses): which
// parameters share a flat all-reduce buffer, in DDP's order and size limits.
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include "guarded.hpp"

#include <vector>

// Writes the bucket of each of the `n` tensors into `bucket_of`; the first bucket holds up to
// `first_bytes`, the others up to `cap_bytes` (DDP: 1 MiB, then 25 MiB).
extern "C" int emotion_bucket_assignment(at::Tensor** tensors, int n, long long first_bytes, long long cap_bytes,
                                         int* bucket_of, char* error, int error_len) {
  return emotion::guarded(error, error_len, [&] {
    std::vector<at::Tensor> list;
    for (int i = 0; i < n; ++i) list.push_back(*tensors[i]);
    std::vector<size_t> limits{static_cast<size_t>(first_bytes), static_cast<size_t>(cap_bytes)};
    auto buckets = std::get<0>(c10d::compute_bucket_assignment_by_size(list, limits));
    for (size_t b = 0; b < buckets.size(); ++b) {
      for (auto i : buckets[b]) bucket_of[i] = static_cast<int>(b);
    }
  });
}
