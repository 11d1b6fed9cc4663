// BatchNorm on CUDA: cuDNN's spatial batch normalisation with Caffe's running statistics kept by
// own kernels; own kernels throughout for what cuDNN cannot take (one value per channel, huge tensors).
#pragma once

#include <poseidon/core/context.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/batch_norm.hpp>
#include <poseidon/layers/cuda/cudnn_support.cuh>
#include <poseidon/layers/cuda/kernel_support.cuh>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/math/blas.hpp>

#include <cmath>
#include <cstddef>
#include <memory>
#include <string_view>
#include <vector>

POSEIDON_NAMESPACE_BEGIN
namespace detail {
namespace gpu {
// A flat index j over one channel's N * S values, mapped to the tensor's N x C x S layout.
__device__ inline std::size_t bn_offset(std::size_t j, std::size_t C, std::size_t S, std::size_t c) {
  return ((j / S) * C + c) * S + j % S;
}

template <class T>
__global__ void bn_batch_stats_kernel(std::size_t C, std::size_t S, std::size_t m, const T* x, T* mean, T* var) {
  const std::size_t c = blockIdx.x;
  double s = 0;
  for (std::size_t j = threadIdx.x; j < m; j += blockDim.x) s += static_cast<double>(x[bn_offset(j, C, S, c)]);
  const double mu = block_sum(s) / static_cast<double>(m);
  // Two passes, as on the CPU: E[(x - mean)^2] does not cancel catastrophically as E[x^2] - mean^2 can.
  double q = 0;
  for (std::size_t j = threadIdx.x; j < m; j += blockDim.x) {
    const double v = static_cast<double>(x[bn_offset(j, C, S, c)]) - mu;
    q += v * v;
  }
  q = block_sum(q);
  if (threadIdx.x == 0) {
    mean[c] = static_cast<T>(mu);
    var[c] = static_cast<T>(q / static_cast<double>(m));
  }
}

template <class T>
__global__ void bn_update_running_kernel(std::size_t C, double correction, double f, const T* mean, const T* var,
                                         T* mean_sum, T* var_sum, T* factor) {
  const std::size_t c = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (c == 0) factor[0] = static_cast<T>(static_cast<double>(factor[0]) * f + 1.0);
  if (c < C) {
    mean_sum[c] = static_cast<T>(static_cast<double>(mean[c]) + f * static_cast<double>(mean_sum[c]));
    var_sum[c] = static_cast<T>(correction * static_cast<double>(var[c]) + f * static_cast<double>(var_sum[c]));
  }
}

template <class T>
struct BnGlobalStatsOp {
  const T* mean_sum;
  const T* var_sum;
  const T* factor;
  T* mean;
  T* var;
  __device__ void operator()(std::size_t c) const {
    const T s = factor[0] == T(0) ? T(0) : T(1) / factor[0];
    mean[c] = s * mean_sum[c];
    var[c] = s * var_sum[c];
  }
};

template <class T>
struct BnInverseStdOp {
  const T* var;
  double eps;
  T* inv_std;
  __device__ void operator()(std::size_t c) const {
    inv_std[c] = static_cast<T>(1.0 / ::sqrt(static_cast<double>(var[c]) + eps));
  }
};

template <class T>
struct BnNormalizeOp {
  std::size_t C, S;
  const T* x;
  const T* mean;
  const T* inv_std;
  T* y;
  T* x_norm;
  __device__ void operator()(std::size_t i) const {
    const std::size_t c = (i / S) % C;
    const T v = (x[i] - mean[c]) * inv_std[c];
    y[i] = v;
    if (x_norm) x_norm[i] = v;
  }
};

template <class T>
struct BnBackwardGlobalOp {
  std::size_t C, S;
  const T* dy;
  const T* inv_std;
  T* dx;
  __device__ void operator()(std::size_t i) const { dx[i] = dy[i] * inv_std[(i / S) % C]; }
};

// Each channel is read and written by its own block only, and block_sum synchronises the block
// after the reads: so dy may alias dx.
template <class T>
__global__ void bn_backward_batch_kernel(std::size_t C, std::size_t S, std::size_t m, const T* dy, const T* y,
                                         const T* inv_std, T* dx) {
  const std::size_t c = blockIdx.x;
  double sdy = 0, sdyy = 0;
  for (std::size_t j = threadIdx.x; j < m; j += blockDim.x) {
    const std::size_t o = bn_offset(j, C, S, c);
    const double g = static_cast<double>(dy[o]);
    sdy += g;
    sdyy += g * static_cast<double>(y[o]);
  }
  sdy = block_sum(sdy);
  sdyy = block_sum(sdyy);
  const T a = static_cast<T>(sdy / static_cast<double>(m)), b = static_cast<T>(sdyy / static_cast<double>(m));
  const T is = inv_std[c];
  for (std::size_t j = threadIdx.x; j < m; j += blockDim.x) {
    const std::size_t o = bn_offset(j, C, S, c);
    dx[o] = (dy[o] - a - b * y[o]) * is;
  }
}
}  // namespace gpu

/// Same interface and arithmetic as BatchNormKernel<CPU, T>; every pointer is device memory. The
/// layer runs its statistics bookkeeping on update_running's kernel and falls back to the rest.
template <class T>
struct BatchNormKernel<CUDA, T> {
  using Dims = BatchNormDims;

  static void batch_stats(const Dims& d, const T* x, T* mean, T* var) {
    gpu::launch_blocks(gpu::bn_batch_stats_kernel<T>, d.C, d.C, d.S, d.N * d.S, x, mean, var);
  }
  static void update_running(const Dims& d, const T* mean, const T* var, double f, T* mean_sum, T* var_sum,
                             T* factor) {
    const double m = static_cast<double>(d.N * d.S);
    const double correction = m > 1 ? m / (m - 1) : 1.0;
    // At least one thread, so that the factor is updated even for C == 0.
    const std::size_t n = d.C > 0 ? d.C : 1;
    gpu::bn_update_running_kernel<T><<<gpu::grid_for(n), gpu::block_threads, 0, gpu::layer_stream()>>>(
        d.C, correction, f, mean, var, mean_sum, var_sum, factor);
    POSEIDON_CUDA_CHECK(cudaGetLastError());
  }
  static void global_stats(const Dims& d, const T* mean_sum, const T* var_sum, const T* factor, T* mean, T* var) {
    gpu::for_each_index(d.C, gpu::BnGlobalStatsOp<T>{mean_sum, var_sum, factor, mean, var});
  }
  static void inverse_std(const Dims& d, const T* var, double eps, T* inv_std) {
    gpu::for_each_index(d.C, gpu::BnInverseStdOp<T>{var, eps, inv_std});
  }
  static void normalize(const Dims& d, const T* x, const T* mean, const T* inv_std, T* y, T* x_norm) {
    gpu::for_each_index(d.count(), gpu::BnNormalizeOp<T>{d.C, d.S, x, mean, inv_std, y, x_norm});
  }
  static void backward_global(const Dims& d, const T* dy, const T* inv_std, T* dx) {
    gpu::for_each_index(d.count(), gpu::BnBackwardGlobalOp<T>{d.C, d.S, dy, inv_std, dx});
  }
  static void backward_batch(const Dims& d, const T* dy, const T* y, const T* inv_std, T* dx) {
    gpu::launch_blocks(gpu::bn_backward_batch_kernel<T>, d.C, d.C, d.S, d.N * d.S, dy, y, inv_std, dx);
  }
};
}  // namespace detail

namespace detail::gpu {
/// Whether cuDNN can run a batch norm with these dimensions and eps: a describable tensor, eps at or
/// above the library's CUDNN_BN_MIN_EPSILON (0 in cuDNN 9, 1e-5 in cuDNN 7), and, with batch
/// statistics, at least two values per channel (cuDNN's unbiased running variance divides by m - 1;
/// Caffe's correction is 1 there).
inline bool cudnn_batch_norm_ok(const BatchNormDims& d, double eps, bool global) {
  return cudnn_describable(d.count()) && eps >= CUDNN_BN_MIN_EPSILON && (global || d.N * d.S > 1);
}
}  // namespace detail::gpu

/// The CUDA BatchNorm: the CPU layer's parameters, checks, blobs and Caffe's statistics, normalised
/// by cuDNN in CUDNN_BATCHNORM_SPATIAL mode over the blob seen as N x C x S x 1, with a ones scale
/// and a zeros bias (Caffe's layer has no affine part):
/// - batch statistics: cudnnBatchNormalizationForwardTraining with exponentialAverageFactor 1 into
///   zeroed buffers, which leaves there exactly this batch's mean and unbiased (m / (m - 1))
///   variance; Caffe's running sums (mean_sum = mean + f mean_sum, var_sum = unbiased var + f
///   var_sum, factor = f factor + 1) are then updated from them by the kernel the CPU-equivalent path
///   uses. cuDNN's own moving average (a convex blend) cannot express Caffe's unnormalised sums.
///   Backward is cudnnBatchNormalizationBackward with the saved mean and inverse std.
/// - stored statistics: mean and variance are the blobs divided by the factor (own kernel), then
///   cudnnBatchNormalizationForwardInference; backward is dy / sqrt(var + eps), an own elementwise
///   kernel (cuDNN's backward assumes batch statistics).
/// Where cuDNN cannot run (see cudnn_batch_norm_ok), the BatchNormKernel<CUDA, T> functions above do
/// the CPU's arithmetic. Training keeps a copy of the bottom (cuDNN's backward needs x, which an
/// in-place layer overwrites), the memory the CPU layer spends on x_norm.
template <class T>
class BatchNormLayer<CUDA, T> final : public detail::BatchNormBase<CUDA, T> {
  using Base = detail::BatchNormBase<CUDA, T>;
  using typename Base::Kernel;
  using Base::bp_;
  using Base::use_global_stats_;
  using Base::channels_;
  using Base::dims_;
  using Base::mean_;
  using Base::variance_;
  using Base::inv_std_;
  using Base::x_norm_;

 public:
  using typename Base::Context;
  using typename Base::Vec;
  using Base::Base;

  /// Whether the current shape runs on cuDNN (false: the own kernels).
  [[nodiscard]] bool uses_cudnn() const { return cudnn_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    Base::reshape(bottom, top);
    const auto& b = *bottom[0];
    cudnn_ = detail::gpu::cudnn_batch_norm_ok(dims_, bp_.eps, use_global_stats_);
    if (!use_global_stats_) (cudnn_ ? saved_x_ : x_norm_).reshape(b.shape());
    if (cudnn_ && !same_dims(dims_, desc_dims_)) {
      detail::gpu::set_tensor_4d<T>(x_desc_->get(), dims_.N, dims_.C, dims_.S, 1);
      // 1 x C x 1 x 1, of float for float data and double for double.
      POSEIDON_CUDNN_CHECK(cudnnDeriveBNTensorDescriptor(bn_desc_->get(), x_desc_->get(), CUDNN_BATCHNORM_SPATIAL));
      desc_dims_ = dims_;
    }
  }

 protected:
  void layer_setup(Context& ctx, const Vec& bottom, const Vec& top) override {
    Base::layer_setup(ctx, bottom, top);
    const Shape per_channel{channels_};
    for (auto* t : {&ones_, &zeros_, &run_mean_, &run_var_, &dscale_, &dbias_}) t->reshape(per_channel);
    math::set(ctx, static_cast<std::size_t>(channels_), T(1), ones_.data());
    math::set(ctx, static_cast<std::size_t>(channels_), T(0), zeros_.data());
    x_desc_ = std::make_unique<detail::gpu::CudnnTensorDesc>();
    bn_desc_ = std::make_unique<detail::gpu::CudnnTensorDesc>();
    desc_dims_ = {};
  }

  void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) override {
    if (dims_.count() == 0) return;
    if (!cudnn_) return this->kernel_forward(bottom, top);
    auto& blobs = this->blobs_;
    const cudnnHandle_t h = ctx.cudnn();
    const detail::gpu::CudnnScalar<T> one = 1, zero = 0;
    const std::size_t c = dims_.C;
    if (use_global_stats_) {
      Kernel::global_stats(dims_, blobs[0]->data(), blobs[1]->data(), blobs[2]->data(), mean_.data(),
                           variance_.data());
      Kernel::inverse_std(dims_, variance_.data(), bp_.eps, inv_std_.data());  // for backward
      // Elementwise (each y from its own x), so an in-place bottom is read before it is written.
      POSEIDON_CUDNN_CHECK(cudnnBatchNormalizationForwardInference(
          h, CUDNN_BATCHNORM_SPATIAL, &one, &zero, x_desc_->get(), bottom[0]->data(), x_desc_->get(),
          top[0]->data(), bn_desc_->get(), ones_.data(), zeros_.data(), mean_.data(), variance_.data(), bp_.eps));
      return;
    }
    // The bottom is kept for backward; normalising from the copy also keeps cuDNN's x and y apart in place.
    math::copy(ctx, dims_.count(), bottom[0]->data(), saved_x_.data());
    // Factor 1 into zeroed buffers: running = 0 * 0 + 1 * batch, this batch's statistics exactly.
    math::set(ctx, c, T(0), run_mean_.data());
    math::set(ctx, c, T(0), run_var_.data());
    POSEIDON_CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(
        h, CUDNN_BATCHNORM_SPATIAL, &one, &zero, x_desc_->get(), saved_x_.data(), x_desc_->get(), top[0]->data(),
        bn_desc_->get(), ones_.data(), zeros_.data(), 1.0, run_mean_.data(), run_var_.data(), bp_.eps,
        mean_.data(), inv_std_.data()));
    // cuDNN's running variance is already the unbiased m / (m - 1) one: correction 1 here.
    detail::gpu::bn_update_running_kernel<T>
        <<<detail::gpu::grid_for(c), detail::gpu::block_threads, 0, ctx.stream()>>>(
            c, 1.0, bp_.moving_average_fraction, mean_.data(), run_var_.data(), blobs[0]->data(), blobs[1]->data(),
            blobs[2]->data());
    POSEIDON_CUDA_CHECK(cudaGetLastError());
  }

  void backward_impl(Context& ctx, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    if (!propagate_down[0] || dims_.count() == 0) return;
    // Stored statistics are constants (dx = dy * inv_std, elementwise; dy may alias dx): the kernel.
    if (use_global_stats_ || !cudnn_) return this->kernel_backward(top, bottom);
    const T* dy = top[0]->diff();
    T* dx = bottom[0]->diff();
    if (dy == dx) {
      // cuDNN does not document dy == dx for batch norm: the reductions read all of dy.
      dy_aside_.reshape(bottom[0]->shape());
      math::copy(ctx, dims_.count(), dy, dy_aside_.data());
      dy = dy_aside_.data();
    }
    const detail::gpu::CudnnScalar<T> one = 1, zero = 0;
    // dscale_/dbias_ receive the gradients of the ones scale and zeros bias, which Caffe's layer has not.
    POSEIDON_CUDNN_CHECK(cudnnBatchNormalizationBackward(
        ctx.cudnn(), CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &zero, x_desc_->get(), saved_x_.data(),
        x_desc_->get(), dy, x_desc_->get(), dx, bn_desc_->get(), ones_.data(), dscale_.data(), dbias_.data(),
        bp_.eps, mean_.data(), inv_std_.data()));
  }

 private:
  [[nodiscard]] static bool same_dims(const detail::BatchNormDims& a, const detail::BatchNormDims& b) {
    return a.N == b.N && a.C == b.C && a.S == b.S;
  }

  bool cudnn_ = false;
  detail::BatchNormDims desc_dims_;
  Tensor<CUDA, T> saved_x_;                    // cuDNN's backward input: the bottom of the last forward
  Tensor<CUDA, T> dy_aside_;                   // the top diff of an in-place backward
  Tensor<CUDA, T> ones_, zeros_;               // cuDNN's scale and bias
  Tensor<CUDA, T> run_mean_, run_var_;         // cuDNN's "running" outputs: one batch's statistics
  Tensor<CUDA, T> dscale_, dbias_;             // cuDNN's scale and bias gradients, unused
  std::unique_ptr<detail::gpu::CudnnTensorDesc> x_desc_, bn_desc_;
};

POSEIDON_REGISTER_LAYER_CUDA("BatchNorm", BatchNormLayer)

POSEIDON_NAMESPACE_END
