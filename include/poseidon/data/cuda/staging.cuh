// BatchStaging<CUDA, T>: batches are assembled in pinned host memory and copied to the top blob
// with cudaMemcpyAsync on the context's stream; the next host() waits only for that copy.
#pragma once

#include <poseidon/core/context.hpp>
#include <poseidon/core/cuda/check.cuh>
#include <poseidon/core/cuda/caching_allocator.cuh>
#include <poseidon/core/cuda/pinned_buffer.cuh>
#include <poseidon/core/tensor.hpp>
#include <poseidon/data/staging.hpp>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <span>

POSEIDON_NAMESPACE_BEGIN
namespace detail {

template <class T>
class BatchStaging<CUDA, T> {
 public:
  BatchStaging() = default;
  ~BatchStaging() {
    // The pinned memory may still be the source of a queued copy: wait before freeing it.
    if (event_) {
      if (pending_ && cudaEventSynchronize(event_) != cudaSuccess) (void)cudaGetLastError();
      if (cudaEventDestroy(event_) != cudaSuccess) (void)cudaGetLastError();
    }
  }
  BatchStaging(const BatchStaging&) = delete;
  BatchStaging& operator=(const BatchStaging&) = delete;

  [[nodiscard]] std::span<T> host(std::size_t n) {
    wait();
    if (n > capacity_) {
      buffer_ = PinnedBuffer(n * sizeof(T));
      capacity_ = n;
    }
    size_ = n;
    return buffer_.as<T>().first(n);
  }

  /// Queues the copy of the first dst.count() staged values into dst's data on ctx.stream().
  /// The stream is a blocking one: kernels on it or on the legacy stream see the batch, and
  /// the previous batch's readers (queued before) are done before it is overwritten.
  void upload(Tensor<CUDA, T>& dst, DeviceContext<CUDA>& ctx) {
    POSEIDON_CHECK(dst.count() <= size_, "BatchStaging::upload: ", size_, " values staged for a blob of shape ",
                   dst.shape_string());
    if (dst.count() == 0) return;
    CudaDeviceGuard guard(ctx.device());
    if (!event_) POSEIDON_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
    POSEIDON_CUDA_CHECK(cudaMemcpyAsync(dst.data(), buffer_.get(), dst.count() * sizeof(T), cudaMemcpyHostToDevice,
                                        ctx.stream()));
    POSEIDON_CUDA_CHECK(cudaEventRecord(event_, ctx.stream()));
    pending_ = true;
  }
  /// Stages `values` (dst.count() of them, from pageable host memory) and uploads them.
  void upload(std::span<const T> values, Tensor<CUDA, T>& dst, DeviceContext<CUDA>& ctx) {
    POSEIDON_CHECK(values.size() == dst.count(), "BatchStaging::upload: ", values.size(),
                   " values for a blob of shape ", dst.shape_string());
    const auto h = host(values.size());
    std::copy(values.begin(), values.end(), h.begin());
    upload(dst, ctx);
  }

 private:
  void wait() {
    if (pending_) {
      POSEIDON_CUDA_CHECK(cudaEventSynchronize(event_));
      pending_ = false;
    }
  }

  PinnedBuffer buffer_;
  std::size_t capacity_ = 0, size_ = 0;
  cudaEvent_t event_ = nullptr;
  bool pending_ = false;
};

}  // namespace detail
POSEIDON_NAMESPACE_END
