// CUDA device memory and host<->device copies for Tensor<CUDA, T>; included by core/memory.hpp
// only under nvcc. Plain cudaMalloc here; the caching allocator arrives with the CUDA layers.
#pragma once

#include <poseidon/core/cuda/check.cuh>
#include <poseidon/core/memory.hpp>

#include <cuda_runtime.h>

POSEIDON_NAMESPACE_BEGIN

template <>
struct Allocator<CUDA> {
  static void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();  // clear the sticky-free error so later calls are not blamed
      detail::raise("CUDA out of memory: cudaMalloc(", bytes, " bytes) failed: ", cudaGetErrorString(e));
    }
    return p;
  }
  static void deallocate(void* p, std::size_t /*bytes*/) noexcept {
    if (p) (void)cudaFree(p);
  }
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
