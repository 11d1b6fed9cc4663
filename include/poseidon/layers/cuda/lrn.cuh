// LRN on CUDA: hand-written kernels for both regions that follow the CPU layer's order of operations
// (sums from 0 in region order, no fused multiply-adds); included from lrn.hpp only under nvcc.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/context.hpp>
#include <poseidon/core/cuda/check.cuh>
#include <poseidon/core/device.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/cuda/kernel_support.cuh>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/lrn.hpp>
#include <poseidon/layers/registry.hpp>

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <string_view>
#include <type_traits>
#include <vector>

POSEIDON_NAMESPACE_BEGIN
namespace detail::gpu {

// Why not cuDNN's cudnnLRNCrossChannelForward/Backward: its formula is Caffe's (alpha is divided
// by the window, x / (k + alpha/n sum x^2)^beta), but it takes only 1 <= local_size <= 16,
// k >= 1e-5 and beta >= 0.01, which Caffe and the CPU layer do not demand, it has no within-
// channel mode with Caffe's divisor, and its rounding is its own. The kernels here compute the
// CPU's expression in the CPU's order, with the _rn intrinsics so that nvcc fuses no multiply-add,
// and sqrt and division are correctly rounded on both devices: at beta = 3/4 (AlexNet's, two
// square roots) the results are the CPU's bits; other betas differ by pow's few ulps.

struct LRNGeom {
  int channels = 0, height = 0, width = 0, size = 5;
  bool across = true;
};

template <class T>
__device__ inline T add_rn(T a, T b) {
  if constexpr (std::is_same_v<T, float>) return __fadd_rn(a, b);
  else return __dadd_rn(a, b);
}
template <class T>
__device__ inline T sub_rn(T a, T b) {
  if constexpr (std::is_same_v<T, float>) return __fsub_rn(a, b);
  else return __dsub_rn(a, b);
}
template <class T>
__device__ inline T mul_rn(T a, T b) {
  if constexpr (std::is_same_v<T, float>) return __fmul_rn(a, b);
  else return __dmul_rn(a, b);
}

/// s^-beta as the CPU computes it: 1 / (sqrt(s) sqrt(sqrt(s))) at beta = 3/4, else pow.
template <class T>
__device__ inline T lrn_neg_pow(T s, T beta, bool three_quarters) {
  if constexpr (std::is_same_v<T, float>) {
    if (three_quarters) {
      const float r = sqrtf(s);
      return 1.0f / __fmul_rn(r, sqrtf(r));
    }
    return powf(s, -beta);
  } else {
    if (three_quarters) {
      const double r = ::sqrt(s);
      return 1.0 / __dmul_rn(r, ::sqrt(r));
    }
    return ::pow(s, -beta);
  }
}

/// The region sum of f(j) around element i (an NCHW index), in the CPU's order: across channels
/// from 0 over the neighbouring channels in increasing order; within a channel, each row's sum
/// from 0 over its columns, then those row sums from 0 over the rows (its separable box sum).
template <class T, class F>
__device__ inline T lrn_region_sum(const LRNGeom& g, std::size_t i, F f) {
  const int half = (g.size - 1) / 2;
  const std::size_t plane = static_cast<std::size_t>(g.height) * static_cast<std::size_t>(g.width);
  const std::size_t p = i % plane;
  const std::size_t c = (i / plane) % static_cast<std::size_t>(g.channels);
  const std::size_t base = i - p - c * plane;  // the sample's first element
  T s = T(0);
  if (g.across) {
    const int lo = max(static_cast<int>(c) - half, 0), hi = min(static_cast<int>(c) + half, g.channels - 1);
    for (int cc = lo; cc <= hi; ++cc) s = add_rn(s, f(base + static_cast<std::size_t>(cc) * plane + p));
    return s;
  }
  const int h = static_cast<int>(p) / g.width, w = static_cast<int>(p) % g.width;
  const std::size_t chan = base + c * plane;
  const int hlo = max(h - half, 0), hhi = min(h + half, g.height - 1);
  const int wlo = max(w - half, 0), whi = min(w + half, g.width - 1);
  for (int hh = hlo; hh <= hhi; ++hh) {
    T row = T(0);
    for (int ww = wlo; ww <= whi; ++ww)
      row = add_rn(row, f(chan + static_cast<std::size_t>(hh) * static_cast<std::size_t>(g.width) +
                             static_cast<std::size_t>(ww)));
    s = add_rn(s, row);
  }
  return s;
}

template <class T>
struct Square {
  const T* x;
  __device__ T operator()(std::size_t j) const { return mul_rn(x[j], x[j]); }
};
template <class T>
struct Load {
  const T* v;
  __device__ T operator()(std::size_t j) const { return v[j]; }
};

// scale = k + alpha/n * region sum of x^2, y = x * scale^-beta.
template <class T>
__global__ void lrn_forward_kernel(std::size_t n, LRNGeom g, T coeff, T k, T beta, bool three_quarters, const T* x,
                                   T* scale, T* y) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(blockDim.x) * gridDim.x) {
    const T s = add_rn(k, mul_rn(coeff, lrn_region_sum<T>(g, i, Square<T>{x})));
    scale[i] = s;
    y[i] = mul_rn(x[i], lrn_neg_pow(s, beta, three_quarters));
  }
}

// ratio = dy * y / scale (the CPU's left-to-right expression).
template <class T>
__global__ void lrn_ratio_kernel(std::size_t n, const T* dy, const T* y, const T* scale, T* ratio) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(blockDim.x) * gridDim.x)
    ratio[i] = mul_rn(dy[i], y[i]) / scale[i];
}

// dx = dy * scale^-beta - (2 alpha beta / n * x) * region sum of ratio; the regions are
// symmetric, so an element's own region is the set of elements whose region holds it.
template <class T>
__global__ void lrn_backward_kernel(std::size_t n, LRNGeom g, T coeff, T beta, bool three_quarters, const T* x,
                                    const T* scale, const T* ratio, const T* dy, T* dx) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(blockDim.x) * gridDim.x) {
    const T sum = lrn_region_sum<T>(g, i, Load<T>{ratio});
    dx[i] = sub_rn(mul_rn(dy[i], lrn_neg_pow(scale[i], beta, three_quarters)), mul_rn(mul_rn(coeff, x[i]), sum));
  }
}

}  // namespace detail::gpu

/// The CUDA LRN layer: the CPU layer's parameters, checks and scale buffer, computed by the kernels
/// above on the context's stream.
template <class T>
class LRNLayer<CUDA, T> final : public Layer<CUDA, T> {
  using Base = Layer<CUDA, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit LRNLayer(const LayerParameter& p)
      : Base(p), lp_(LRNParam::from_message(p.sub("lrn_param"), p.describe() + " lrn_param")) {}
  LRNLayer(const LayerParameter& p, LRNParam lp) : Base(p), lp_(lp) {}

  [[nodiscard]] std::string_view type() const override { return "LRN"; }
  [[nodiscard]] int exact_num_bottom() const override { return 1; }
  [[nodiscard]] int exact_num_top() const override { return 1; }
  [[nodiscard]] const LRNParam& lrn_param() const { return lp_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    const auto& b = *bottom[0];
    this->check_axes(b, 0, 4, 4);
    g_.channels = b.shape(1);
    g_.height = b.shape(2);
    g_.width = b.shape(3);
    top[0]->reshape(b.shape());
    scale_.reshape(b.shape());
  }

 protected:
  void layer_setup(Context&, const Vec& bottom, const Vec&) override {
    // The CPU layer's checks and messages: a prototxt fails the same way on either device.
    this->check(lp_.local_size > 0, "local_size must be positive, got ", lp_.local_size);
    this->check(lp_.local_size % 2 == 1, "local_size must be odd, got ", lp_.local_size);
    this->check(std::isfinite(lp_.alpha) && std::isfinite(lp_.beta) && std::isfinite(lp_.k),
                "alpha, beta and k must be finite, got ", lp_.alpha, ", ", lp_.beta, ", ", lp_.k);
    this->check_axes(*bottom[0], 0, 4, 4);
    g_.size = lp_.local_size;
    g_.across = lp_.norm_region == LRNParam::NormRegion::across_channels;
  }

  void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) override {
    const std::size_t n = bottom[0]->count();
    if (n == 0) return;
    // The constants in T, as the CPU rounds them: alpha / n, then k + that * sum.
    const T coeff = static_cast<T>(lp_.alpha) / static_cast<T>(n_region());
    detail::gpu::lrn_forward_kernel<T><<<detail::gpu::grid_for(n), detail::gpu::block_threads, 0, ctx.stream()>>>(
        n, g_, coeff, static_cast<T>(lp_.k), beta(), three_quarters(), bottom[0]->data(), scale_.data(),
        top[0]->data());
    POSEIDON_CUDA_CHECK(cudaGetLastError());
  }

  void backward_impl(Context& ctx, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    if (!propagate_down[0]) return;
    const std::size_t n = bottom[0]->count();
    if (n == 0) return;
    namespace gpu = detail::gpu;
    ratio_.reshape(bottom[0]->shape());
    gpu::lrn_ratio_kernel<T><<<gpu::grid_for(n), gpu::block_threads, 0, ctx.stream()>>>(
        n, top[0]->diff(), top[0]->data(), scale_.data(), ratio_.data());
    POSEIDON_CUDA_CHECK(cudaGetLastError());
    const T coeff = T(2) * static_cast<T>(lp_.alpha) * beta() / static_cast<T>(n_region());
    gpu::lrn_backward_kernel<T><<<gpu::grid_for(n), gpu::block_threads, 0, ctx.stream()>>>(
        n, g_, coeff, beta(), three_quarters(), bottom[0]->data(), scale_.data(), ratio_.data(), top[0]->diff(),
        bottom[0]->diff());
    POSEIDON_CUDA_CHECK(cudaGetLastError());
  }

 private:
  [[nodiscard]] int n_region() const { return g_.across ? g_.size : g_.size * g_.size; }
  [[nodiscard]] T beta() const { return static_cast<T>(lp_.beta); }
  [[nodiscard]] bool three_quarters() const { return beta() == T(0.75); }

  LRNParam lp_;
  detail::gpu::LRNGeom g_;
  Tensor<CUDA, T> scale_;  // k + alpha/n * region sum of squares, kept for backward
  Tensor<CUDA, T> ratio_;  // dy * y / scale, backward's region-summed term
};

POSEIDON_REGISTER_LAYER_CUDA("LRN", LRNLayer)

POSEIDON_NAMESPACE_END
