// CUDA overloads of math/blas.hpp: cuBLAS for BLAS-shaped work, grid-stride kernels for the
// elementwise helpers; everything is queued on the context's stream. Included only under nvcc.
#pragma once

#include <poseidon/core/context.hpp>
#include <poseidon/core/cuda/check.cuh>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <type_traits>

POSEIDON_NAMESPACE_BEGIN
namespace math {

using CudaContext = DeviceContext<CUDA>;

namespace detail {
inline cublasOperation_t cublas_op(Trans t) { return t == Trans::no ? CUBLAS_OP_N : CUBLAS_OP_T; }

template <class F>
__global__ void elementwise_kernel(std::size_t n, F f) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(blockDim.x) * gridDim.x)
    f(i);
}

/// Runs f(i) for i in [0, n) on the context's stream.
template <class F>
void for_each_index(CudaContext& ctx, std::size_t n, F f) {
  if (n == 0) return;
  constexpr int threads = 256;
  const std::size_t blocks = std::min<std::size_t>((n + threads - 1) / threads, 65535);
  elementwise_kernel<<<static_cast<unsigned>(blocks), threads, 0, ctx.stream()>>>(n, f);
  POSEIDON_CUDA_CHECK(cudaGetLastError());
}

// Functors rather than device lambdas: no --extended-lambda needed by users.
template <class T> struct SetOp { T v; T* y; __device__ void operator()(std::size_t i) const { y[i] = v; } };
template <class T> struct AddScalarOp { T a; T* y; __device__ void operator()(std::size_t i) const { y[i] += a; } };
template <class T> struct ScaleOp { T a; const T* x; T* y; __device__ void operator()(std::size_t i) const { y[i] = a * x[i]; } };
template <class T> struct AxpbyOp { T a; const T* x; T b; T* y; __device__ void operator()(std::size_t i) const { y[i] = a * x[i] + b * y[i]; } };
enum class BinOp { add, sub, mul, div };
template <class T, BinOp op> struct BinaryOp {
  const T* a; const T* b; T* y;
  __device__ void operator()(std::size_t i) const {
    if constexpr (op == BinOp::add) y[i] = a[i] + b[i];
    else if constexpr (op == BinOp::sub) y[i] = a[i] - b[i];
    else if constexpr (op == BinOp::mul) y[i] = a[i] * b[i];
    else y[i] = a[i] / b[i];
  }
};
enum class UnOp { sqr, sqrt, exp, log, abs, sign };
template <class T, UnOp op> struct UnaryOp {
  const T* a; T* y;
  __device__ void operator()(std::size_t i) const {
    const T u = a[i];
    if constexpr (op == UnOp::sqr) y[i] = u * u;
    else if constexpr (op == UnOp::sqrt) y[i] = ::sqrt(u);
    else if constexpr (op == UnOp::exp) y[i] = ::exp(u);
    else if constexpr (op == UnOp::log) y[i] = ::log(u);
    else if constexpr (op == UnOp::abs) y[i] = ::fabs(u);
    else y[i] = static_cast<T>((T(0) < u) - (u < T(0)));
  }
};
template <class T> struct PowOp { const T* a; T p; T* y; __device__ void operator()(std::size_t i) const { y[i] = ::pow(a[i], p); } };
}  // namespace detail

/// Row-major C = alpha op(A) op(B) + beta C, computed by cuBLAS (column-major) as C^T = op(B)^T op(A)^T.
template <class T>
void gemm(CudaContext& ctx, Trans ta, Trans tb, int M, int N, int K, T alpha, const T* A, const T* B, T beta, T* C) {
  const int lda = (ta == Trans::no) ? K : M;
  const int ldb = (tb == Trans::no) ? N : K;
  if constexpr (std::is_same_v<T, float>)
    POSEIDON_CUBLAS_CHECK(cublasSgemm(ctx.cublas(), detail::cublas_op(tb), detail::cublas_op(ta), N, M, K, &alpha, B, ldb, A,
                                      lda, &beta, C, N));
  else
    POSEIDON_CUBLAS_CHECK(cublasDgemm(ctx.cublas(), detail::cublas_op(tb), detail::cublas_op(ta), N, M, K, &alpha, B, ldb, A,
                                      lda, &beta, C, N));
}

/// Row-major y = alpha op(A) x + beta y, A stored M x N.
template <class T>
void gemv(CudaContext& ctx, Trans ta, int M, int N, T alpha, const T* A, const T* x, T beta, T* y) {
  // Row-major A is column-major A^T (N x M): flip the transpose flag.
  const cublasOperation_t op = (ta == Trans::no) ? CUBLAS_OP_T : CUBLAS_OP_N;
  if constexpr (std::is_same_v<T, float>)
    POSEIDON_CUBLAS_CHECK(cublasSgemv(ctx.cublas(), op, N, M, &alpha, A, N, x, 1, &beta, y, 1));
  else
    POSEIDON_CUBLAS_CHECK(cublasDgemv(ctx.cublas(), op, N, M, &alpha, A, N, x, 1, &beta, y, 1));
}

template <class T>
void axpy(CudaContext& ctx, std::size_t n, T alpha, const T* x, T* y) {
  const int in = detail::blas_int(n);
  if constexpr (std::is_same_v<T, float>)
    POSEIDON_CUBLAS_CHECK(cublasSaxpy(ctx.cublas(), in, &alpha, x, 1, y, 1));
  else
    POSEIDON_CUBLAS_CHECK(cublasDaxpy(ctx.cublas(), in, &alpha, x, 1, y, 1));
}
template <class T>
void axpby(CudaContext& ctx, std::size_t n, T alpha, const T* x, T beta, T* y) {
  detail::for_each_index(ctx, n, detail::AxpbyOp<T>{alpha, x, beta, y});
}
template <class T>
void scal(CudaContext& ctx, std::size_t n, T alpha, T* x) {
  const int in = detail::blas_int(n);
  if constexpr (std::is_same_v<T, float>)
    POSEIDON_CUBLAS_CHECK(cublasSscal(ctx.cublas(), in, &alpha, x, 1));
  else
    POSEIDON_CUBLAS_CHECK(cublasDscal(ctx.cublas(), in, &alpha, x, 1));
}
template <class T>
void scale(CudaContext& ctx, std::size_t n, T alpha, const T* x, T* y) {
  detail::for_each_index(ctx, n, detail::ScaleOp<T>{alpha, x, y});
}
/// Returns to the host, so it synchronises the stream (cuBLAS host pointer mode).
template <class T>
T dot(CudaContext& ctx, std::size_t n, const T* x, const T* y) {
  T r{};
  if constexpr (std::is_same_v<T, float>)
    POSEIDON_CUBLAS_CHECK(cublasSdot(ctx.cublas(), detail::blas_int(n), x, 1, y, 1, &r));
  else
    POSEIDON_CUBLAS_CHECK(cublasDdot(ctx.cublas(), detail::blas_int(n), x, 1, y, 1, &r));
  return r;
}
template <class T>
T asum(CudaContext& ctx, std::size_t n, const T* x) {
  T r{};
  if constexpr (std::is_same_v<T, float>)
    POSEIDON_CUBLAS_CHECK(cublasSasum(ctx.cublas(), detail::blas_int(n), x, 1, &r));
  else
    POSEIDON_CUBLAS_CHECK(cublasDasum(ctx.cublas(), detail::blas_int(n), x, 1, &r));
  return r;
}
template <class T>
T sumsq(CudaContext& ctx, std::size_t n, const T* x) {
  return dot(ctx, n, x, x);
}
template <class T>
void copy(CudaContext& ctx, std::size_t n, const T* x, T* y) {
  if (n && x != y) POSEIDON_CUDA_CHECK(cudaMemcpyAsync(y, x, n * sizeof(T), cudaMemcpyDeviceToDevice, ctx.stream()));
}
template <class T>
void set(CudaContext& ctx, std::size_t n, T value, T* y) {
  if (value == T(0)) {
    if (n) POSEIDON_CUDA_CHECK(cudaMemsetAsync(y, 0, n * sizeof(T), ctx.stream()));
    return;
  }
  detail::for_each_index(ctx, n, detail::SetOp<T>{value, y});
}
template <class T>
void add_scalar(CudaContext& ctx, std::size_t n, T alpha, T* y) {
  detail::for_each_index(ctx, n, detail::AddScalarOp<T>{alpha, y});
}
template <class T>
void add(CudaContext& ctx, std::size_t n, const T* a, const T* b, T* y) {
  detail::for_each_index(ctx, n, detail::BinaryOp<T, detail::BinOp::add>{a, b, y});
}
template <class T>
void sub(CudaContext& ctx, std::size_t n, const T* a, const T* b, T* y) {
  detail::for_each_index(ctx, n, detail::BinaryOp<T, detail::BinOp::sub>{a, b, y});
}
template <class T>
void mul(CudaContext& ctx, std::size_t n, const T* a, const T* b, T* y) {
  detail::for_each_index(ctx, n, detail::BinaryOp<T, detail::BinOp::mul>{a, b, y});
}
template <class T>
void div(CudaContext& ctx, std::size_t n, const T* a, const T* b, T* y) {
  detail::for_each_index(ctx, n, detail::BinaryOp<T, detail::BinOp::div>{a, b, y});
}
template <class T>
void sqr(CudaContext& ctx, std::size_t n, const T* a, T* y) {
  detail::for_each_index(ctx, n, detail::UnaryOp<T, detail::UnOp::sqr>{a, y});
}
template <class T>
void sqrt(CudaContext& ctx, std::size_t n, const T* a, T* y) {
  detail::for_each_index(ctx, n, detail::UnaryOp<T, detail::UnOp::sqrt>{a, y});
}
template <class T>
void exp(CudaContext& ctx, std::size_t n, const T* a, T* y) {
  detail::for_each_index(ctx, n, detail::UnaryOp<T, detail::UnOp::exp>{a, y});
}
template <class T>
void log(CudaContext& ctx, std::size_t n, const T* a, T* y) {
  detail::for_each_index(ctx, n, detail::UnaryOp<T, detail::UnOp::log>{a, y});
}
template <class T>
void abs(CudaContext& ctx, std::size_t n, const T* a, T* y) {
  detail::for_each_index(ctx, n, detail::UnaryOp<T, detail::UnOp::abs>{a, y});
}
template <class T>
void sign(CudaContext& ctx, std::size_t n, const T* a, T* y) {
  detail::for_each_index(ctx, n, detail::UnaryOp<T, detail::UnOp::sign>{a, y});
}
template <class T>
void powx(CudaContext& ctx, std::size_t n, const T* a, T p, T* y) {
  detail::for_each_index(ctx, n, detail::PowOp<T>{a, p, y});
}

}  // namespace math
POSEIDON_NAMESPACE_END
