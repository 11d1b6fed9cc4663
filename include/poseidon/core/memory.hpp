// Device memory: Buffer<D> owns raw bytes on a device; copy_bytes moves bytes between devices.
// Host/device transfers are always explicit calls; there is no managed or mirrored memory.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/error.hpp>

#include <cstddef>
#include <cstring>
#include <new>
#include <utility>

POSEIDON_NAMESPACE_BEGIN

/// Allocates and frees device memory. Specialised per device tag; CUDA's lives in core/cuda/memory.cuh.
template <class D>
struct Allocator {
  POSEIDON_NO_KERNEL(D, "Allocator");
};

template <>
struct Allocator<CPU> {
  // 64 bytes: a cache line, and enough for AVX-512 aligned loads.
  static constexpr std::size_t alignment = 64;
  static void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    return ::operator new(bytes, std::align_val_t{alignment});
  }
  static void deallocate(void* p, std::size_t /*bytes*/) noexcept {
    if (p) ::operator delete(p, std::align_val_t{alignment});
  }
  static void zero(void* p, std::size_t bytes) {
    if (bytes) std::memset(p, 0, bytes);
  }
};

/// Copies bytes from a buffer on device Src to one on device Dst.
template <class Dst, class Src>
struct Copier {
  POSEIDON_NO_KERNEL(Dst, "Copier");
};
template <>
struct Copier<CPU, CPU> {
  static void copy(void* dst, const void* src, std::size_t bytes) {
    if (bytes && dst != src) std::memmove(dst, src, bytes);
  }
};

template <class Dst, class Src>
void copy_bytes(void* dst, const void* src, std::size_t bytes) {
  Copier<Dst, Src>::copy(dst, src, bytes);
}

/// Owned, uninitialised bytes on device D. Move-only.
template <class D>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(std::size_t bytes) : ptr_(Allocator<D>::allocate(bytes)), bytes_(bytes) {}
  ~Buffer() { Allocator<D>::deallocate(ptr_, bytes_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      Allocator<D>::deallocate(ptr_, bytes_);
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }

  [[nodiscard]] void* get() const { return ptr_; }
  [[nodiscard]] std::size_t bytes() const { return bytes_; }
  void zero() { Allocator<D>::zero(ptr_, bytes_); }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/core/cuda/memory.cuh>
#endif
