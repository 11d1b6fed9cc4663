// CUDA device memory and host<->device copies for Tensor<CUDA, T>; included by core/memory.hpp
// only under nvcc. Allocations go through the caching allocator (core/cuda/caching_allocator.cuh).
#pragma once

#include <poseidon/core/cuda/caching_allocator.cuh>
#include <poseidon/core/cuda/check.cuh>
#include <poseidon/core/cuda/pinned_buffer.cuh>
#include <poseidon/core/memory.hpp>

#include <cuda_runtime.h>

POSEIDON_NAMESPACE_BEGIN

/// Device memory from the caching allocator: frees are cached and reused (see its stream rule),
/// so reshaping and per-iteration scratch buffers cost no cudaMalloc once warmed up.
template <>
struct Allocator<CUDA> {
  static void* allocate(std::size_t bytes) { return CudaCachingAllocator::instance().allocate(bytes); }
  static void deallocate(void* p, std::size_t /*bytes*/) noexcept { CudaCachingAllocator::instance().deallocate(p); }
  static void zero(void* p, std::size_t bytes) {
    if (bytes) POSEIDON_CUDA_CHECK(cudaMemset(p, 0, bytes));
  }
};

namespace detail {
inline void cuda_copy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
  if (bytes && dst != src) POSEIDON_CUDA_CHECK(cudaMemcpy(dst, src, bytes, kind));
}
}  // namespace detail

template <>
struct Copier<CUDA, CPU> {
  static void copy(void* dst, const void* src, std::size_t bytes) {
    detail::cuda_copy(dst, src, bytes, cudaMemcpyHostToDevice);
  }
};
template <>
struct Copier<CPU, CUDA> {
  static void copy(void* dst, const void* src, std::size_t bytes) {
    detail::cuda_copy(dst, src, bytes, cudaMemcpyDeviceToHost);
  }
};
template <>
struct Copier<CUDA, CUDA> {
  static void copy(void* dst, const void* src, std::size_t bytes) {
    detail::cuda_copy(dst, src, bytes, cudaMemcpyDeviceToDevice);
  }
};

POSEIDON_NAMESPACE_END
