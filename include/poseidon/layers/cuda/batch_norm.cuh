// BatchNorm on CUDA: one block per channel for the reductions (sums in double, as on the CPU),
// elementwise kernels for the rest; the running averages are updated on the device as on the CPU.
#pragma once

#include <poseidon/layers/batch_norm.hpp>
#include <poseidon/layers/cuda/kernel_support.cuh>

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

/// Same interface and arithmetic as BatchNormKernel<CPU, T>; every pointer is device memory.
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

POSEIDON_REGISTER_LAYER_CUDA("BatchNorm", BatchNormLayer)

POSEIDON_NAMESPACE_END
