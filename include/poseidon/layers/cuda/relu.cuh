// ReLU (and leaky ReLU) on CUDA: elementwise functors over the same interface as the CPU kernel.
// Included from relu.hpp only under nvcc with POSEIDON_WITH_CUDA.
#pragma once

#include <poseidon/layers/cuda/kernel_support.cuh>
#include <poseidon/layers/relu.hpp>

POSEIDON_NAMESPACE_BEGIN
namespace detail {
namespace gpu {
template <class T>
struct ReLUForwardOp {
  const T* x;
  T* y;
  T slope;
  __device__ void operator()(std::size_t i) const { y[i] = x[i] > T(0) ? x[i] : slope * x[i]; }
};
template <class T>
struct ReLUBackwardOp {
  const T* x;
  const T* dy;
  T* dx;
  T slope;
  __device__ void operator()(std::size_t i) const { dx[i] = x[i] > T(0) ? dy[i] : slope * dy[i]; }
};
}  // namespace gpu

template <class T>
struct ReLUKernel<CUDA, T> {
  static void forward(std::size_t n, const T* x, T* y, T slope) {
    gpu::for_each_index(n, gpu::ReLUForwardOp<T>{x, y, slope});
  }
  // As on the CPU, x may be the top data in place: its sign is the bottom's for slope >= 0.
  static void backward(std::size_t n, const T* x, const T* dy, T* dx, T slope) {
    gpu::for_each_index(n, gpu::ReLUBackwardOp<T>{x, dy, dx, slope});
  }
};
}  // namespace detail

POSEIDON_REGISTER_LAYER_CUDA("ReLU", ReLULayer)

POSEIDON_NAMESPACE_END
