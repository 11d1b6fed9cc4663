// PinnedBuffer: page-locked host memory (cudaHostAlloc), the staging area from which batches
// reach the device by DMA without the driver's extra bounce copy, asynchronously if asked.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/cuda/check.cuh>
#include <poseidon/core/error.hpp>

#include <cuda_runtime.h>

#include <cstddef>
#include <span>
#include <utility>

POSEIDON_NAMESPACE_BEGIN

/// Owned page-locked host bytes. Move-only. Pinning is slow and takes memory from the OS's
/// pageable pool, so keep one per data stream and reuse it rather than making one per batch.
/// Whoever queues an asynchronous copy from or to it must wait for that copy before writing
/// to it again or destroying it (the destructor does not know about queued copies).
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  /// `flags` as for cudaHostAlloc (cudaHostAllocDefault, cudaHostAllocPortable, ...).
  explicit PinnedBuffer(std::size_t bytes, unsigned int flags = cudaHostAllocDefault) : bytes_(bytes) {
    if (bytes == 0) return;
    const cudaError_t e = cudaHostAlloc(&ptr_, bytes, flags);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      ptr_ = nullptr;
      detail::raise("PinnedBuffer: cudaHostAlloc(", bytes, " bytes of page-locked host memory) failed: ",
                    cudaGetErrorString(e));
    }
  }
  ~PinnedBuffer() { reset(); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }

  [[nodiscard]] void* get() const { return ptr_; }
  [[nodiscard]] std::size_t bytes() const { return bytes_; }
  [[nodiscard]] bool empty() const { return ptr_ == nullptr; }
  /// The buffer as whole values of T.
  template <class T>
  [[nodiscard]] std::span<T> as() const {
    return {static_cast<T*>(ptr_), bytes_ / sizeof(T)};
  }

 private:
  void reset() noexcept {
    if (ptr_ && cudaFreeHost(ptr_) != cudaSuccess) (void)cudaGetLastError();
    ptr_ = nullptr;
    bytes_ = 0;
  }

  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

POSEIDON_NAMESPACE_END
