// Eltwise on CUDA: PROD and SUM are math:: calls already; MAX's winner-and-mask kernels are
// functors here, with the CPU's tie rules. Included from eltwise.hpp only under nvcc.
#pragma once

#include <poseidon/layers/cuda/kernel_support.cuh>
#include <poseidon/layers/eltwise.hpp>

POSEIDON_NAMESPACE_BEGIN
namespace detail {
namespace gpu {
template <class T>
struct EltwiseMaxFirstTwoOp {
  const T* a;
  const T* b;
  T* y;
  int* mask;
  __device__ void operator()(std::size_t i) const {
    const bool second = !(a[i] > b[i]);  // ties go to bottom 1, as in Caffe
    y[i] = second ? b[i] : a[i];
    mask[i] = second ? 1 : 0;
  }
};
template <class T>
struct EltwiseMaxNextOp {
  const T* x;
  int index;
  T* y;
  int* mask;
  __device__ void operator()(std::size_t i) const {
    if (x[i] > y[i]) {
      y[i] = x[i];
      mask[i] = index;
    }
  }
};
template <class T>
struct EltwiseMaxBackwardOp {
  const T* dy;
  const int* mask;
  int index;
  T* dx;
  __device__ void operator()(std::size_t i) const { dx[i] = mask[i] == index ? dy[i] : T(0); }
};
}  // namespace gpu

template <class T>
struct EltwiseMaxKernel<CUDA, T> {
  static void first_two(std::size_t n, const T* a, const T* b, T* y, int* mask) {
    gpu::for_each_index(n, gpu::EltwiseMaxFirstTwoOp<T>{a, b, y, mask});
  }
  static void next(std::size_t n, const T* x, int index, T* y, int* mask) {
    gpu::for_each_index(n, gpu::EltwiseMaxNextOp<T>{x, index, y, mask});
  }
  static void backward(std::size_t n, const T* dy, const int* mask, int index, T* dx) {
    gpu::for_each_index(n, gpu::EltwiseMaxBackwardOp<T>{dy, mask, index, dx});
  }
};
}  // namespace detail

POSEIDON_REGISTER_LAYER_CUDA("Eltwise", EltwiseLayer)

POSEIDON_NAMESPACE_END
