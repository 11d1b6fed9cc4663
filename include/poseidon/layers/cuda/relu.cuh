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
class ReLULayer<CUDA, T> final : public detail::ReLUBase<CUDA, T> {
  using Base = detail::ReLUBase<CUDA, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;
  using Base::Base;

  /// Whether the passes run on cuDNN (negative_slope 0 and a describable tensor).
  [[nodiscard]] bool uses_cudnn() const { return cudnn_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    Base::reshape(bottom, top);
    const std::size_t n = bottom[0]->count();
    cudnn_ = this->rp_.negative_slope == 0 && detail::gpu::cudnn_describable(n);
    if (cudnn_) act_.set_count(n);
  }

 protected:
  void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) override {
    if (bottom[0]->count() == 0) return;
    if (cudnn_)
      act_.forward(ctx.cudnn(), bottom[0]->data(), top[0]->data());
    else
      this->kernel_forward(ctx, bottom, top);
  }

  void backward_impl(Context& ctx, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    if (!propagate_down[0] || bottom[0]->count() == 0) return;
    if (cudnn_)
      // Out of place x is the bottom, in place the top; either way x > 0 exactly where the bottom was.
      act_.backward(ctx.cudnn(), top[0]->data(), top[0]->diff(), bottom[0]->data(), bottom[0]->diff());
    else
      this->kernel_backward(top, bottom);
  }

 private:
  bool cudnn_ = false;
  detail::gpu::CudnnActivation<T> act_{CUDNN_ACTIVATION_RELU};
};

POSEIDON_REGISTER_LAYER_CUDA("ReLU", ReLULayer)

POSEIDON_NAMESPACE_END
