// ReLU on CUDA: cuDNN's activation for negative_slope 0, own elementwise functors for Caffe's leaky
// ReLU (cuDNN has no leaky mode). Included from relu.hpp only under nvcc with POSEIDON_WITH_CUDA.
#pragma once

#include <poseidon/core/context.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/cuda/cudnn_support.cuh>
#include <poseidon/layers/cuda/kernel_support.cuh>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/layers/relu.hpp>
#include <poseidon/math/blas.hpp>

#include <cmath>
#include <cstddef>
#include <string_view>
#include <vector>

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

/// The leaky ReLU's kernels (and the fallback for tensors too large for a cuDNN descriptor).
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

/// The CUDA ReLU: the CPU layer's parameters, checks and in-place rule, with negative_slope 0 run by
/// cudnnActivationForward/Backward (CUDNN_ACTIVATION_RELU) on ctx.stream(). cuDNN has no leaky
/// ReLU (its coef is the clipped ReLU's ceiling or ELU's alpha), so a non-zero slope runs the
/// ReLUKernel functors above.
template <class T>
class ReLULayer<CUDA, T> final : public Layer<CUDA, T> {
  using Base = Layer<CUDA, T>;
  using Kernel = detail::ReLUKernel<CUDA, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit ReLULayer(const LayerParameter& p)
      : Base(p), rp_(ReLUParam::from_message(p.sub("relu_param"), p.describe() + " relu_param")) {}
  ReLULayer(const LayerParameter& p, ReLUParam rp) : Base(p), rp_(rp) {}

  [[nodiscard]] std::string_view type() const override { return "ReLU"; }
  [[nodiscard]] int exact_num_bottom() const override { return 1; }
  [[nodiscard]] int exact_num_top() const override { return 1; }
  [[nodiscard]] bool supports_in_place() const override { return true; }
  [[nodiscard]] const ReLUParam& relu_param() const { return rp_; }
  /// Whether the passes run on cuDNN (negative_slope 0 and a describable tensor).
  [[nodiscard]] bool uses_cudnn() const { return cudnn_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    if (top[0] != bottom[0]) top[0]->reshape(bottom[0]->shape());
    if (keeps_bottom(bottom, top)) saved_bottom_.reshape(bottom[0]->shape());
    const std::size_t n = bottom[0]->count();
    cudnn_ = rp_.negative_slope == 0 && detail::gpu::cudnn_describable(n);
    if (cudnn_) act_.set_count(n);
  }

 protected:
  void layer_setup(Context&, const Vec&, const Vec&) override {
    this->check(std::isfinite(rp_.negative_slope), "relu_param negative_slope must be finite, got ",
                rp_.negative_slope);
  }

  void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) override {
    const std::size_t n = bottom[0]->count();
    if (n == 0) return;
    if (cudnn_) {
      act_.forward(ctx.cudnn(), bottom[0]->data(), top[0]->data());
      return;
    }
    if (keeps_bottom(bottom, top)) math::copy(ctx, n, bottom[0]->data(), saved_bottom_.data());
    Kernel::forward(n, bottom[0]->data(), top[0]->data(), static_cast<T>(rp_.negative_slope));
  }

  void backward_impl(Context& ctx, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    const std::size_t n = bottom[0]->count();
    if (!propagate_down[0] || n == 0) return;
    if (cudnn_) {
      // Out of place x is the bottom, in place the top; either way x > 0 exactly where the bottom was.
      act_.backward(ctx.cudnn(), top[0]->data(), top[0]->diff(), bottom[0]->data(), bottom[0]->diff());
      return;
    }
    const T* x = keeps_bottom(bottom, top) ? saved_bottom_.data() : bottom[0]->data();
    Kernel::backward(n, x, top[0]->diff(), bottom[0]->diff(), static_cast<T>(rp_.negative_slope));
  }

 private:
  // The CPU layer's rule: a negative slope flips the sign of negative inputs, so in place the top
  // no longer tells which side of 0 the bottom was on; a copy of the bottom is kept for backward.
  [[nodiscard]] bool keeps_bottom(const Vec& bottom, const Vec& top) const {
    return rp_.negative_slope < 0 && (top[0] == bottom[0] || top[0]->shares_data_with(*bottom[0]));
  }

  ReLUParam rp_;
  bool cudnn_ = false;
  detail::gpu::CudnnActivation<T> act_{CUDNN_ACTIVATION_RELU};
  Tensor<CUDA, T> saved_bottom_;
};

POSEIDON_REGISTER_LAYER_CUDA("ReLU", ReLULayer)

POSEIDON_NAMESPACE_END
