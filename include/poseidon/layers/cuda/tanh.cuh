// TanH on CUDA: cuDNN's activation (CUDNN_ACTIVATION_TANH) on ctx.stream(); the elementwise functors
// remain for tensors too large for a cuDNN descriptor. Included from tanh.hpp only under nvcc.
#pragma once

#include <poseidon/core/context.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/cuda/cudnn_activation_layer.cuh>
#include <poseidon/layers/cuda/cudnn_support.cuh>
#include <poseidon/layers/cuda/kernel_support.cuh>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/layers/tanh.hpp>

#include <cstddef>
#include <string_view>
#include <vector>

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

/// The CUDA TanH. cuDNN's tanh and glibc's agree to a few ulp.
template <class T>
class TanHLayer<CUDA, T> final
    : public detail::gpu::CudnnActivationLayer<T, detail::TanHKernel<CUDA, T>, CUDNN_ACTIVATION_TANH> {
  using Base = detail::gpu::CudnnActivationLayer<T, detail::TanHKernel<CUDA, T>, CUDNN_ACTIVATION_TANH>;

 public:
  explicit TanHLayer(const LayerParameter& p)
      : Base(p), tp_(TanHParam::from_message(p.sub("tanh_param"), p.describe() + " tanh_param")) {}
  TanHLayer(const LayerParameter& p, TanHParam v) : Base(p), tp_(v) {}

  [[nodiscard]] std::string_view type() const override { return "TanH"; }

 private:
  TanHParam tp_;
};

POSEIDON_REGISTER_LAYER_CUDA("TanH", TanHLayer)

POSEIDON_NAMESPACE_END
