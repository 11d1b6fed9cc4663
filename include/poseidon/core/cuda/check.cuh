// Error checks for CUDA runtime, cuBLAS and cuDNN calls: failures become poseidon::Error
// naming the call, the file and line, and the library's own description.
#pragma once

#include <poseidon/core/error.hpp>

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

POSEIDON_NAMESPACE_BEGIN
namespace detail {

inline void cuda_check(cudaError_t e, const char* what, const char* file, int line) {
  if (e != cudaSuccess) raise("CUDA error in ", what, " at ", file, ":", line, ": ", cudaGetErrorString(e));
}
inline void cublas_check(cublasStatus_t s, const char* what, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS)
    raise("cuBLAS error in ", what, " at ", file, ":", line, ": ", cublasGetStatusString(s));
}
inline void cudnn_check(cudnnStatus_t s, const char* what, const char* file, int line) {
  if (s != CUDNN_STATUS_SUCCESS) raise("cuDNN error in ", what, " at ", file, ":", line, ": ", cudnnGetErrorString(s));
}

}  // namespace detail
POSEIDON_NAMESPACE_END

#define POSEIDON_CUDA_CHECK(call) ::poseidon::detail::cuda_check((call), #call, __FILE__, __LINE__)
#define POSEIDON_CUBLAS_CHECK(call) ::poseidon::detail::cublas_check((call), #call, __FILE__, __LINE__)
#define POSEIDON_CUDNN_CHECK(call) ::poseidon::detail::cudnn_check((call), #call, __FILE__, __LINE__)
