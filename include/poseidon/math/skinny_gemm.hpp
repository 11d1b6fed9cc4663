// C = A B^T in float where A has a small batch of rows (a fully connected layer's forward pass
// at batch <= 32), on AVX-512; math::gemm takes it for such products.
#pragma once
// Why: OpenBLAS packs B (the weight matrix) into panels on every call and reuses each panel only
// `batch` times. fc6 forward at batch 8 (4096 x 9216 weights) took 32-35 ms through it, at
// ~18 GFLOP/s, where reading the weights once from memory takes ~6 ms here. This kernel streams
// B once, in the order it is stored, against rows of A held in cache: 11.6-12.2 ms.
// The two products of the backward pass at small batch (dx = dy W and dW = dy^T x) were tried
// as well, with packed panels and with C tiles kept in registers: at batch 8 they came within
// -10..+5% of OpenBLAS and at batch 16 lost by 35-80%, so they stay with BLAS.
// skinny_sgemm returns false (and does nothing) where the kernel does not apply, the CPU lacks
// AVX-512 or POSEIDON_SKINNY_GEMM=0; the caller then takes the BLAS path.

#include <poseidon/core/config.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <string_view>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define POSEIDON_SKINNY_GEMM 1
#define POSEIDON_SKINNY_TARGET __attribute__((target("avx512f")))
// The tiles' register arrays only stay in registers when their loops are unrolled in full.
// (nvcc's front end knows neither pragma in host code: there the loops stay as written.)
#if defined(__CUDACC__)
#define POSEIDON_UNROLL
#elif defined(__clang__)
#define POSEIDON_UNROLL _Pragma("unroll")
#else
#define POSEIDON_UNROLL _Pragma("GCC unroll 16")
#endif
#endif

POSEIDON_NAMESPACE_BEGIN
namespace math::detail {

/// The batch up to which the kernel is used, and the least size of B for which it pays (below
/// it OpenBLAS's packing is cheap anyway). fc6's forward, kernel time / OpenBLAS time, one run on
/// a loaded machine: batch 1 0.18, 4 0.23, 8 0.35, 16 0.67, 24 0.58, 32 0.65, 64 0.93.
inline constexpr int skinny_max_batch = 32;
inline constexpr std::size_t skinny_min_elements = std::size_t{1} << 16;

#ifdef POSEIDON_SKINNY_GEMM

// POSEIDON_SKINNY_GEMM=0 turns the kernels off (for side-by-side measurements against BLAS).
inline bool skinny_gemm_enabled() noexcept {
  static const bool on = [] {
    const char* env = std::getenv("POSEIDON_SKINNY_GEMM");
    if (env && std::string_view(env) == "0") return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return on;
}

// The sum of the 16 lanes, once per output at the end of a dot product. (GCC 12 warns about
// _mm512_reduce_add_ps and the lane shuffles: -Wmaybe-uninitialized inside its own headers.)
POSEIDON_SKINNY_TARGET inline float hsum(__m512 v) noexcept {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float s = 0.0f;
  for (float x : lanes) s += x;
  return s;
}

POSEIDON_SKINNY_TARGET inline __mmask16 tail_mask(int left) noexcept {
  return left >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
}

// nt for columns [j0, j0 + R) of C: R rows of B (streamed from memory once) against I rows of A
// (read from cache) at a time, I * R dot products in registers.
template <int I, int R>
POSEIDON_SKINNY_TARGET void nt_tile(int n, int k, float alpha, const float* A, const float* B, float beta, float* C,
                                    int i0, int j0) {
  __m512 acc[I][R];
  POSEIDON_UNROLL
  for (int i = 0; i < I; ++i)
    POSEIDON_UNROLL
    for (int r = 0; r < R; ++r) acc[i][r] = _mm512_setzero_ps();
  const float* a = A + static_cast<std::size_t>(i0) * k;
  const float* b = B + static_cast<std::size_t>(j0) * k;
  int p = 0;
  for (; p + 16 <= k; p += 16) {
    __m512 bv[R];
    POSEIDON_UNROLL
    for (int r = 0; r < R; ++r) bv[r] = _mm512_loadu_ps(b + static_cast<std::size_t>(r) * k + p);
    POSEIDON_UNROLL
    for (int i = 0; i < I; ++i) {
      const __m512 av = _mm512_loadu_ps(a + static_cast<std::size_t>(i) * k + p);
      POSEIDON_UNROLL
      for (int r = 0; r < R; ++r) acc[i][r] = _mm512_fmadd_ps(av, bv[r], acc[i][r]);
    }
  }
  if (p < k) {
    const __mmask16 mask = tail_mask(k - p);
    __m512 bv[R];
    POSEIDON_UNROLL
    for (int r = 0; r < R; ++r) bv[r] = _mm512_maskz_loadu_ps(mask, b + static_cast<std::size_t>(r) * k + p);
    POSEIDON_UNROLL
    for (int i = 0; i < I; ++i) {
      const __m512 av = _mm512_maskz_loadu_ps(mask, a + static_cast<std::size_t>(i) * k + p);
      POSEIDON_UNROLL
      for (int r = 0; r < R; ++r) acc[i][r] = _mm512_fmadd_ps(av, bv[r], acc[i][r]);
    }
  }
  POSEIDON_UNROLL
  for (int i = 0; i < I; ++i)
    POSEIDON_UNROLL
    for (int r = 0; r < R; ++r) {
      float& c = C[static_cast<std::size_t>(i0 + i) * n + j0 + r];
      const float v = alpha * hsum(acc[i][r]);
      c = beta == 0.0f ? v : v + beta * c;
    }
}

// Columns [j0, j0 + R) of C: rows of A in tiles of up to 4; B's R rows come from memory for the
// first tile and from cache for the others.
template <int R>
POSEIDON_SKINNY_TARGET void nt_columns(int m, int n, int k, float alpha, const float* A, const float* B, float beta,
                                       float* C, int j0) {
  for (int i0 = 0; i0 < m; i0 += 4) {
    switch (std::min(4, m - i0)) {
      case 4: nt_tile<4, R>(n, k, alpha, A, B, beta, C, i0, j0); break;
      case 3: nt_tile<3, R>(n, k, alpha, A, B, beta, C, i0, j0); break;
      case 2: nt_tile<2, R>(n, k, alpha, A, B, beta, C, i0, j0); break;
      default: nt_tile<1, R>(n, k, alpha, A, B, beta, C, i0, j0); break;
    }
  }
}

// Columns of C in groups of 6: 4 x 6 accumulators, 6 rows of B and 1 of A in 31 registers.
// fc6 forward at batch 8 (4096 x 9216 weights): 11.6-12.2 ms with groups of 6, 12.2-12.8 with 4,
// 33-35 ms through OpenBLAS; software prefetching made no difference.
POSEIDON_SKINNY_TARGET inline void nt_avx512(int m, int n, int k, float alpha, const float* A, const float* B,
                                             float beta, float* C, int threads) {
  constexpr int R = 6;
  const int groups = (n + R - 1) / R;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int g = 0; g < groups; ++g) {
    const int j0 = g * R;
    switch (std::min(R, n - j0)) {
      case 6: if constexpr (R >= 6) nt_columns<6>(m, n, k, alpha, A, B, beta, C, j0); break;
      case 5: if constexpr (R >= 5) nt_columns<5>(m, n, k, alpha, A, B, beta, C, j0); break;
      case 4: nt_columns<4>(m, n, k, alpha, A, B, beta, C, j0); break;
      case 3: nt_columns<3>(m, n, k, alpha, A, B, beta, C, j0); break;
      case 2: nt_columns<2>(m, n, k, alpha, A, B, beta, C, j0); break;
      default: nt_columns<1>(m, n, k, alpha, A, B, beta, C, j0); break;
    }
  }
}

#endif  // POSEIDON_SKINNY_GEMM

/// C = alpha * op(A) * op(B) + beta * C (row-major, as math::gemm) through the kernel when it
/// applies (op(A) = A with at most 32 rows, op(B) = B^T); false leaves C untouched for BLAS.
inline bool skinny_sgemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, const float* B,
                         float beta, float* C, int threads) {
#ifdef POSEIDON_SKINNY_GEMM
  if (m <= 0 || n <= 0 || k <= 0 || !skinny_gemm_enabled()) return false;
  threads = std::max(1, threads);
  if (!ta && tb && m <= skinny_max_batch && static_cast<std::size_t>(n) * k >= skinny_min_elements) {
    nt_avx512(m, n, k, alpha, A, B, beta, C, threads);
    return true;
  }
#else
  (void)ta, (void)tb, (void)m, (void)n, (void)k, (void)alpha, (void)A, (void)B, (void)beta, (void)C, (void)threads;
#endif
  return false;
}

}  // namespace math::detail
POSEIDON_NAMESPACE_END
