// TanH on CUDA: cuDNN's activation (CUDNN_ACTIVATION_TANH) on ctx.stream(); the elementwise functors
// remain for tensors too large for a cuDNN descriptor. Included from tanh.hpp only under nvcc.
#pragma once

#include <poseidon/core/context.hpp>
#include <poseidon/core/tensor.hpp>
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

/// The CUDA TanH: cudnnActivationForward/Backward with one activation descriptor per layer.
/// cuDNN's tanh and glibc's agree to a few ulp.
/// In place: cuDNN allows x == y and dy == dx, and the gradient is a function of y alone.
template <class T>
class TanHLayer<CUDA, T> final : public Layer<CUDA, T> {
  using Base = Layer<CUDA, T>;
  using Kernel = detail::TanHKernel<CUDA, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit TanHLayer(const LayerParameter& p)
      : Base(p), tp_(TanHParam::from_message(p.sub("tanh_param"), p.describe() + " tanh_param")) {}
  TanHLayer(const LayerParameter& p, TanHParam tp) : Base(p), tp_(tp) {}

  [[nodiscard]] std::string_view type() const override { return "TanH"; }
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
  TanHParam tp_;
  bool cudnn_ = false;
  detail::gpu::CudnnActivation<T> act_{CUDNN_ACTIVATION_TANH};
};

POSEIDON_REGISTER_LAYER_CUDA("TanH", TanHLayer)

POSEIDON_NAMESPACE_END
