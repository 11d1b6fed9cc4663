// SoftmaxWithLoss on CUDA: the Softmax layer's cuDNN path for the probabilities, a deterministic
// one-block reduction for the loss, and an elementwise gradient.
#pragma once

#include <poseidon/core/context.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/memory.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/cuda/cudnn_support.cuh>
#include <poseidon/layers/cuda/kernel_support.cuh>
#include <poseidon/layers/cuda/softmax.cuh>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/layers/softmax_loss.hpp>
#include <poseidon/math/blas.hpp>

#include <algorithm>
#include <cfloat>
#include <cstddef>
#include <optional>
#include <string_view>
#include <vector>

POSEIDON_NAMESPACE_BEGIN
namespace detail {
namespace gpu {
// One block: the order of the additions is fixed, so the loss is identical from run to run.
template <class T>
__global__ void softmax_loss_sum_kernel(std::size_t outer, std::size_t channels, std::size_t inner, const T* prob,
                                        const T* label, bool has_ignore, int ignore, double* out) {
  double sum = 0, valid = 0;
  const std::size_t n = outer * inner;
  for (std::size_t t = threadIdx.x; t < n; t += blockDim.x) {
    const T l = label[t];
    if (has_ignore && static_cast<double>(l) == static_cast<double>(ignore)) continue;
    const auto c = static_cast<std::size_t>(l);
    const T p = prob[((t / inner) * channels + c) * inner + t % inner];
    // FLT_MIN for both types, as the CPU (and Caffe): a certain wrong prediction costs ~87.3.
    sum -= ::log(::fmax(static_cast<double>(p), static_cast<double>(FLT_MIN)));
    valid += 1;
  }
  sum = block_sum(sum);
  valid = block_sum(valid);
  if (threadIdx.x == 0) {
    out[0] = sum;
    out[1] = valid;
  }
}

template <class T>
struct SoftmaxLossBackwardOp {
  std::size_t channels, inner;
  const T* prob;
  const T* label;
  bool has_ignore;
  int ignore;
  T scale;
  T* dx;
  __device__ void operator()(std::size_t i) const {
    const std::size_t dim = channels * inner;
    const std::size_t n = i / dim, c = (i % dim) / inner, k = i % inner;
    const T l = label[n * inner + k];
    if (has_ignore && static_cast<double>(l) == static_cast<double>(ignore)) {
      dx[i] = T(0);
      return;
    }
    T v = scale * prob[i];
    if (c == static_cast<std::size_t>(l)) v -= scale;
    dx[i] = v;
  }
};
}  // namespace gpu

/// Same interface as SoftmaxLossKernel<CPU, T>; every pointer is device memory. loss() and
/// find_bad_label() return to the host, so they wait for the device. softmax() is the fallback for
/// tensors cuDNN cannot describe.
template <class T>
struct SoftmaxLossKernel<CUDA, T> {
  static void softmax(std::size_t outer, std::size_t channels, std::size_t inner, const T* x, T* prob, T* /*scratch*/) {
    gpu::for_each_index(outer * inner, gpu::SoftmaxForwardOp<T>{channels, inner, x, prob});
  }
  static BadLabel find_bad_label(std::size_t n, const T* label, std::size_t channels,
                                 const std::optional<int>& ignore) {
    const gpu::LabelCheck r = gpu::find_bad_label(n, label, channels, ignore);
    return {r.found, r.index, r.value};
  }
  static double loss(std::size_t outer, std::size_t channels, std::size_t inner, const T* prob, const T* label,
                     const std::optional<int>& ignore, std::size_t& valid) {
    valid = 0;
    if (outer * inner == 0) return 0;
    Buffer<CUDA> out(2 * sizeof(double));
    auto* o = static_cast<double*>(out.get());
    gpu::launch_blocks(gpu::softmax_loss_sum_kernel<T>, 1, outer, channels, inner, prob, label, ignore.has_value(),
                       ignore.value_or(0), o);
    double host[2] = {0, 0};
    gpu::read_back(host, o, 2);
    valid = static_cast<std::size_t>(host[1]);
    return host[0];
  }
  /// dx = scale * (prob - onehot(label)), zero at ignored positions.
  static void backward(std::size_t outer, std::size_t channels, std::size_t inner, const T* prob, const T* label,
                       const std::optional<int>& ignore, T scale, T* dx) {
    gpu::for_each_index(outer * channels * inner, gpu::SoftmaxLossBackwardOp<T>{channels, inner, prob, label,
                                                                                ignore.has_value(), ignore.value_or(0),
                                                                                scale, dx});
  }
};
}  // namespace detail

/// The CUDA SoftmaxWithLoss: the shared layer (parameters, checks, normalisation, tops, loss and
/// gradient from SoftmaxLossKernel<CUDA, T> above), with the probabilities from the Softmax
/// layer's cuDNN path (detail::gpu::CudnnSoftmax, on ctx.stream()) where cuDNN can describe the
/// tensor, else from the kernel.
template <class T>
class SoftmaxWithLossLayer<CUDA, T> final : public detail::SoftmaxWithLossBase<CUDA, T> {
  using Base = detail::SoftmaxWithLossBase<CUDA, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;
  using Base::Base;

  /// Whether the probabilities come from cuDNN (every non-empty tensor of at most INT_MAX values).
  [[nodiscard]] bool uses_cudnn() const { return cudnn_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    Base::reshape(bottom, top);
    cudnn_ = softmax_.set(this->outer_, this->channels_, this->inner_);
  }

 protected:
  void softmax_forward(Context& ctx, const T* x, T* prob) override {
    if (cudnn_)
      softmax_.forward(ctx.cudnn(), x, prob);
    else if (this->outer_ * this->channels_ * this->inner_ > 0)
      detail::SoftmaxLossKernel<CUDA, T>::softmax(this->outer_, this->channels_, this->inner_, x, prob, nullptr);
  }

 private:
  bool cudnn_ = false;
  detail::gpu::CudnnSoftmax<T> softmax_;
};

POSEIDON_REGISTER_LAYER_CUDA("SoftmaxWithLoss", SoftmaxWithLossLayer)

POSEIDON_NAMESPACE_END
