// Scale on CUDA: an elementwise broadcast for forward and the bottom gradient, and one block per
// scale element for the scale and bias gradients (sums in double, as on the CPU).
#pragma once

#include <poseidon/layers/cuda/kernel_support.cuh>
#include <poseidon/layers/scale.hpp>

POSEIDON_NAMESPACE_BEGIN
namespace detail {
namespace gpu {
template <class T>
struct ScaleForwardOp {
  std::size_t dim, inner;
  const T* x;
  const T* scale;
  const T* bias;
  T* y;
  __device__ void operator()(std::size_t i) const {
    const std::size_t d = (i / inner) % dim;
    y[i] = x[i] * scale[d] + (bias ? bias[d] : T(0));
  }
};

template <class T>
__global__ void scale_reduce_kernel(std::size_t dim, std::size_t inner, std::size_t m, const T* dy, const T* x,
                                    bool accumulate, T* g) {
  const std::size_t d = blockIdx.x;
  double s = 0;
  for (std::size_t j = threadIdx.x; j < m; j += blockDim.x) {
    const std::size_t o = ((j / inner) * dim + d) * inner + j % inner;
    s += x ? static_cast<double>(dy[o]) * static_cast<double>(x[o]) : static_cast<double>(dy[o]);
  }
  s = block_sum(s);
  if (threadIdx.x == 0) g[d] = accumulate ? static_cast<T>(static_cast<double>(g[d]) + s) : static_cast<T>(s);
}
}  // namespace gpu

/// Same interface and arithmetic as ScaleKernel<CPU, T>; every pointer is device memory.
template <class T>
struct ScaleKernel<CUDA, T> {
  /// y = x * scale (+ bias); x may alias y.
  static void forward(std::size_t outer, std::size_t dim, std::size_t inner, const T* x, const T* scale,
                      const T* bias, T* y) {
    if (dim == 0 || inner == 0) return;
    gpu::for_each_index(outer * dim * inner, gpu::ScaleForwardOp<T>{dim, inner, x, scale, bias, y});
  }
  /// g[d] (+)= sum over outer and inner of dy * x (x null: of dy alone).
  static void reduce(std::size_t outer, std::size_t dim, std::size_t inner, const T* dy, const T* x, bool accumulate,
                     T* g) {
    if (outer * inner == 0) {
      // Nothing to sum: the gradient is 0, as the CPU's empty loop leaves it.
      if (!accumulate && dim) POSEIDON_CUDA_CHECK(cudaMemsetAsync(g, 0, dim * sizeof(T), gpu::layer_stream()));
      return;
    }
    gpu::launch_blocks(gpu::scale_reduce_kernel<T>, dim, dim, inner, outer * inner, dy, x, accumulate, g);
  }
};
}  // namespace detail

POSEIDON_REGISTER_LAYER_CUDA("Scale", ScaleLayer)

POSEIDON_NAMESPACE_END
