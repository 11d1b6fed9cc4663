// Accuracy on CUDA: one thread per labelled position ranks the true class as the CPU does; hits
// and per-class counts are integer atomics (order-free, so exact and reproducible).
#pragma once

#include <poseidon/core/memory.hpp>
#include <poseidon/layers/accuracy.hpp>
#include <poseidon/layers/cuda/kernel_support.cuh>

#include <optional>

POSEIDON_NAMESPACE_BEGIN
namespace detail {
namespace gpu {
template <class T>
struct AccuracyCountOp {
  std::size_t classes, inner;
  const T* x;
  const T* label;
  bool has_ignore;
  int ignore;
  int top_k;
  unsigned long long* counts;  // hits, counted
  T* per_class;                // per-class hits, or null
  T* seen;                     // per-class labels, or null
  __device__ void operator()(std::size_t t) const {
    const T l = label[t];
    if (has_ignore && static_cast<double>(l) == static_cast<double>(ignore)) return;
    const auto c = static_cast<std::size_t>(l);
    const T* xp = x + (t / inner) * classes * inner + t % inner;
    const T truth = xp[c * inner];
    // The true class counts itself, so ties with it are ranked ahead of it (as on the CPU).
    int better = -1;
    for (std::size_t j = 0; j < classes && better < top_k; ++j) better += (xp[j * inner] >= truth);
    const bool hit = better < top_k;
    if (hit) atomicAdd(&counts[0], 1ull);
    atomicAdd(&counts[1], 1ull);
    if (per_class) {
      // Whole numbers below 2^24 add exactly in any order.
      atomicAdd(&seen[c], T(1));
      if (hit) atomicAdd(&per_class[c], T(1));
    }
  }
};

template <class T>
__global__ void accuracy_finish_kernel(std::size_t classes, const unsigned long long* counts, T* acc, T* per_class,
                                       const T* seen) {
  const std::size_t c = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (c == 0)
    *acc = counts[1] ? static_cast<T>(static_cast<double>(counts[0]) / static_cast<double>(counts[1])) : T(0);
  if (per_class && c < classes) per_class[c] = seen[c] > T(0) ? per_class[c] / seen[c] : T(0);
}
}  // namespace gpu

/// Same interface as AccuracyKernel<CPU, T>; every pointer is device memory.
template <class T>
struct AccuracyKernel<CUDA, T> {
  static gpu::LabelCheck find_bad_label(std::size_t n, const T* label, std::size_t classes,
                                        const std::optional<int>& ignore) {
    return gpu::find_bad_label(n, label, classes, ignore);
  }
  static void forward(std::size_t outer, std::size_t classes, std::size_t inner, const T* x, const T* label,
                      const std::optional<int>& ignore, int top_k, T* acc, T* per_class, T* seen) {
    const auto s = gpu::layer_stream();
    Buffer<CUDA> counts(2 * sizeof(unsigned long long));
    auto* cnt = static_cast<unsigned long long*>(counts.get());
    POSEIDON_CUDA_CHECK(cudaMemsetAsync(cnt, 0, 2 * sizeof(unsigned long long), s));
    if (per_class && classes) {
      POSEIDON_CUDA_CHECK(cudaMemsetAsync(per_class, 0, classes * sizeof(T), s));
      POSEIDON_CUDA_CHECK(cudaMemsetAsync(seen, 0, classes * sizeof(T), s));
    }
    gpu::for_each_index(outer * inner, gpu::AccuracyCountOp<T>{classes, inner, x, label, ignore.has_value(),
                                                               ignore.value_or(0), top_k, cnt, per_class, seen});
    const std::size_t n = classes > 0 ? classes : 1;
    gpu::accuracy_finish_kernel<T><<<gpu::grid_for(n), gpu::block_threads, 0, s>>>(classes, cnt, acc, per_class, seen);
    POSEIDON_CUDA_CHECK(cudaGetLastError());
    // The counters are freed when this returns: wait until the finishing kernel has read them.
    POSEIDON_CUDA_CHECK(cudaStreamSynchronize(s));
  }
};
}  // namespace detail

POSEIDON_REGISTER_LAYER_CUDA("Accuracy", AccuracyLayer)

POSEIDON_NAMESPACE_END
