// TanH on CUDA: elementwise functors over the same interface as the CPU kernel.
// Included from tanh.hpp only under nvcc with POSEIDON_WITH_CUDA.
#pragma once

#include <poseidon/layers/cuda/kernel_support.cuh>
#include <poseidon/layers/tanh.hpp>

POSEIDON_NAMESPACE_BEGIN
namespace detail {
namespace gpu {
template <class T>
struct TanHForwardOp {
  const T* x;
  T* y;
  __device__ void operator()(std::size_t i) const { y[i] = ::tanh(x[i]); }
};
template <class T>
struct TanHBackwardOp {
  const T* y;
  const T* dy;
  T* dx;
  __device__ void operator()(std::size_t i) const {
    const T v = y[i];
    dx[i] = dy[i] * (T(1) - v * v);
  }
};
}  // namespace gpu

template <class T>
struct TanHKernel<CUDA, T> {
  static void forward(std::size_t n, const T* x, T* y) { gpu::for_each_index(n, gpu::TanHForwardOp<T>{x, y}); }
  static void backward(std::size_t n, const T* y, const T* dy, T* dx) {
    gpu::for_each_index(n, gpu::TanHBackwardOp<T>{y, dy, dx});
  }
};
}  // namespace detail

POSEIDON_REGISTER_LAYER_CUDA("TanH", TanHLayer)

POSEIDON_NAMESPACE_END
