// Launch helpers shared by the CUDA layer kernels (layers/cuda/*.cuh): grid-stride elementwise
// launches of functors and a deterministic block reduction (CUB). Included only under nvcc.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/context.hpp>
#include <poseidon/core/cuda/check.cuh>
#include <poseidon/core/memory.hpp>
#include <poseidon/math/blas.hpp>

#include <cub/block/block_reduce.cuh>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <optional>

POSEIDON_NAMESPACE_BEGIN
namespace detail::gpu {

/// The stream the layer kernels run on. The XxxKernel<D, T> interfaces are shared with the CPU
/// and carry no DeviceContext; Layer::forward and backward bind the pass's ctx.stream() for
/// them (DeviceContext<CUDA>::kernel_scope). Outside a pass it is the legacy default stream,
/// which is ordered with every blocking stream, ctx.stream() included.
inline cudaStream_t layer_stream() { return kernel_stream(); }

inline constexpr int block_threads = 256;

inline unsigned grid_for(std::size_t n) {
  return static_cast<unsigned>(std::min<std::size_t>((n + block_threads - 1) / block_threads, 65535));
}

/// f(i) for every i in [0, n), on layer_stream(). f is a functor: no --extended-lambda needed.
template <class F>
void for_each_index(std::size_t n, F f) {
  if (n == 0) return;
  math::detail::elementwise_kernel<<<grid_for(n), block_threads, 0, layer_stream()>>>(n, f);
  POSEIDON_CUDA_CHECK(cudaGetLastError());
}

/// Launches kernel<<<blocks, block_threads>>> on layer_stream() (one block per channel and the like).
template <class... KArgs, class... Args>
void launch_blocks(void (*kernel)(KArgs...), std::size_t blocks, Args... args) {
  if (blocks == 0) return;
  // gridDim.x allows 2^31 - 1 blocks; a block per channel is far below it.
  kernel<<<static_cast<unsigned>(blocks), block_threads, 0, layer_stream()>>>(args...);
  POSEIDON_CUDA_CHECK(cudaGetLastError());
}

/// The sum of v over a block of block_threads threads, returned to every thread (CUB's
/// BlockReduce). Its order of additions is fixed by the block shape, so results are bit-identical
/// from run to run. It synchronises the block, so every read a thread made before the call is
/// done when it returns. Every thread of the block must call it.
template <class A>
__device__ A block_sum(A v) {
  using Reduce = cub::BlockReduce<A, block_threads>;
  __shared__ typename Reduce::TempStorage temp;
  __shared__ A total;
  const A s = Reduce(temp).Sum(v);  // valid in thread 0 only
  if (threadIdx.x == 0) total = s;
  __syncthreads();
  const A r = total;
  // A second call must not overwrite `total` or reuse `temp` before every thread has read it.
  __syncthreads();
  return r;
}

/// Copies n values from the device to the host and waits for them (the layers' stream first).
template <class V>
void read_back(V* host, const V* device, std::size_t n) {
  POSEIDON_CUDA_CHECK(cudaMemcpyAsync(host, device, n * sizeof(V), cudaMemcpyDeviceToHost, layer_stream()));
  POSEIDON_CUDA_CHECK(cudaStreamSynchronize(layer_stream()));
}

/// The first label that is neither the ignore label nor an integer class index in [0, classes).
struct LabelCheck {
  bool found = false;
  std::size_t index = 0;
  double value = 0;
};

template <class T>
__global__ void first_bad_label_kernel(std::size_t n, const T* label, std::size_t classes, bool has_ignore, int ignore,
                                       unsigned long long* first) {
  const std::size_t stride = std::size_t(blockDim.x) * gridDim.x;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const double v = static_cast<double>(label[i]);
    if (has_ignore && v == static_cast<double>(ignore)) continue;
    if (!(v >= 0 && v < static_cast<double>(classes)) || v != ::floor(v))
      atomicMin(first, static_cast<unsigned long long>(i));
  }
}

/// Validates labels on the device (the same rule as the CPU kernels) before any is used as an
/// index; the lowest bad index is reported, as the CPU's sequential scan would.
template <class T>
LabelCheck find_bad_label(std::size_t n, const T* label, std::size_t classes, const std::optional<int>& ignore) {
  if (n == 0) return {};
  Buffer<CUDA> first(sizeof(unsigned long long));
  auto* f = static_cast<unsigned long long*>(first.get());
  POSEIDON_CUDA_CHECK(cudaMemsetAsync(f, 0xFF, sizeof(unsigned long long), layer_stream()));
  first_bad_label_kernel<<<grid_for(n), block_threads, 0, layer_stream()>>>(n, label, classes, ignore.has_value(),
                                                                             ignore.value_or(0), f);
  POSEIDON_CUDA_CHECK(cudaGetLastError());
  unsigned long long i = 0;
  read_back(&i, f, 1);
  if (i == ~0ull) return {};
  T v{};
  read_back(&v, label + i, 1);
  return {true, static_cast<std::size_t>(i), static_cast<double>(v)};
}

}  // namespace detail::gpu
POSEIDON_NAMESPACE_END
