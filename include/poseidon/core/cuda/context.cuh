// DeviceContext<CUDA>: one device, one stream, and the cuBLAS and cuDNN handles bound to it.
// Included by core/context.hpp only under nvcc; a context is made per thread that drives a GPU.
#pragma once

#include <poseidon/core/context.hpp>
#include <poseidon/core/cuda/check.cuh>

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

POSEIDON_NAMESPACE_BEGIN

/// The number of CUDA devices visible, 0 when there is no driver or device (never throws).
inline int cuda_device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

namespace detail {
/// The stream this host thread's layer kernels launch on: the running pass's context's stream
/// inside DeviceContext<CUDA>::kernel_scope(), the legacy default stream outside any.
inline cudaStream_t& kernel_stream() {
  thread_local cudaStream_t stream = cudaStreamLegacy;
  return stream;
}
}  // namespace detail

template <>
class DeviceContext<CUDA> {
 public:
  using device_type = CUDA;

  explicit DeviceContext(int device = 0, std::uint64_t seed = Rng::default_seed) : device_(device), rng_(seed) {
    const int n = cuda_device_count();
    POSEIDON_CHECK(device >= 0 && device < n, "DeviceContext<CUDA>: device ", device, " requested but ", n,
                   " CUDA device(s) are visible");
    POSEIDON_CUDA_CHECK(cudaSetDevice(device_));
    // A blocking stream: it orders with the legacy default stream, so the synchronous
    // cudaMemcpy of tensor transfers sees every kernel queued before it.
    POSEIDON_CUDA_CHECK(cudaStreamCreate(&stream_));
    POSEIDON_CUBLAS_CHECK(cublasCreate(&cublas_));
    POSEIDON_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
    POSEIDON_CUDNN_CHECK(cudnnCreate(&cudnn_));
    POSEIDON_CUDNN_CHECK(cudnnSetStream(cudnn_, stream_));
  }
  ~DeviceContext() {
    if (cudnn_) cudnnDestroy(cudnn_);
    if (cublas_) cublasDestroy(cublas_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

  [[nodiscard]] int device() const { return device_; }
  [[nodiscard]] cudaStream_t stream() const { return stream_; }
  [[nodiscard]] cublasHandle_t cublas() const { return cublas_; }
  [[nodiscard]] cudnnHandle_t cudnn() const { return cudnn_; }
  Rng& rng() { return rng_; }
  void synchronize() const { POSEIDON_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

  /// While alive, this thread's layer kernels (detail::kernel_stream()) launch on stream(), with
  /// the pass's cuBLAS and cuDNN calls, so that nothing of the pass runs on the legacy default
  /// stream, which would serialise it against every other stream (a communication stream that
  /// wait-free backprop overlaps with the layers below included). Layer::forward and backward
  /// hold one; scopes nest, each restoring the stream before it.
  class KernelScope {
   public:
    explicit KernelScope(cudaStream_t s) : previous_(detail::kernel_stream()) { detail::kernel_stream() = s; }
    ~KernelScope() { detail::kernel_stream() = previous_; }
    KernelScope(const KernelScope&) = delete;
    KernelScope& operator=(const KernelScope&) = delete;

   private:
    cudaStream_t previous_;
  };
  [[nodiscard]] KernelScope kernel_scope() const { return KernelScope(stream_); }

 private:
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
  Rng rng_;
};

POSEIDON_NAMESPACE_END
