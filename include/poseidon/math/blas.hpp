// Dense linear algebra and vector arithmetic, dispatched on the device context's type.
// CPU: CBLAS (OpenBLAS) and OpenMP loops; CUDA overloads live in math/cuda/blas.cuh (nvcc only).
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/context.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/math/skinny_gemm.hpp>

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <type_traits>

POSEIDON_NAMESPACE_BEGIN
namespace math {

/// Whether a matrix operand is used as stored or transposed (row-major storage throughout).
enum class Trans { no, yes };

namespace detail {
inline CBLAS_TRANSPOSE cblas_trans(Trans t) { return t == Trans::no ? CblasNoTrans : CblasTrans; }
inline int blas_int(std::size_t n) {
  POSEIDON_CHECK(n <= static_cast<std::size_t>(std::numeric_limits<int>::max()),
                 "BLAS length ", n, " exceeds INT_MAX");
  return static_cast<int>(n);
}
// Below this many elements an OpenMP region costs more than it saves.
inline constexpr std::size_t omp_min_elements = 1 << 15;

template <class T>
inline constexpr bool blas_type = std::is_same_v<T, float> || std::is_same_v<T, double>;
}  // namespace detail

using CpuContext = DeviceContext<CPU>;

/// C = alpha * op(A) * op(B) + beta * C, with op(A) M x K, op(B) K x N, C M x N (row-major).
/// Float products A B^T with at most 32 rows in A (a fully connected forward pass at a small
/// batch) take math/skinny_gemm.hpp's kernel, which reads B once.
template <class T>
void gemm(CpuContext& ctx, Trans ta, Trans tb, int M, int N, int K, T alpha, const T* A, const T* B, T beta, T* C) {
  static_assert(detail::blas_type<T>, "gemm supports float and double");
  if constexpr (std::is_same_v<T, float>)
    if (detail::skinny_sgemm(ta == Trans::yes, tb == Trans::yes, M, N, K, alpha, A, B, beta, C, ctx.threads())) return;
  const int lda = (ta == Trans::no) ? K : M;
  const int ldb = (tb == Trans::no) ? N : K;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, detail::cblas_trans(ta), detail::cblas_trans(tb), M, N, K, alpha, A, lda, B, ldb,
                beta, C, N);
  else
    cblas_dgemm(CblasRowMajor, detail::cblas_trans(ta), detail::cblas_trans(tb), M, N, K, alpha, A, lda, B, ldb,
                beta, C, N);
}

/// y = alpha * op(A) * x + beta * y, with A stored M x N (row-major).
template <class T>
void gemv(CpuContext&, Trans ta, int M, int N, T alpha, const T* A, const T* x, T beta, T* y) {
  static_assert(detail::blas_type<T>, "gemv supports float and double");
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemv(CblasRowMajor, detail::cblas_trans(ta), M, N, alpha, A, N, x, 1, beta, y, 1);
  else
    cblas_dgemv(CblasRowMajor, detail::cblas_trans(ta), M, N, alpha, A, N, x, 1, beta, y, 1);
}

/// y += alpha * x
template <class T>
void axpy(CpuContext&, std::size_t n, T alpha, const T* x, T* y) {
  if constexpr (std::is_same_v<T, float>)
    cblas_saxpy(detail::blas_int(n), alpha, x, 1, y, 1);
  else if constexpr (std::is_same_v<T, double>)
    cblas_daxpy(detail::blas_int(n), alpha, x, 1, y, 1);
  else
    for (std::size_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

/// y = alpha * x + beta * y
template <class T>
void axpby(CpuContext& ctx, std::size_t n, T alpha, const T* x, T beta, T* y) {
  if (beta == T(1)) return axpy(ctx, n, alpha, x, y);
#pragma omp parallel for if (n > detail::omp_min_elements)
  for (std::size_t i = 0; i < n; ++i) y[i] = alpha * x[i] + beta * y[i];
}

/// x *= alpha
template <class T>
void scal(CpuContext&, std::size_t n, T alpha, T* x) {
  if constexpr (std::is_same_v<T, float>)
    cblas_sscal(detail::blas_int(n), alpha, x, 1);
  else if constexpr (std::is_same_v<T, double>)
    cblas_dscal(detail::blas_int(n), alpha, x, 1);
  else
    for (std::size_t i = 0; i < n; ++i) x[i] *= alpha;
}

/// y = alpha * x
template <class T>
void scale(CpuContext&, std::size_t n, T alpha, const T* x, T* y) {
#pragma omp parallel for if (n > detail::omp_min_elements)
  for (std::size_t i = 0; i < n; ++i) y[i] = alpha * x[i];
}

/// sum x[i] * y[i], accumulated in double for float inputs' sake of reproducible loss values
template <class T>
T dot(CpuContext&, std::size_t n, const T* x, const T* y) {
  if constexpr (std::is_same_v<T, float>)
    return static_cast<T>(cblas_dsdot(detail::blas_int(n), x, 1, y, 1));
  else if constexpr (std::is_same_v<T, double>)
    return cblas_ddot(detail::blas_int(n), x, 1, y, 1);
  else {
    T s = 0;
    for (std::size_t i = 0; i < n; ++i) s += x[i] * y[i];
    return s;
  }
}

/// sum |x[i]|
template <class T>
T asum(CpuContext&, std::size_t n, const T* x) {
  if constexpr (std::is_same_v<T, float>)
    return cblas_sasum(detail::blas_int(n), x, 1);
  else if constexpr (std::is_same_v<T, double>)
    return cblas_dasum(detail::blas_int(n), x, 1);
  else {
    T s = 0;
    for (std::size_t i = 0; i < n; ++i) s += x[i] < 0 ? -x[i] : x[i];
    return s;
  }
}

/// sum x[i]^2
template <class T>
T sumsq(CpuContext& ctx, std::size_t n, const T* x) {
  return dot(ctx, n, x, x);
}

/// y = x
template <class T>
void copy(CpuContext&, std::size_t n, const T* x, T* y) {
  if (n && x != y) std::memcpy(y, x, n * sizeof(T));
}

/// y[i] = value
template <class T>
void set(CpuContext&, std::size_t n, T value, T* y) {
  if (value == T(0)) {
    if (n) std::memset(y, 0, n * sizeof(T));
    return;
  }
  std::fill_n(y, n, value);
}

/// y[i] += alpha
template <class T>
void add_scalar(CpuContext&, std::size_t n, T alpha, T* y) {
#pragma omp parallel for if (n > detail::omp_min_elements)
  for (std::size_t i = 0; i < n; ++i) y[i] += alpha;
}

namespace detail {
template <class T, class F>
void unary(std::size_t n, const T* a, T* y, F f) {
#pragma omp parallel for if (n > omp_min_elements)
  for (std::size_t i = 0; i < n; ++i) y[i] = f(a[i]);
}
template <class T, class F>
void binary(std::size_t n, const T* a, const T* b, T* y, F f) {
#pragma omp parallel for if (n > omp_min_elements)
  for (std::size_t i = 0; i < n; ++i) y[i] = f(a[i], b[i]);
}
}  // namespace detail

// Elementwise y = f(a, b); y may alias a or b.
template <class T>
void add(CpuContext&, std::size_t n, const T* a, const T* b, T* y) {
  detail::binary(n, a, b, y, [](T u, T v) { return u + v; });
}
template <class T>
void sub(CpuContext&, std::size_t n, const T* a, const T* b, T* y) {
  detail::binary(n, a, b, y, [](T u, T v) { return u - v; });
}
template <class T>
void mul(CpuContext&, std::size_t n, const T* a, const T* b, T* y) {
  detail::binary(n, a, b, y, [](T u, T v) { return u * v; });
}
template <class T>
void div(CpuContext&, std::size_t n, const T* a, const T* b, T* y) {
  detail::binary(n, a, b, y, [](T u, T v) { return u / v; });
}
template <class T>
void sqr(CpuContext&, std::size_t n, const T* a, T* y) {
  detail::unary(n, a, y, [](T u) { return u * u; });
}
template <class T>
void sqrt(CpuContext&, std::size_t n, const T* a, T* y) {
  detail::unary(n, a, y, [](T u) { return std::sqrt(u); });
}
template <class T>
void exp(CpuContext&, std::size_t n, const T* a, T* y) {
  detail::unary(n, a, y, [](T u) { return std::exp(u); });
}
template <class T>
void log(CpuContext&, std::size_t n, const T* a, T* y) {
  detail::unary(n, a, y, [](T u) { return std::log(u); });
}
template <class T>
void abs(CpuContext&, std::size_t n, const T* a, T* y) {
  detail::unary(n, a, y, [](T u) { return std::abs(u); });
}
template <class T>
void powx(CpuContext&, std::size_t n, const T* a, T p, T* y) {
  detail::unary(n, a, y, [p](T u) { return std::pow(u, p); });
}
/// y[i] = sign(a[i]) in {-1, 0, 1}
template <class T>
void sign(CpuContext&, std::size_t n, const T* a, T* y) {
  detail::unary(n, a, y, [](T u) { return static_cast<T>((T(0) < u) - (u < T(0))); });
}

}  // namespace math
POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/math/cuda/blas.cuh>
#endif
