// Softmax on CUDA: one thread per distribution (outer x inner), reading the channels in the
// CPU's order so that both devices round alike; coalesced across threads when inner > 1.
#pragma once

#include <poseidon/layers/cuda/kernel_support.cuh>
#include <poseidon/layers/softmax.hpp>

POSEIDON_NAMESPACE_BEGIN
namespace detail {
namespace gpu {
// Each thread owns one distribution and reads every x of it before writing its y, so x may alias y.
template <class T>
struct SoftmaxForwardOp {
  std::size_t channels, inner;
  const T* x;
  T* y;
  __device__ void operator()(std::size_t t) const {
    const std::size_t base = (t / inner) * channels * inner + t % inner;
    T mx = x[base];
    for (std::size_t c = 1; c < channels; ++c) {
      const T v = x[base + c * inner];
      if (mx < v) mx = v;  // std::max's choice on ties and NaN, as on the CPU
    }
    T sum = 0;
    for (std::size_t c = 0; c < channels; ++c) {
      const T e = ::exp(x[base + c * inner] - mx);
      y[base + c * inner] = e;
      sum += e;
    }
    for (std::size_t c = 0; c < channels; ++c) y[base + c * inner] /= sum;
  }
};

template <class T>
struct SoftmaxBackwardOp {
  std::size_t channels, inner;
  const T* y;
  const T* dy;
  T* dx;
  __device__ void operator()(std::size_t t) const {
    const std::size_t base = (t / inner) * channels * inner + t % inner;
    T dot = 0;
    for (std::size_t c = 0; c < channels; ++c) dot += dy[base + c * inner] * y[base + c * inner];
    for (std::size_t c = 0; c < channels; ++c) {
      const std::size_t i = base + c * inner;
      dx[i] = (dy[i] - dot) * y[i];
    }
  }
};
}  // namespace gpu

/// Same interface as SoftmaxKernel<CPU, T>; the scratch buffer is not needed here (each thread
/// keeps its running max, sum and dot in registers).
template <class T>
struct SoftmaxKernel<CUDA, T> {
  static void forward(std::size_t outer, std::size_t channels, std::size_t inner, const T* x, T* y, T* /*scratch*/) {
    gpu::for_each_index(outer * inner, gpu::SoftmaxForwardOp<T>{channels, inner, x, y});
  }
  static void backward(std::size_t outer, std::size_t channels, std::size_t inner, const T* y, const T* dy, T* dx,
                       T* /*scratch*/) {
    gpu::for_each_index(outer * inner, gpu::SoftmaxBackwardOp<T>{channels, inner, y, dy, dx});
  }
};
}  // namespace detail

POSEIDON_REGISTER_LAYER_CUDA("Softmax", SoftmaxLayer)

POSEIDON_NAMESPACE_END
