// Sigmoid on CUDA: cuDNN's activation (CUDNN_ACTIVATION_SIGMOID) on ctx.stream(); the elementwise functors
// remain for tensors too large for a cuDNN descriptor. Included from sigmoid.hpp only under nvcc.
#pragma once

#include <poseidon/core/context.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/cuda/cudnn_activation_layer.cuh>
#include <poseidon/layers/cuda/cudnn_support.cuh>
#include <poseidon/layers/cuda/kernel_support.cuh>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/layers/sigmoid.hpp>

#include <cstddef>
#include <string_view>
#include <vector>

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

/// The CUDA Sigmoid. cuDNN evaluates 1 / (1 + exp(-x)), the CPU 0.5 tanh(x / 2) + 0.5: they agree
/// to a few ulp.
template <class T>
class SigmoidLayer<CUDA, T> final
    : public detail::gpu::CudnnActivationLayer<T, detail::SigmoidKernel<CUDA, T>, CUDNN_ACTIVATION_SIGMOID> {
  using Base = detail::gpu::CudnnActivationLayer<T, detail::SigmoidKernel<CUDA, T>, CUDNN_ACTIVATION_SIGMOID>;

 public:
  explicit SigmoidLayer(const LayerParameter& p)
      : Base(p), sp_(SigmoidParam::from_message(p.sub("sigmoid_param"), p.describe() + " sigmoid_param")) {}
  SigmoidLayer(const LayerParameter& p, SigmoidParam v) : Base(p), sp_(v) {}

  [[nodiscard]] std::string_view type() const override { return "Sigmoid"; }

 private:
  SigmoidParam sp_;
};

POSEIDON_REGISTER_LAYER_CUDA("Sigmoid", SigmoidLayer)

POSEIDON_NAMESPACE_END
