// Sigmoid on CUDA: cuDNN's activation (CUDNN_ACTIVATION_SIGMOID) on ctx.stream(); the elementwise functors
// remain for tensors too large for a cuDNN descriptor. Included from sigmoid.hpp only under nvcc.
#pragma once

#include <poseidon/core/context.hpp>
#include <poseidon/core/tensor.hpp>
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

/// The CUDA Sigmoid: cudnnActivationForward/Backward with one activation descriptor per layer.
/// cuDNN evaluates 1 / (1 + exp(-x)), the CPU 0.5 tanh(x / 2) + 0.5: they agree to a few ulp.
/// In place: cuDNN allows x == y and dy == dx, and the gradient is a function of y alone.
template <class T>
class SigmoidLayer<CUDA, T> final : public Layer<CUDA, T> {
  using Base = Layer<CUDA, T>;
  using Kernel = detail::SigmoidKernel<CUDA, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit SigmoidLayer(const LayerParameter& p)
      : Base(p), sp_(SigmoidParam::from_message(p.sub("sigmoid_param"), p.describe() + " sigmoid_param")) {}
  SigmoidLayer(const LayerParameter& p, SigmoidParam sp) : Base(p), sp_(sp) {}

  [[nodiscard]] std::string_view type() const override { return "Sigmoid"; }
  [[nodiscard]] int exact_num_bottom() const override { return 1; }
  [[nodiscard]] int exact_num_top() const override { return 1; }
  [[nodiscard]] bool supports_in_place() const override { return true; }
  /// Whether the passes run on cuDNN (every tensor cuDNN can describe).
  [[nodiscard]] bool uses_cudnn() const { return cudnn_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    if (top[0] != bottom[0]) top[0]->reshape(bottom[0]->shape());
    const std::size_t n = bottom[0]->count();
    cudnn_ = detail::gpu::cudnn_describable(n);
    if (cudnn_) act_.set_count(n);
  }

 protected:
  void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) override {
    if (cudnn_)
      act_.forward(ctx.cudnn(), bottom[0]->data(), top[0]->data());
    else
      Kernel::forward(bottom[0]->count(), bottom[0]->data(), top[0]->data());
  }

  void backward_impl(Context& ctx, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    if (!propagate_down[0]) return;
    if (cudnn_)
      // The derivative is a function of y; x is passed as Caffe's cuDNN layers pass it (in place it
      // is the top itself).
      act_.backward(ctx.cudnn(), top[0]->data(), top[0]->diff(), bottom[0]->data(), bottom[0]->diff());
    else
      Kernel::backward(top[0]->count(), top[0]->data(), top[0]->diff(), bottom[0]->diff());
  }

 private:
  SigmoidParam sp_;
  bool cudnn_ = false;
  detail::gpu::CudnnActivation<T> act_{CUDNN_ACTIVATION_SIGMOID};
};

POSEIDON_REGISTER_LAYER_CUDA("Sigmoid", SigmoidLayer)

POSEIDON_NAMESPACE_END
