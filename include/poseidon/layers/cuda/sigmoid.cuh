// Sigmoid on CUDA: elementwise functors over the same interface as the CPU kernel, with the
// same tanh form so that large |x| never overflows. Included from sigmoid.hpp only under nvcc.
#pragma once

#include <poseidon/layers/cuda/kernel_support.cuh>
#include <poseidon/layers/sigmoid.hpp>

POSEIDON_NAMESPACE_BEGIN
namespace detail {
namespace gpu {
template <class T>
struct SigmoidForwardOp {
  const T* x;
  T* y;
  __device__ void operator()(std::size_t i) const { y[i] = T(0.5) * ::tanh(T(0.5) * x[i]) + T(0.5); }
};
template <class T>
struct SigmoidBackwardOp {
  const T* y;
  const T* dy;
  T* dx;
  __device__ void operator()(std::size_t i) const {
    const T v = y[i];
    dx[i] = dy[i] * v * (T(1) - v);
  }
};
}  // namespace gpu

template <class T>
struct SigmoidKernel<CUDA, T> {
  static void forward(std::size_t n, const T* x, T* y) { gpu::for_each_index(n, gpu::SigmoidForwardOp<T>{x, y}); }
  static void backward(std::size_t n, const T* y, const T* dy, T* dx) {
    gpu::for_each_index(n, gpu::SigmoidBackwardOp<T>{y, dy, dx});
  }
};
}  // namespace detail

POSEIDON_REGISTER_LAYER_CUDA("Sigmoid", SigmoidLayer)

POSEIDON_NAMESPACE_END
