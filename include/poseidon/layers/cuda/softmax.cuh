// Softmax on CUDA: cuDNN's accurate channel-mode softmax over the blob seen as outer x channels x
// inner x 1; own per-distribution kernels for tensors beyond cuDNN's int sizes.
#pragma once

#include <poseidon/core/context.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/cuda/cudnn_support.cuh>
#include <poseidon/layers/cuda/kernel_support.cuh>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/layers/softmax.hpp>
#include <poseidon/math/blas.hpp>

#include <cstddef>
#include <memory>
#include <string_view>
#include <vector>

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

/// Same interface as SoftmaxKernel<CPU, T>, for the tensors cuDNN cannot describe: one thread per
/// distribution (its running max, sum and dot in registers, so no scratch), reading the channels
/// in the CPU's order; coalesced across threads when inner > 1.
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

namespace detail::gpu {
/// Caffe's softmax over one axis as cuDNN sees it: the blob as outer x channels x inner x 1
/// (N, C, H, W), CUDNN_SOFTMAX_MODE_CHANNEL normalising over C for every (N, H), with
/// CUDNN_SOFTMAX_ACCURATE subtracting each distribution's maximum first, as the CPU does.
template <class T>
class CudnnSoftmax {
 public:
  /// Describes the tensor; false (and nothing set) when cuDNN cannot take it.
  bool set(std::size_t outer, std::size_t channels, std::size_t inner) {
    if (!cudnn_describable(outer * channels * inner)) return false;
    if (!desc_) desc_ = std::make_unique<CudnnTensorDesc>();
    if (outer != dims_[0] || channels != dims_[1] || inner != dims_[2]) {
      set_tensor_4d<T>(desc_->get(), outer, channels, inner, 1);
      dims_[0] = outer, dims_[1] = channels, dims_[2] = inner;
    }
    return true;
  }
  /// y = softmax(x); x must not alias y (callers copy an in-place input aside first).
  void forward(cudnnHandle_t h, const T* x, T* y) const {
    const CudnnScalar<T> one = 1, zero = 0;
    POSEIDON_CUDNN_CHECK(cudnnSoftmaxForward(h, CUDNN_SOFTMAX_ACCURATE, CUDNN_SOFTMAX_MODE_CHANNEL, &one,
                                             desc_->get(), x, &zero, desc_->get(), y));
  }
  /// dx = (dy - <dy, y>) y per distribution; dy must not alias dx.
  void backward(cudnnHandle_t h, const T* y, const T* dy, T* dx) const {
    const CudnnScalar<T> one = 1, zero = 0;
    POSEIDON_CUDNN_CHECK(cudnnSoftmaxBackward(h, CUDNN_SOFTMAX_ACCURATE, CUDNN_SOFTMAX_MODE_CHANNEL, &one,
                                              desc_->get(), y, desc_->get(), dy, &zero, desc_->get(), dx));
  }

 private:
  std::unique_ptr<CudnnTensorDesc> desc_;
  std::size_t dims_[3] = {0, 0, 0};
};
}  // namespace detail::gpu

/// The CUDA Softmax: the CPU layer's parameter, axis rule and checks, run by cudnnSoftmaxForward/
/// Backward on ctx.stream(); the per-distribution kernels above remain for tensors of more than
/// INT_MAX values. cuDNN does not document x == y (or dy == dx) as allowed for softmax, so an
/// in-place pass first copies its input aside into a scratch tensor of the blob's size.
template <class T>
class SoftmaxLayer<CUDA, T> final : public detail::SoftmaxBase<CUDA, T> {
  using Base = detail::SoftmaxBase<CUDA, T>;
  using Kernel = detail::SoftmaxKernel<CUDA, T>;
  using Base::outer_;
  using Base::channels_;
  using Base::inner_;

 public:
  using typename Base::Context;
  using typename Base::Vec;
  using Base::Base;

  /// Whether the passes run on cuDNN (every non-empty tensor of at most INT_MAX values).
  [[nodiscard]] bool uses_cudnn() const { return cudnn_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    Base::reshape(bottom, top);
    cudnn_ = softmax_.set(outer_, channels_, inner_);
  }

 protected:
  void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) override {
    const std::size_t count = outer_ * channels_ * inner_;
    if (count == 0) return;
    const T* x = bottom[0]->data();
    T* y = top[0]->data();
    if (!cudnn_) {
      Kernel::forward(outer_, channels_, inner_, x, y, nullptr);
      return;
    }
    softmax_.forward(ctx.cudnn(), aside(ctx, x, y, count), y);
  }

  void backward_impl(Context& ctx, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    const std::size_t count = outer_ * channels_ * inner_;
    if (!propagate_down[0] || count == 0) return;
    const T* dy = top[0]->diff();
    T* dx = bottom[0]->diff();
    if (!cudnn_) {
      Kernel::backward(outer_, channels_, inner_, top[0]->data(), dy, dx, nullptr);
      return;
    }
    softmax_.backward(ctx.cudnn(), top[0]->data(), aside(ctx, dy, dx, count), dx);
  }

 private:
  // in itself, or (when it aliases out) a copy of it in scratch_.
  const T* aside(Context& ctx, const T* in, const T* out, std::size_t count) {
    if (in != out) return in;
    if (scratch_.count() != count) scratch_.reshape(Shape{static_cast<int>(count)});
    math::copy(ctx, count, in, scratch_.data());
    return scratch_.data();
  }

  bool cudnn_ = false;
  detail::gpu::CudnnSoftmax<T> softmax_;
  Tensor<CUDA, T> scratch_;  // the input of an in-place pass
};

POSEIDON_REGISTER_LAYER_CUDA("Softmax", SoftmaxLayer)

POSEIDON_NAMESPACE_END
