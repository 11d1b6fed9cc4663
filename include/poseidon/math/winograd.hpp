// Winograd minimal filtering (Lavin & Gray 2016) for stride-1, undilated 2-d convolution in NCHW:
// F(4x4, 3x3) and F(2x2, 5x5) on 6x6 tiles, for the output, the input gradient and the weight gradient.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/context.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/math/blas.hpp>

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <vector>

// Hand-vectorised variants (AVX2, AVX-512) are compiled next to the portable code with GCC/Clang
// target attributes and picked at run time, so the default (SSE2) build uses them where the CPU
// has them. nvcc's host pass gets the portable code only.
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__CUDACC__)
#define POSEIDON_WINOGRAD_X86 1
#include <immintrin.h>
#define POSEIDON_WINOGRAD_AVX2 __attribute__((target("avx2,fma")))
#define POSEIDON_WINOGRAD_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma")))
#endif
#if defined(__GNUC__)
#define POSEIDON_WINOGRAD_INLINE __attribute__((always_inline)) inline
#define POSEIDON_WINOGRAD_RESTRICT __restrict__
#else
#define POSEIDON_WINOGRAD_INLINE inline
#define POSEIDON_WINOGRAD_RESTRICT
#endif

POSEIDON_NAMESPACE_BEGIN
namespace math {

/// One convolution in Winograd's reach: stride 1, no dilation, a square 3x3 or 5x5 kernel.
struct WinogradShape {
  int channels = 0, outputs = 0;  // C and K, both divisible by group
  int height = 0, width = 0;
  int kernel = 3;
  int pad_h = 0, pad_w = 0;
  int group = 1;
  [[nodiscard]] int out_h() const { return height + 2 * pad_h - kernel + 1; }
  [[nodiscard]] int out_w() const { return width + 2 * pad_w - kernel + 1; }
};

namespace detail::winograd {

// Both algorithms interpolate at the points 0, 1, -1, 2, -2 and infinity, so they share the 6x6
// input transform B^T (Lavin & Gray's F(4x4, 3x3) matrix); G and A^T are the Vandermonde rows of
// those points scaled by B's Lagrange factors 1/4, -1/6, -1/6, 1/24, 1/24, 1.
inline constexpr int alpha = 6;
inline constexpr int alpha2 = alpha * alpha;
inline constexpr double lagrange[alpha] = {1.0 / 4, -1.0 / 6, -1.0 / 6, 1.0 / 24, 1.0 / 24, 1.0};
inline constexpr double points[alpha - 1] = {0, 1, -1, 2, -2};

/// Row i of G (r values): lagrange[i] * (1, p, p^2, ...) at point i; the point at infinity
/// picks the leading coefficient.
inline void g_row(int i, int r, double* out) {
  for (int k = 0; k < r; ++k) out[k] = 0;
  if (i == alpha - 1) {
    out[r - 1] = 1;
    return;
  }
  double v = lagrange[i];
  for (int k = 0; k < r; ++k, v *= points[i]) out[k] = v;
}

template <class T>
inline constexpr int lanes = static_cast<int>(64 / sizeof(T));

// B^T on L lanes: o[i * os] = sum_j B^T[i][j] d[j * ds]. The strides are template arguments so
// that the compiler sees the lanes of different rows apart (and vectorises over l).
template <class T, int L, std::size_t ds, std::size_t os>
POSEIDON_WINOGRAD_INLINE void input_1d(const T* POSEIDON_WINOGRAD_RESTRICT d, T* POSEIDON_WINOGRAD_RESTRICT o) {
  for (int l = 0; l < L; ++l) {
    const T d0 = d[l], d1 = d[ds + l], d2 = d[2 * ds + l], d3 = d[3 * ds + l], d4 = d[4 * ds + l],
            d5 = d[5 * ds + l];
    o[l] = T(4) * d0 - T(5) * d2 + d4;
    o[os + l] = -T(4) * (d1 + d2) + (d3 + d4);
    o[2 * os + l] = T(4) * (d1 - d2) + (d4 - d3);
    o[3 * os + l] = T(2) * (d3 - d1) + (d4 - d2);
    o[4 * os + l] = T(2) * (d1 - d3) + (d4 - d2);
    o[5 * os + l] = T(4) * d1 - T(5) * d3 + d5;
  }
}

// A^T on L lanes for M outputs per tile: o[a * os] = sum_i A^T[a][i] s[i * ss].
template <class T, int M, int L, std::size_t ss, std::size_t os>
POSEIDON_WINOGRAD_INLINE void output_1d(const T* POSEIDON_WINOGRAD_RESTRICT s, T* POSEIDON_WINOGRAD_RESTRICT o) {
  for (int l = 0; l < L; ++l) {
    const T m0 = s[l], m1 = s[ss + l], m2 = s[2 * ss + l], m3 = s[3 * ss + l], m4 = s[4 * ss + l],
            m5 = s[5 * ss + l];
    const T p12 = m1 + m2, d12 = m1 - m2, p34 = m3 + m4, d34 = m3 - m4;
    if constexpr (M == 2) {
      o[l] = m0 + p12 + p34;
      o[os + l] = d12 + T(2) * d34 + m5;
    } else {
      o[l] = m0 + p12 + p34;
      o[os + l] = d12 + T(2) * d34;
      o[2 * os + l] = p12 + T(4) * p34;
      o[3 * os + l] = d12 + T(8) * d34 + m5;
    }
  }
}

// A on L lanes (the transpose of the output transform, M values -> 6): o[i * os] = sum_a A^T[a][i]
// u[a * us]; the output gradient's transform for the weight gradient.
template <class T, int M, int L, std::size_t us, std::size_t os>
POSEIDON_WINOGRAD_INLINE void grad_1d(const T* POSEIDON_WINOGRAD_RESTRICT u, T* POSEIDON_WINOGRAD_RESTRICT o) {
  for (int l = 0; l < L; ++l) {
    if constexpr (M == 2) {
      const T u0 = u[l], u1 = u[us + l];
      o[l] = u0;
      o[os + l] = u0 + u1;
      o[2 * os + l] = u0 - u1;
      o[3 * os + l] = u0 + T(2) * u1;
      o[4 * os + l] = u0 - T(2) * u1;
      o[5 * os + l] = u1;
    } else {
      const T u0 = u[l], u1 = u[us + l], u2 = u[2 * us + l], u3 = u[3 * us + l];
      const T s02 = u0 + u2, s13 = u1 + u3, t02 = u0 + T(4) * u2, t13 = T(2) * u1 + T(8) * u3;
      o[l] = u0;
      o[os + l] = s02 + s13;
      o[2 * os + l] = s02 - s13;
      o[3 * os + l] = t02 + t13;
      o[4 * os + l] = t02 - t13;
      o[5 * os + l] = u3;
    }
  }
}

/// One stride-1 convolution as the tile loops see it (the forward pass, or the input gradient
/// with input and output roles swapped). Channels are handled in blocks of L (a vector's lanes),
/// each group's channels padded with zeros to whole blocks.
struct Plan {
  int ci = 0, co = 0, group = 1;  // input and output channels
  int h = 0, w = 0, oh = 0, ow = 0;
  int pad_h = 0, pad_w = 0;
  int m = 2, r = 5;
  int th = 0, tw = 0;    // tiles per column and row
  int cgp = 0, kgp = 0;  // input and output channels per group, padded to whole blocks
  int hp = 0, wp = 0;    // the padded input plane the tiles cover
  [[nodiscard]] int cig() const { return ci / group; }
  [[nodiscard]] int cog() const { return co / group; }
  [[nodiscard]] int cp() const { return group * cgp; }
  [[nodiscard]] int kp() const { return group * kgp; }
  [[nodiscard]] int tiles_per_image() const { return th * tw; }
};

/// Images [n0, n0 + images) of a pass, and the buffers of their stages: xb, the images' padded
/// planes with channels innermost (images x cp/L x hp x wp x L); v and mb, the transformed
/// inputs and products (tiles x 36 x cp, tiles x 36 x kp: a tile's values together, so that the
/// transforms read and write one small block per tile; the products read every 36th row); yb,
/// the output tiles (images x kp/L x th*m x tw*m x L).
template <class T>
struct Chunk {
  int n0 = 0, images = 0;
  T *xb = nullptr, *v = nullptr, *mb = nullptr, *yb = nullptr;
  [[nodiscard]] int tiles(const Plan& p) const { return images * p.tiles_per_image(); }
};

// Stage 1, jobs (image, channel block) in [j0, j1): NCHW images -> xb, zero outside the image and
// past each group's channels.
template <class T>
POSEIDON_WINOGRAD_INLINE void pack_body(const Plan& p, const Chunk<T>& ch, const T* x, int j0, int j1) {
  constexpr int L = lanes<T>;
  const int blocks = p.cp() / L, gblocks = p.cgp / L, cg = p.cig();
  const std::size_t plane = static_cast<std::size_t>(p.hp) * static_cast<std::size_t>(p.wp) * L;
  for (int job = j0; job < j1; ++job) {
    const int nl = job / blocks, cb = job % blocks;
    const int g = cb / gblocks, cbase = (cb % gblocks) * L;
    T* dst = ch.xb + static_cast<std::size_t>(job) * plane;
    std::memset(dst, 0, plane * sizeof(T));
    const int lanes_used = std::min(L, cg - cbase);
    for (int l = 0; l < lanes_used; ++l) {
      const T* src = x + (static_cast<std::size_t>(ch.n0 + nl) * static_cast<std::size_t>(p.ci) +
                          static_cast<std::size_t>(g * cg + cbase + l)) *
                             static_cast<std::size_t>(p.h) * static_cast<std::size_t>(p.w);
      for (int y = 0; y < p.h; ++y) {
        T* POSEIDON_WINOGRAD_RESTRICT d =
            dst + (static_cast<std::size_t>(y + p.pad_h) * static_cast<std::size_t>(p.wp)
                + static_cast<std::size_t>(p.pad_w)) * L + l;
        const T* POSEIDON_WINOGRAD_RESTRICT s = src + static_cast<std::size_t>(y) * static_cast<std::size_t>(p.w);
        for (int xx = 0; xx < p.w; ++xx) d[static_cast<std::size_t>(xx) * L] = s[xx];
      }
    }
  }
}

// Stage 2, tiles [t0, t1): V[xi][t][c] = (B^T d B)[xi] for every channel block.
template <class T, int M>
POSEIDON_WINOGRAD_INLINE void input_body(const Plan& p, const Chunk<T>& ch, int t0, int t1) {
  constexpr int L = lanes<T>;
  const int blocks = p.cp() / L, tpi = p.tiles_per_image();
  const std::size_t cp = static_cast<std::size_t>(p.cp());
  const std::size_t row = static_cast<std::size_t>(p.wp) * L;
  alignas(64) T in[alpha2 * L], tmp[alpha2 * L], out[alpha2 * L];
  for (int t = t0; t < t1; ++t) {
    const int nl = t / tpi, ty = (t % tpi) / p.tw, tx = t % p.tw;
    for (int cb = 0; cb < blocks; ++cb) {
      const T* base = ch.xb + ((static_cast<std::size_t>(nl) * static_cast<std::size_t>(blocks)
          + static_cast<std::size_t>(cb)) *
                                   static_cast<std::size_t>(p.hp) +
                               static_cast<std::size_t>(ty * M)) * row +
                      static_cast<std::size_t>(tx * M) * L;
      for (int j1 = 0; j1 < alpha; ++j1) std::memcpy(in + j1 * alpha * L, base + static_cast<std::size_t>(j1)
          * row, alpha * L * sizeof(T));
      // Columns of the patch (over j1), then rows (over j2).
      for (int j2 = 0; j2 < alpha; ++j2) input_1d<T, L, alpha * L, alpha * L>(in + j2 * L, tmp + j2 * L);
      for (int i = 0; i < alpha; ++i) input_1d<T, L, L, L>(tmp + i * alpha * L, out + i * alpha * L);
      T* dst = ch.v + static_cast<std::size_t>(t) * alpha2 * cp + static_cast<std::size_t>(cb) * L;
      for (int e = 0; e < alpha2; ++e) std::memcpy(dst + static_cast<std::size_t>(e) * cp, out + e * L, L * sizeof(T));
    }
  }
}

// Stage 4, tiles [t0, t1): yb = A^T M A + bias (bias: kp values, zero for padding channels).
template <class T, int M>
POSEIDON_WINOGRAD_INLINE void output_body(const Plan& p, const Chunk<T>& ch, const T* bias, int t0, int t1) {
  constexpr int L = lanes<T>;
  const int blocks = p.kp() / L, tpi = p.tiles_per_image();
  const std::size_t kp = static_cast<std::size_t>(p.kp());
  const std::size_t orow = static_cast<std::size_t>(p.tw * M) * L, oplane = static_cast<std::size_t>(p.th * M) * orow;
  alignas(64) T in[alpha2 * L], tmp[M * alpha * L], out[M * M * L];
  for (int t = t0; t < t1; ++t) {
    const int nl = t / tpi, ty = (t % tpi) / p.tw, tx = t % p.tw;
    for (int kb = 0; kb < blocks; ++kb) {
      const T* src = ch.mb + static_cast<std::size_t>(t) * alpha2 * kp + static_cast<std::size_t>(kb) * L;
      for (int e = 0; e < alpha2; ++e) std::memcpy(in + e * L, src + static_cast<std::size_t>(e) * kp, L * sizeof(T));
      for (int j = 0; j < alpha; ++j) output_1d<T, M, L, alpha * L, alpha * L>(in + j * L, tmp + j * L);
      for (int a = 0; a < M; ++a) output_1d<T, M, L, L, L>(tmp + a * alpha * L, out + a * M * L);
      const T* bb = bias + kb * L;
      for (int e = 0; e < M * M; ++e)
        for (int l = 0; l < L; ++l) out[e * L + l] += bb[l];
      T* dst = ch.yb + (static_cast<std::size_t>(nl) * static_cast<std::size_t>(blocks)
          + static_cast<std::size_t>(kb)) * oplane +
               static_cast<std::size_t>(ty * M) * orow + static_cast<std::size_t>(tx * M) * L;
      for (int a = 0; a < M; ++a) std::memcpy(dst + static_cast<std::size_t>(a) * orow, out + a * M * L, M * L * sizeof(T));
    }
  }
}

// Stage 5, jobs (image, output channel block) in [j0, j1): yb -> NCHW, the real channels and
// pixels only.
template <class T>
POSEIDON_WINOGRAD_INLINE void unpack_body(const Plan& p, const Chunk<T>& ch, T* y, int j0, int j1, int m) {
  constexpr int L = lanes<T>;
  const int blocks = p.kp() / L, gblocks = p.kgp / L, kg = p.cog();
  const std::size_t orow = static_cast<std::size_t>(p.tw * m) * L, oplane = static_cast<std::size_t>(p.th * m) * orow;
  const std::size_t out_plane = static_cast<std::size_t>(p.oh) * static_cast<std::size_t>(p.ow);
  for (int job = j0; job < j1; ++job) {
    const int nl = job / blocks, kb = job % blocks;
    const int g = kb / gblocks, kbase = (kb % gblocks) * L;
    const T* src = ch.yb + static_cast<std::size_t>(job) * oplane;
    const int lanes_used = std::min(L, kg - kbase);
    for (int l = 0; l < lanes_used; ++l) {
      T* dst = y + (static_cast<std::size_t>(ch.n0 + nl) * static_cast<std::size_t>(p.co) +
                    static_cast<std::size_t>(g * kg + kbase + l)) * out_plane;
      for (int oy = 0; oy < p.oh; ++oy) {
        T* POSEIDON_WINOGRAD_RESTRICT d = dst + static_cast<std::size_t>(oy) * static_cast<std::size_t>(p.ow);
        const T* POSEIDON_WINOGRAD_RESTRICT s = src + static_cast<std::size_t>(oy) * orow + l;
        for (int ox = 0; ox < p.ow; ++ox) d[ox] = s[static_cast<std::size_t>(ox) * L];
      }
    }
  }
}

// The filter transform for jobs (group, plan input i) in [j0, j1): u[g][xi][i][o] = (G f G^T)[xi]
// for the filters f of wt (group x ins x R*R x outs_p: the R*R taps of every output's filter side
// by side, so that L outputs go through G at once).
template <class T, int R>
POSEIDON_WINOGRAD_INLINE void filter_body(const T* wt, int ins, int ins_p, int outs_p, T* u, int j0, int j1) {
  constexpr int L = lanes<T>;
  T gm[alpha][R];
  for (int a = 0; a < alpha; ++a) {
    double row[5];
    g_row(a, R, row);
    for (int q = 0; q < R; ++q) gm[a][q] = static_cast<T>(row[q]);
  }
  const std::size_t op = static_cast<std::size_t>(outs_p);
  alignas(64) T in[R * R * L], tmp[alpha * R * L], out[alpha2 * L];
  for (int job = j0; job < j1; ++job) {
    const int g = job / ins, i = job % ins;
    const T* src = wt + static_cast<std::size_t>(job) * R * R * op;
    for (std::size_t o0 = 0; o0 < op; o0 += L) {
      for (int e = 0; e < R * R; ++e) std::memcpy(in + e * L, src + static_cast<std::size_t>(e) * op + o0, L * sizeof(T));
      for (int a = 0; a < alpha; ++a)
        for (int j = 0; j < R; ++j)
          for (int l = 0; l < L; ++l) {
            T acc = T(0);
            for (int q = 0; q < R; ++q) acc += gm[a][q] * in[(q * R + j) * L + l];
            tmp[(a * R + j) * L + l] = acc;
          }
      for (int a = 0; a < alpha; ++a)
        for (int b = 0; b < alpha; ++b)
          for (int l = 0; l < L; ++l) {
            T acc = T(0);
            for (int j = 0; j < R; ++j) acc += tmp[(a * R + j) * L + l] * gm[b][j];
            out[(a * alpha + b) * L + l] = acc;
          }
      for (int xi = 0; xi < alpha2; ++xi)
        std::memcpy(u + ((static_cast<std::size_t>(g) * alpha2 + static_cast<std::size_t>(xi))
            * static_cast<std::size_t>(ins_p) +
                         static_cast<std::size_t>(i)) * op + o0,
                    out + xi * L, L * sizeof(T));
    }
  }
}

// The weight gradient's way back for jobs (group, input channel c) in [j0, j1):
// dw[k][c] += G^T du[g][.][c][k] G, L output channels k at once (du: group x 36 x cgp x kgp).
template <class T, int R>
POSEIDON_WINOGRAD_INLINE void filter_grad_body(const T* du, int cg, int cgp, int kg, int kgp, T* dw, int j0, int j1) {
  constexpr int L = lanes<T>;
  T gm[alpha][R];
  for (int a = 0; a < alpha; ++a) {
    double row[5];
    g_row(a, R, row);
    for (int q = 0; q < R; ++q) gm[a][q] = static_cast<T>(row[q]);
  }
  const std::size_t kp = static_cast<std::size_t>(kgp);
  alignas(64) T in[alpha2 * L], tmp[alpha * R * L], out[R * R * L];
  for (int job = j0; job < j1; ++job) {
    const int g = job / cg, c = job % cg;
    for (int k0 = 0; k0 < kg; k0 += L) {
      for (int xi = 0; xi < alpha2; ++xi)
        std::memcpy(in + xi * L,
                    du + ((static_cast<std::size_t>(g) * alpha2 + static_cast<std::size_t>(xi))
                        * static_cast<std::size_t>(cgp) +
                          static_cast<std::size_t>(c)) * kp + static_cast<std::size_t>(k0),
                    L * sizeof(T));
      for (int a = 0; a < alpha; ++a)
        for (int j = 0; j < R; ++j)
          for (int l = 0; l < L; ++l) {
            T acc = T(0);
            for (int b = 0; b < alpha; ++b) acc += in[(a * alpha + b) * L + l] * gm[b][j];
            tmp[(a * R + j) * L + l] = acc;
          }
      for (int q = 0; q < R; ++q)
        for (int j = 0; j < R; ++j)
          for (int l = 0; l < L; ++l) {
            T acc = T(0);
            for (int a = 0; a < alpha; ++a) acc += gm[a][q] * tmp[(a * R + j) * L + l];
            out[(q * R + j) * L + l] = acc;
          }
      const int lanes_used = std::min(L, kg - k0);
      for (int l = 0; l < lanes_used; ++l) {
        T* d = dw + (static_cast<std::size_t>(g * kg + k0 + l) * static_cast<std::size_t>(cg)
            + static_cast<std::size_t>(c)) *
                        static_cast<std::size_t>(R * R);
        for (int e = 0; e < R * R; ++e) d[e] += out[e * L + l];
      }
    }
  }
}

// Weight gradient, stage 1', jobs (image, output channel block) in [j0, j1): the NCHW output
// gradient -> yb, zero past the output's edges and each group's channels.
template <class T>
POSEIDON_WINOGRAD_INLINE void pack_grad_body(const Plan& p, const Chunk<T>& ch, const T* dy, int j0, int j1, int m) {
  constexpr int L = lanes<T>;
  const int blocks = p.kp() / L, gblocks = p.kgp / L, kg = p.cog();
  const std::size_t orow = static_cast<std::size_t>(p.tw * m) * L, oplane = static_cast<std::size_t>(p.th * m) * orow;
  const std::size_t out_plane = static_cast<std::size_t>(p.oh) * static_cast<std::size_t>(p.ow);
  for (int job = j0; job < j1; ++job) {
    const int nl = job / blocks, kb = job % blocks;
    const int g = kb / gblocks, kbase = (kb % gblocks) * L;
    T* dst = ch.yb + static_cast<std::size_t>(job) * oplane;
    std::memset(dst, 0, oplane * sizeof(T));
    const int lanes_used = std::min(L, kg - kbase);
    for (int l = 0; l < lanes_used; ++l) {
      const T* src = dy + (static_cast<std::size_t>(ch.n0 + nl) * static_cast<std::size_t>(p.co) +
                           static_cast<std::size_t>(g * kg + kbase + l)) * out_plane;
      for (int oy = 0; oy < p.oh; ++oy) {
        T* POSEIDON_WINOGRAD_RESTRICT d = dst + static_cast<std::size_t>(oy) * orow + l;
        const T* POSEIDON_WINOGRAD_RESTRICT s = src + static_cast<std::size_t>(oy) * static_cast<std::size_t>(p.ow);
        for (int ox = 0; ox < p.ow; ++ox) d[static_cast<std::size_t>(ox) * L] = s[ox];
      }
    }
  }
}

// Weight gradient, stage 2', tiles [t0, t1): mb[t][xi][k] = (A dy A^T)[xi].
template <class T, int M>
POSEIDON_WINOGRAD_INLINE void grad_body(const Plan& p, const Chunk<T>& ch, int t0, int t1) {
  constexpr int L = lanes<T>;
  const int blocks = p.kp() / L, tpi = p.tiles_per_image();
  const std::size_t kp = static_cast<std::size_t>(p.kp());
  const std::size_t orow = static_cast<std::size_t>(p.tw * M) * L, oplane = static_cast<std::size_t>(p.th * M) * orow;
  alignas(64) T in[M * M * L], tmp[alpha * M * L], out[alpha2 * L];
  for (int t = t0; t < t1; ++t) {
    const int nl = t / tpi, ty = (t % tpi) / p.tw, tx = t % p.tw;
    for (int kb = 0; kb < blocks; ++kb) {
      const T* src = ch.yb + (static_cast<std::size_t>(nl) * static_cast<std::size_t>(blocks)
          + static_cast<std::size_t>(kb)) * oplane +
                     static_cast<std::size_t>(ty * M) * orow + static_cast<std::size_t>(tx * M) * L;
      for (int a = 0; a < M; ++a) std::memcpy(in + a * M * L, src + static_cast<std::size_t>(a) * orow, M * L * sizeof(T));
      // Columns (over a), then rows (over b).
      for (int b = 0; b < M; ++b) grad_1d<T, M, L, M * L, M * L>(in + b * L, tmp + b * L);
      for (int i = 0; i < alpha; ++i) grad_1d<T, M, L, L, L>(tmp + i * M * L, out + i * alpha * L);
      T* dst = ch.mb + static_cast<std::size_t>(t) * alpha2 * kp + static_cast<std::size_t>(kb) * L;
      for (int e = 0; e < alpha2; ++e) std::memcpy(dst + static_cast<std::size_t>(e) * kp, out + e * L, L * sizeof(T));
    }
  }
}

// The products on AVX-512.
#if defined(POSEIDON_WINOGRAD_X86)
// A's element (r, q) is A[r * ars + q * aqs], so that A^T serves as well (the weight gradient's
// product, V^T dY); Acc adds to C instead of overwriting it.
template <int RB, int NV, bool Acc>
POSEIDON_WINOGRAD_AVX512 POSEIDON_WINOGRAD_INLINE void gemm_block_avx512(int k, const float* A, std::size_t ars,
                                                                         std::size_t aqs, const float* B, std::size_t ldb,
                                                                         float* C, std::size_t ldc) {
  __m512 acc[RB][NV];
  for (int r = 0; r < RB; ++r)
    for (int v = 0; v < NV; ++v)
      acc[r][v] = Acc ? _mm512_loadu_ps(C + static_cast<std::size_t>(r) * ldc + 16 * v) : _mm512_setzero_ps();
  for (int q = 0; q < k; ++q) {
    __m512 b[NV];
    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_ps(B + static_cast<std::size_t>(q) * ldb + 16 * v);
    const float* aq = A + static_cast<std::size_t>(q) * aqs;
    for (int r = 0; r < RB; ++r) {
      const __m512 a = _mm512_set1_ps(aq[static_cast<std::size_t>(r) * ars]);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(C + static_cast<std::size_t>(r) * ldc + 16 * v, acc[r][v]);
}

template <int NV, bool Acc>
POSEIDON_WINOGRAD_AVX512 POSEIDON_WINOGRAD_INLINE void gemm_rows_avx512(int rows, int k, const float* A, std::size_t ars,
                                                                        std::size_t aqs, const float* B, std::size_t ldb,
                                                                        float* C, std::size_t ldc) {
  int r = 0;
  for (; r + 8 <= rows; r += 8)
    gemm_block_avx512<8, NV, Acc>(k, A + static_cast<std::size_t>(r) * ars, ars, aqs, B, ldb,
                                  C + static_cast<std::size_t>(r) * ldc, ldc);
  for (; r + 4 <= rows; r += 4)
    gemm_block_avx512<4, NV, Acc>(k, A + static_cast<std::size_t>(r) * ars, ars, aqs, B, ldb,
                                  C + static_cast<std::size_t>(r) * ldc, ldc);
  for (; r < rows; ++r)
    gemm_block_avx512<1, NV, Acc>(k, A + static_cast<std::size_t>(r) * ars, ars, aqs, B, ldb,
                                  C + static_cast<std::size_t>(r) * ldc, ldc);
}

// C (rows x n) (+)= op(A) (rows x k) * B (k x n), n a multiple of 16. Blocks of 8 rows x 32 columns
// keep 16 accumulators in registers; a B panel of k x 32 stays in L1 while the row blocks pass.
template <bool Acc>
POSEIDON_WINOGRAD_AVX512 inline void gemm_avx512(int rows, int n, int k, const float* A, std::size_t ars, std::size_t aqs,
                                                 const float* B, std::size_t ldb, float* C, std::size_t ldc) {
  int c = 0;
  for (; c + 32 <= n; c += 32) gemm_rows_avx512<2, Acc>(rows, k, A, ars, aqs, B + c, ldb, C + c, ldc);
  for (; c < n; c += 16) gemm_rows_avx512<1, Acc>(rows, k, A, ars, aqs, B + c, ldb, C + c, ldc);
}
#endif

enum class Isa { generic, avx2, avx512 };

/// The instruction set the stages may use at most: tests lower it to run every variant.
inline Isa& isa_limit() {
  static Isa limit = Isa::avx512;
  return limit;
}

inline Isa cpu_isa() {
#if defined(POSEIDON_WINOGRAD_X86)
  static const Isa detected = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
      return Isa::avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
    return Isa::generic;
  }();
  return std::min(detected, isa_limit());
#else
  return Isa::generic;
#endif
}

// The stage loops once per instruction set: the bodies are inlined into each and vectorised for
// its target.
template <class T, int M>
struct Kernels {
  using C = Chunk<T>;
  static void pack_generic(const Plan& p, const C& ch, const T* x, int j0, int j1) { pack_body<T>(p, ch, x, j0, j1); }
  static void input_generic(const Plan& p, const C& ch, int t0, int t1) { input_body<T, M>(p, ch, t0, t1); }
  static void output_generic(const Plan& p, const C& ch, const T* bias, int t0, int t1) {
    output_body<T, M>(p, ch, bias, t0, t1);
  }
  static void unpack_generic(const Plan& p, const C& ch, T* y, int j0, int j1) { unpack_body<T>(p, ch, y, j0, j1, M); }
  static void pack_grad_generic(const Plan& p, const C& ch, const T* dy, int j0, int j1) {
    pack_grad_body<T>(p, ch, dy, j0, j1, M);
  }
  static void grad_generic(const Plan& p, const C& ch, int t0, int t1) { grad_body<T, M>(p, ch, t0, t1); }
#if defined(POSEIDON_WINOGRAD_X86)
  POSEIDON_WINOGRAD_AVX2 static void pack_avx2(const Plan& p, const C& ch, const T* x, int j0, int j1) {
    pack_body<T>(p, ch, x, j0, j1);
  }
  POSEIDON_WINOGRAD_AVX2 static void input_avx2(const Plan& p, const C& ch, int t0, int t1) {
    input_body<T, M>(p, ch, t0, t1);
  }
  POSEIDON_WINOGRAD_AVX2 static void output_avx2(const Plan& p, const C& ch, const T* bias, int t0, int t1) {
    output_body<T, M>(p, ch, bias, t0, t1);
  }
  POSEIDON_WINOGRAD_AVX2 static void unpack_avx2(const Plan& p, const C& ch, T* y, int j0, int j1) {
    unpack_body<T>(p, ch, y, j0, j1, M);
  }
  POSEIDON_WINOGRAD_AVX2 static void pack_grad_avx2(const Plan& p, const C& ch, const T* dy, int j0, int j1) {
    pack_grad_body<T>(p, ch, dy, j0, j1, M);
  }
  POSEIDON_WINOGRAD_AVX2 static void grad_avx2(const Plan& p, const C& ch, int t0, int t1) {
    grad_body<T, M>(p, ch, t0, t1);
  }
  POSEIDON_WINOGRAD_AVX512 static void pack_avx512(const Plan& p, const C& ch, const T* x, int j0, int j1) {
    pack_body<T>(p, ch, x, j0, j1);
  }
  POSEIDON_WINOGRAD_AVX512 static void input_avx512(const Plan& p, const C& ch, int t0, int t1) {
    input_body<T, M>(p, ch, t0, t1);
  }
  POSEIDON_WINOGRAD_AVX512 static void output_avx512(const Plan& p, const C& ch, const T* bias, int t0, int t1) {
    output_body<T, M>(p, ch, bias, t0, t1);
  }
  POSEIDON_WINOGRAD_AVX512 static void unpack_avx512(const Plan& p, const C& ch, T* y, int j0, int j1) {
    unpack_body<T>(p, ch, y, j0, j1, M);
  }
  POSEIDON_WINOGRAD_AVX512 static void pack_grad_avx512(const Plan& p, const C& ch, const T* dy, int j0, int j1) {
    pack_grad_body<T>(p, ch, dy, j0, j1, M);
  }
  POSEIDON_WINOGRAD_AVX512 static void grad_avx512(const Plan& p, const C& ch, int t0, int t1) {
    grad_body<T, M>(p, ch, t0, t1);
  }
#endif
  static void pack(Isa isa, const Plan& p, const C& ch, const T* x, int j0, int j1) {
#if defined(POSEIDON_WINOGRAD_X86)
    if (isa == Isa::avx512) return pack_avx512(p, ch, x, j0, j1);
    if (isa == Isa::avx2) return pack_avx2(p, ch, x, j0, j1);
#endif
    (void)isa;
    pack_generic(p, ch, x, j0, j1);
  }
  static void input(Isa isa, const Plan& p, const C& ch, int t0, int t1) {
#if defined(POSEIDON_WINOGRAD_X86)
    if (isa == Isa::avx512) return input_avx512(p, ch, t0, t1);
    if (isa == Isa::avx2) return input_avx2(p, ch, t0, t1);
#endif
    (void)isa;
    input_generic(p, ch, t0, t1);
  }
  static void output(Isa isa, const Plan& p, const C& ch, const T* bias, int t0, int t1) {
#if defined(POSEIDON_WINOGRAD_X86)
    if (isa == Isa::avx512) return output_avx512(p, ch, bias, t0, t1);
    if (isa == Isa::avx2) return output_avx2(p, ch, bias, t0, t1);
#endif
    (void)isa;
    output_generic(p, ch, bias, t0, t1);
  }
  // The filter transform, for R = M == 4 ? 3 : 5.
  static constexpr int R = M == 4 ? 3 : 5;
  static void filters_generic(const T* wt, int ins, int ins_p, int outs_p, T* u, int j0, int j1) {
    filter_body<T, R>(wt, ins, ins_p, outs_p, u, j0, j1);
  }
#if defined(POSEIDON_WINOGRAD_X86)
  POSEIDON_WINOGRAD_AVX2 static void filters_avx2(const T* wt, int ins, int ins_p, int outs_p, T* u, int j0, int j1) {
    filter_body<T, R>(wt, ins, ins_p, outs_p, u, j0, j1);
  }
  POSEIDON_WINOGRAD_AVX512 static void filters_avx512(const T* wt, int ins, int ins_p, int outs_p, T* u, int j0, int j1) {
    filter_body<T, R>(wt, ins, ins_p, outs_p, u, j0, j1);
  }
#endif
  static void filters(Isa isa, const T* wt, int ins, int ins_p, int outs_p, T* u, int j0, int j1) {
#if defined(POSEIDON_WINOGRAD_X86)
    if (isa == Isa::avx512) return filters_avx512(wt, ins, ins_p, outs_p, u, j0, j1);
    if (isa == Isa::avx2) return filters_avx2(wt, ins, ins_p, outs_p, u, j0, j1);
#endif
    (void)isa;
    filters_generic(wt, ins, ins_p, outs_p, u, j0, j1);
  }
  static void filter_grads_generic(const T* du, int cg, int cgp, int kg, int kgp, T* dw, int j0, int j1) {
    filter_grad_body<T, R>(du, cg, cgp, kg, kgp, dw, j0, j1);
  }
#if defined(POSEIDON_WINOGRAD_X86)
  POSEIDON_WINOGRAD_AVX2 static void filter_grads_avx2(const T* du, int cg, int cgp, int kg, int kgp, T* dw, int j0,
                                                       int j1) {
    filter_grad_body<T, R>(du, cg, cgp, kg, kgp, dw, j0, j1);
  }
  POSEIDON_WINOGRAD_AVX512 static void filter_grads_avx512(const T* du, int cg, int cgp, int kg, int kgp, T* dw, int j0,
                                                           int j1) {
    filter_grad_body<T, R>(du, cg, cgp, kg, kgp, dw, j0, j1);
  }
#endif
  static void filter_grads(Isa isa, const T* du, int cg, int cgp, int kg, int kgp, T* dw, int j0, int j1) {
#if defined(POSEIDON_WINOGRAD_X86)
    if (isa == Isa::avx512) return filter_grads_avx512(du, cg, cgp, kg, kgp, dw, j0, j1);
    if (isa == Isa::avx2) return filter_grads_avx2(du, cg, cgp, kg, kgp, dw, j0, j1);
#endif
    (void)isa;
    filter_grads_generic(du, cg, cgp, kg, kgp, dw, j0, j1);
  }
  static void pack_grad(Isa isa, const Plan& p, const C& ch, const T* dy, int j0, int j1) {
#if defined(POSEIDON_WINOGRAD_X86)
    if (isa == Isa::avx512) return pack_grad_avx512(p, ch, dy, j0, j1);
    if (isa == Isa::avx2) return pack_grad_avx2(p, ch, dy, j0, j1);
#endif
    (void)isa;
    pack_grad_generic(p, ch, dy, j0, j1);
  }
  static void grad(Isa isa, const Plan& p, const C& ch, int t0, int t1) {
#if defined(POSEIDON_WINOGRAD_X86)
    if (isa == Isa::avx512) return grad_avx512(p, ch, t0, t1);
    if (isa == Isa::avx2) return grad_avx2(p, ch, t0, t1);
#endif
    (void)isa;
    grad_generic(p, ch, t0, t1);
  }
  static void unpack(Isa isa, const Plan& p, const C& ch, T* y, int j0, int j1) {
#if defined(POSEIDON_WINOGRAD_X86)
    if (isa == Isa::avx512) return unpack_avx512(p, ch, y, j0, j1);
    if (isa == Isa::avx2) return unpack_avx2(p, ch, y, j0, j1);
#endif
    (void)isa;
    unpack_generic(p, ch, y, j0, j1);
  }
};

}  // namespace detail::winograd

/// Stride-1 convolution by Winograd's minimal filtering: F(4x4, 3x3) for 3x3 kernels and
/// F(2x2, 5x5) for 5x5, with the transformed filters kept until the weights change. Holds its
/// scratch, so one instance serves one layer (not two threads at once).
template <class T>
class WinogradConvolution {
  using Plan = detail::winograd::Plan;
  using Chunk = detail::winograd::Chunk<T>;
  static constexpr int alpha2 = detail::winograd::alpha2;
  static constexpr int L = detail::winograd::lanes<T>;

 public:
  /// Whether a convolution of this geometry is in reach: square 3x3 or 5x5, stride 1, dilation
  /// 1, and pads of at most kernel - 1 (the input gradient pads by kernel - 1 - pad).
  static bool applies(int kernel_h, int kernel_w, int stride_h, int stride_w, int dilation_h, int dilation_w, int pad_h,
                      int pad_w) {
    return kernel_h == kernel_w && (kernel_h == 3 || kernel_h == 5) && stride_h == 1 && stride_w == 1 &&
           dilation_h == 1 && dilation_w == 1 && pad_h >= 0 && pad_w >= 0 && pad_h < kernel_h && pad_w < kernel_w;
  }
  /// Output tile edge: 4 for 3x3 kernels, 2 for 5x5.
  static int tile(int kernel) { return kernel == 3 ? 4 : 2; }

  /// Images per chunk come from this budget for a chunk's buffers, but a chunk holds at least
  /// min_chunk_tiles tiles: each transformed filter is reused once per tile of a chunk.
  static constexpr std::size_t chunk_bytes = std::size_t(1) << 20;
  static constexpr std::size_t min_chunk_tiles = 128;

  /// Images per chunk (per thread where threads take their own images); 0: from chunk_bytes.
  void set_chunk_images(int n) { chunk_images_ = n; }

  /// y (num x K x OH x OW) = conv(x, w) + bias; bias may be null.
  void forward(DeviceContext<CPU>& ctx, const WinogradShape& s, const T* w, const T* bias, const T* x, int num, T* y) {
    check(s);
    const Plan p = plan(s.channels, s.outputs, s.group, s.height, s.width, s.pad_h, s.pad_w, s.kernel);
    transform_filters(ctx, s, p, w, false, fwd_);
    bias_.assign(static_cast<std::size_t>(p.kp()), T(0));
    if (bias)
      for (int g = 0; g < p.group; ++g)
        for (int k = 0; k < p.cog(); ++k)
          bias_[static_cast<std::size_t>(g * p.kgp + k)] = bias[g * p.cog() + k];
    run(ctx, p, fwd_.u.data(), x, num, y);
  }

  /// dx (num x C x H x W) = the input gradient for top gradient dy; overwritten.
  void backward_data(DeviceContext<CPU>& ctx, const WinogradShape& s, const T* w, const T* dy, int num, T* dx) {
    check(s);
    const Plan p = plan(s.outputs, s.channels, s.group, s.out_h(), s.out_w(), s.kernel - 1 - s.pad_h,
                        s.kernel - 1 - s.pad_w, s.kernel);
    transform_filters(ctx, s, p, w, true, bwd_);
    bias_.assign(static_cast<std::size_t>(p.kp()), T(0));
    run(ctx, p, bwd_.u.data(), dy, num, dx);
  }

  /// dw (K x C/group x r x r) += the weight gradient for bottom x and top gradient dy: the sum
  /// over tiles of (A dy A^T) . (B^T x B) in the transformed domain, taken back by G^T (.) G.
  void backward_filter(DeviceContext<CPU>& ctx, const WinogradShape& s, const T* x, const T* dy, int num, T* dw) {
    check(s);
    const Plan p = plan(s.channels, s.outputs, s.group, s.height, s.width, s.pad_h, s.pad_w, s.kernel);
    const Layout lay = layout(ctx, p, num, true);
    if (p.m == 4)
      filter_stages<4>(p, x, dy, num, lay);
    else
      filter_stages<2>(p, x, dy, num, lay);
    filter_gradient(ctx, s, p, dw);
  }

 private:
  struct Filters {
    std::vector<T> w;  // the weights u was made from
    std::vector<T> u;  // group x 36 x padded inputs x padded outputs (per group)
    std::vector<T> wt;  // the weights regrouped for the transform (transform_filters)
    int kernel = 0, cgp = 0, kgp = 0;
  };
  struct Scratch {
    std::vector<T> xb, v, m, yb;
    std::vector<T> du;  // the weight gradient in the transformed domain: group x 36 x cgp x kgp
  };
  // How a pass is split: images per chunk; by_images: each thread takes its own images with its
  // own buffers, otherwise the threads share each chunk's stages.
  struct Layout {
    int threads = 1, images = 1;
    bool by_images = false;
  };

  static void check(const WinogradShape& s) {
    POSEIDON_CHECK(applies(s.kernel, s.kernel, 1, 1, 1, 1, s.pad_h, s.pad_w), "Winograd convolution: kernel ",
                   s.kernel, " with pad ", s.pad_h, "x", s.pad_w, " is not supported (3x3 or 5x5, pad < kernel)");
    POSEIDON_CHECK(s.group > 0 && s.channels > 0 && s.outputs > 0 && s.channels % s.group == 0 &&
                       s.outputs % s.group == 0 && s.out_h() > 0 && s.out_w() > 0,
                   "Winograd convolution: bad shape");
  }

  static int round_up(int n, int to) { return (n + to - 1) / to * to; }

  static Plan plan(int ci, int co, int group, int h, int w, int pad_h, int pad_w, int r) {
    Plan p;
    p.ci = ci;
    p.co = co;
    p.group = group;
    p.h = h;
    p.w = w;
    p.pad_h = pad_h;
    p.pad_w = pad_w;
    p.r = r;
    p.m = tile(r);
    p.oh = h + 2 * pad_h - r + 1;
    p.ow = w + 2 * pad_w - r + 1;
    p.th = (p.oh + p.m - 1) / p.m;
    p.tw = (p.ow + p.m - 1) / p.m;
    p.cgp = round_up(ci / group, L);
    p.kgp = round_up(co / group, L);
    p.hp = (p.th - 1) * p.m + detail::winograd::alpha;
    p.wp = (p.tw - 1) * p.m + detail::winograd::alpha;
    return p;
  }

  // U[g][xi][i][o] = (G f G^T)[xi] for the filter f from plan input i to plan output o of group g:
  // w[o][i] forward; for the input gradient (plan inputs are the layer's outputs) w[i][o] turned
  // by 180 degrees. Zero for the padding channels.
  void transform_filters(DeviceContext<CPU>& ctx, const WinogradShape& s, const Plan& p, const T* w, bool flipped,
                         Filters& f) {
    const int r = s.kernel, G = s.group;
    const int kg = s.outputs / G, cg = s.channels / G;
    const std::size_t count = static_cast<std::size_t>(s.outputs) * static_cast<std::size_t>(cg) *
                              static_cast<std::size_t>(r) * static_cast<std::size_t>(r);
    if (f.kernel == r && f.cgp == p.cgp && f.kgp == p.kgp && f.w.size() == count &&
        std::memcmp(f.w.data(), w, count * sizeof(T)) == 0)
      return;
    f.w.assign(w, w + count);
    f.kernel = r;
    f.cgp = p.cgp;
    f.kgp = p.kgp;
    const std::size_t ip = static_cast<std::size_t>(p.cgp), op = static_cast<std::size_t>(p.kgp);
    // Zeroed only when the shape changes: the padding entries are never written.
    auto fit = [](std::vector<T>& v, std::size_t n) {
      if (v.size() != n) v.assign(n, T(0));
    };
    fit(f.u, static_cast<std::size_t>(G) * alpha2 * ip * op);
    fit(f.wt, static_cast<std::size_t>(G) * static_cast<std::size_t>(p.cig()) * static_cast<std::size_t>(r * r) * op);
    const int ins = p.cig(), outs = p.cog(), rr = r * r;
    const detail::winograd::Isa isa = detail::winograd::cpu_isa();
    const int threads = count > (1u << 15) ? std::max(1, ctx.threads()) : 1;
    T* wt = f.wt.data();
    T* u = f.u.data();
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      // The weights regrouped as wt[g][i][tap][o] (turned by 180 degrees for the input gradient).
      const int tjobs = G * ins;
      for (int job = tjobs * t / nt; job < tjobs * (t + 1) / nt; ++job) {
        const int g = job / ins, i = job % ins;
        T* dst = wt + static_cast<std::size_t>(job) * static_cast<std::size_t>(rr) * op;
        for (int o = 0; o < outs; ++o) {
          // Filter (output channel k, input channel c) of the stored weights.
          const int k = g * kg + (flipped ? i : o), c = flipped ? o : i;
          const T* src = w + (static_cast<std::size_t>(k) * static_cast<std::size_t>(cg) + static_cast<std::size_t>(c)) *
                                 static_cast<std::size_t>(rr);
          for (int e = 0; e < rr; ++e)
            dst[static_cast<std::size_t>(e) * op + static_cast<std::size_t>(o)] = src[flipped ? rr - 1 - e : e];
        }
      }
      if (r == 3)
        detail::winograd::Kernels<T, 4>::filters(isa, wt, ins, p.cgp, p.kgp, u, tjobs * t / nt, tjobs * (t + 1) / nt);
      else
        detail::winograd::Kernels<T, 2>::filters(isa, wt, ins, p.cgp, p.kgp, u, tjobs * t / nt, tjobs * (t + 1) / nt);
    }
  }

  // Stage 3 for (group, position) jobs [j0, j1): M[xi] = V[xi] U[g][xi], tiles x padded outputs.
  static void products(const Plan& p, const Chunk& ch, const T* U, int j0, int j1, detail::winograd::Isa isa) {
    const int tiles = ch.tiles(p);
    const std::size_t cp = static_cast<std::size_t>(p.cp()), kp = static_cast<std::size_t>(p.kp());
    for (int j = j0; j < j1; ++j) {
      const int g = j / alpha2, xi = j % alpha2;
      const T* a = ch.v + static_cast<std::size_t>(xi) * cp + static_cast<std::size_t>(g * p.cgp);
      const T* b = U + static_cast<std::size_t>(j) * static_cast<std::size_t>(p.cgp) * static_cast<std::size_t>(p.kgp);
      T* c = ch.mb + static_cast<std::size_t>(xi) * kp + static_cast<std::size_t>(g * p.kgp);
      const std::size_t lda = alpha2 * cp, ldc = alpha2 * kp;
#if defined(POSEIDON_WINOGRAD_X86)
      if constexpr (std::is_same_v<T, float>) {
        if (isa == detail::winograd::Isa::avx512 && p.cgp * p.kgp <= small_filter_values) {
          detail::winograd::gemm_avx512<false>(tiles, p.kgp, p.cgp, a, lda, 1, b, static_cast<std::size_t>(p.kgp), c, ldc);
          continue;
        }
      }
#endif
      (void)isa;
      if constexpr (std::is_same_v<T, float>)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, tiles, p.kgp, p.cgp, 1.0f, a, static_cast<int>(lda), b,
                    p.kgp, 0.0f, c, static_cast<int>(ldc));
      else
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, tiles, p.kgp, p.cgp, 1.0, a, static_cast<int>(lda), b,
                    p.kgp, 0.0, c, static_cast<int>(ldc));
    }
  }

 public:
  /// Groups whose per-position filter matrices have at most this many values use the AVX-512
  /// product kernel, larger ones OpenBLAS. The kernel was as fast as OpenBLAS or faster for
  /// every shape measured (CIFAR-10 quick's 32x32 and 32x64, AlexNet's 256x384 and 192x192: conv5
  /// forward at batch 8 8.0 against 15.0 ms); a panel of B grows past L2 beyond this size.
  static constexpr int small_filter_values = 1 << 20;

 private:
  void run(DeviceContext<CPU>& ctx, const Plan& p, const T* U, const T* x, int num, T* y) {
    const Layout lay = layout(ctx, p, num, false);
    if (p.m == 4)
      stages<4>(p, U, x, num, y, detail::winograd::cpu_isa(), lay.threads, lay.by_images, lay.images);
    else
      stages<2>(p, U, x, num, y, detail::winograd::cpu_isa(), lay.threads, lay.by_images, lay.images);
  }

  Layout layout(DeviceContext<CPU>& ctx, const Plan& p, int num, bool filter_gradient) {
    const int threads = std::max(1, ctx.threads());
    const std::size_t tpi = static_cast<std::size_t>(p.tiles_per_image());
    const std::size_t per_image =
        sizeof(T) * (tpi * alpha2 * static_cast<std::size_t>(p.cp() + p.kp()) +
                     static_cast<std::size_t>(p.cp()) * static_cast<std::size_t>(p.hp * p.wp) +
                     static_cast<std::size_t>(p.kp()) * tpi * static_cast<std::size_t>(p.m * p.m));
    int images = chunk_images_;
    if (images <= 0)
      images = static_cast<int>(std::max((min_chunk_tiles + tpi - 1) / tpi, chunk_bytes / per_image));
    images = std::clamp(images, 1, num);
    // Threads take their own images where each can fill its chunks; otherwise they share each
    // chunk's stages.
    const bool by_images = threads > 1 && num >= threads * images;
    const int workers = by_images ? threads : 1;
    const int team_images = by_images ? images : std::min(num, images * threads);
    if (scratch_.size() < static_cast<std::size_t>(workers)) scratch_.resize(static_cast<std::size_t>(workers));
    for (int t = 0; t < workers; ++t) {
      Scratch& sc = scratch_[static_cast<std::size_t>(t)];
      const auto n = static_cast<std::size_t>(team_images);
      grow(sc.xb, n * static_cast<std::size_t>(p.cp()) * static_cast<std::size_t>(p.hp * p.wp));
      grow(sc.v, n * tpi * alpha2 * static_cast<std::size_t>(p.cp()));
      grow(sc.m, n * tpi * alpha2 * static_cast<std::size_t>(p.kp()));
      grow(sc.yb, n * tpi * static_cast<std::size_t>(p.kp()) * static_cast<std::size_t>(p.m * p.m));
      if (filter_gradient)
        grow(sc.du, static_cast<std::size_t>(p.group) * alpha2 * static_cast<std::size_t>(p.cgp) *
                        static_cast<std::size_t>(p.kgp));
    }
    return Layout{threads, team_images, by_images};
  }

  // The weight gradient's stages: x and dy transformed per chunk and their products summed into
  // each worker's du; the workers' sums are then added in worker order into scratch_[0].du.
  template <int M>
  void filter_stages(const Plan& p, const T* x, const T* dy, int num, const Layout& lay) {
    using K = detail::winograd::Kernels<T, M>;
    const detail::winograd::Isa isa = detail::winograd::cpu_isa();
    const int jobs = p.group * alpha2;
    const std::size_t du_count =
        static_cast<std::size_t>(p.group) * alpha2 * static_cast<std::size_t>(p.cgp) * static_cast<std::size_t>(p.kgp);
    auto chunk_at = [&](Scratch& sc, int n0, int n) {
      Chunk ch;
      ch.n0 = n0;
      ch.images = n;
      ch.xb = sc.xb.data();
      ch.v = sc.v.data();
      ch.mb = sc.m.data();
      ch.yb = sc.yb.data();
      return ch;
    };
    if (lay.by_images) {
#pragma omp parallel num_threads(lay.threads)
      {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        Scratch& sc = scratch_[static_cast<std::size_t>(t)];
        std::fill_n(sc.du.data(), du_count, T(0));
        const int lo = static_cast<int>(static_cast<long long>(num) * t / nt);
        const int hi = static_cast<int>(static_cast<long long>(num) * (t + 1) / nt);
        for (int n0 = lo; n0 < hi; n0 += lay.images) {
          const Chunk ch = chunk_at(sc, n0, std::min(lay.images, hi - n0));
          K::pack(isa, p, ch, x, 0, ch.images * (p.cp() / L));
          K::input(isa, p, ch, 0, ch.tiles(p));
          K::pack_grad(isa, p, ch, dy, 0, ch.images * (p.kp() / L));
          K::grad(isa, p, ch, 0, ch.tiles(p));
          filter_products(p, ch, sc.du.data(), 0, jobs, isa);
        }
#pragma omp barrier
        // Thread order, whatever the timing: the same bits from run to run.
        const std::size_t e0 = du_count * static_cast<std::size_t>(t) / static_cast<std::size_t>(nt);
        const std::size_t e1 = du_count * static_cast<std::size_t>(t + 1) / static_cast<std::size_t>(nt);
        T* total = scratch_[0].du.data();
        for (int u = 1; u < nt; ++u) {
          const T* part = scratch_[static_cast<std::size_t>(u)].du.data();
          for (std::size_t e = e0; e < e1; ++e) total[e] += part[e];
        }
      }
      return;
    }
    std::fill_n(scratch_[0].du.data(), du_count, T(0));
    for (int n0 = 0; n0 < num; n0 += lay.images) {
      const Chunk ch = chunk_at(scratch_[0], n0, std::min(lay.images, num - n0));
      const int pack_jobs = ch.images * (p.cp() / L), grad_jobs = ch.images * (p.kp() / L), tiles = ch.tiles(p);
      T* du = scratch_[0].du.data();
      if (lay.threads == 1) {
        K::pack(isa, p, ch, x, 0, pack_jobs);
        K::input(isa, p, ch, 0, tiles);
        K::pack_grad(isa, p, ch, dy, 0, grad_jobs);
        K::grad(isa, p, ch, 0, tiles);
        filter_products(p, ch, du, 0, jobs, isa);
        continue;
      }
#pragma omp parallel num_threads(lay.threads)
      {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        auto lo = [&](int n) { return static_cast<int>(static_cast<long long>(n) * t / nt); };
        auto hi = [&](int n) { return static_cast<int>(static_cast<long long>(n) * (t + 1) / nt); };
        K::pack(isa, p, ch, x, lo(pack_jobs), hi(pack_jobs));
        K::pack_grad(isa, p, ch, dy, lo(grad_jobs), hi(grad_jobs));
#pragma omp barrier
        K::input(isa, p, ch, lo(tiles), hi(tiles));
        K::grad(isa, p, ch, lo(tiles), hi(tiles));
#pragma omp barrier
        // Each (group, position) slice of du belongs to one thread.
        filter_products(p, ch, du, lo(jobs), hi(jobs), isa);
      }
    }
  }

  // du[g][xi] (cgp x kgp) += V[xi]^T (cgp x tiles) * dY[xi] (tiles x kgp) for jobs [j0, j1).
  static void filter_products(const Plan& p, const Chunk& ch, T* du, int j0, int j1, detail::winograd::Isa isa) {
    const int tiles = ch.tiles(p);
    const std::size_t cp = static_cast<std::size_t>(p.cp()), kp = static_cast<std::size_t>(p.kp());
    for (int j = j0; j < j1; ++j) {
      const int g = j / alpha2, xi = j % alpha2;
      const T* a = ch.v + static_cast<std::size_t>(xi) * cp + static_cast<std::size_t>(g * p.cgp);
      const T* b = ch.mb + static_cast<std::size_t>(xi) * kp + static_cast<std::size_t>(g * p.kgp);
      T* c = du + static_cast<std::size_t>(j) * static_cast<std::size_t>(p.cgp) * static_cast<std::size_t>(p.kgp);
      const std::size_t lda = alpha2 * cp, ldb = alpha2 * kp;
#if defined(POSEIDON_WINOGRAD_X86)
      if constexpr (std::is_same_v<T, float>) {
        if (isa == detail::winograd::Isa::avx512 && p.cgp * p.kgp <= small_filter_values) {
          detail::winograd::gemm_avx512<true>(p.cgp, p.kgp, tiles, a, 1, lda, b, ldb, c, static_cast<std::size_t>(p.kgp));
          continue;
        }
      }
#endif
      (void)isa;
      if constexpr (std::is_same_v<T, float>)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, p.cgp, p.kgp, tiles, 1.0f, a, static_cast<int>(lda), b,
                    static_cast<int>(ldb), 1.0f, c, p.kgp);
      else
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, p.cgp, p.kgp, tiles, 1.0, a, static_cast<int>(lda), b,
                    static_cast<int>(ldb), 1.0, c, p.kgp);
    }
  }

  // dw[k][c] += G^T du[g][.][c][k] G.
  void filter_gradient(DeviceContext<CPU>& ctx, const WinogradShape& s, const Plan& p, T* dw) {
    const int jobs = p.group * p.cig();
    const T* du = scratch_[0].du.data();
    const detail::winograd::Isa isa = detail::winograd::cpu_isa();
    const int threads = jobs * p.cog() > (1 << 12) ? std::max(1, ctx.threads()) : 1;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int j0 = static_cast<int>(static_cast<long long>(jobs) * t / nt);
      const int j1 = static_cast<int>(static_cast<long long>(jobs) * (t + 1) / nt);
      if (s.kernel == 3)
        detail::winograd::Kernels<T, 4>::filter_grads(isa, du, p.cig(), p.cgp, p.cog(), p.kgp, dw, j0, j1);
      else
        detail::winograd::Kernels<T, 2>::filter_grads(isa, du, p.cig(), p.cgp, p.cog(), p.kgp, dw, j0, j1);
    }
  }

  template <int M>
  void stages(const Plan& p, const T* U, const T* x, int num, T* y, detail::winograd::Isa isa, int threads,
              bool by_images, int images) {
    using K = detail::winograd::Kernels<T, M>;
    const T* bias = bias_.data();
    const int jobs = p.group * alpha2;
    auto chunk_at = [&](Scratch& sc, int n0, int n) {
      Chunk ch;
      ch.n0 = n0;
      ch.images = n;
      ch.xb = sc.xb.data();
      ch.v = sc.v.data();
      ch.mb = sc.m.data();
      ch.yb = sc.yb.data();
      return ch;
    };
    if (by_images) {
#pragma omp parallel num_threads(threads)
      {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        Scratch& sc = scratch_[static_cast<std::size_t>(t)];
        const int lo = static_cast<int>(static_cast<long long>(num) * t / nt);
        const int hi = static_cast<int>(static_cast<long long>(num) * (t + 1) / nt);
        for (int n0 = lo; n0 < hi; n0 += images) {
          const Chunk ch = chunk_at(sc, n0, std::min(images, hi - n0));
          K::pack(isa, p, ch, x, 0, ch.images * (p.cp() / L));
          K::input(isa, p, ch, 0, ch.tiles(p));
          products(p, ch, U, 0, jobs, isa);
          K::output(isa, p, ch, bias, 0, ch.tiles(p));
          K::unpack(isa, p, ch, y, 0, ch.images * (p.kp() / L));
        }
      }
      return;
    }
    for (int n0 = 0; n0 < num; n0 += images) {
      const Chunk ch = chunk_at(scratch_[0], n0, std::min(images, num - n0));
      const int pack_jobs = ch.images * (p.cp() / L), unpack_jobs = ch.images * (p.kp() / L), tiles = ch.tiles(p);
      if (threads == 1) {
        K::pack(isa, p, ch, x, 0, pack_jobs);
        K::input(isa, p, ch, 0, tiles);
        products(p, ch, U, 0, jobs, isa);
        K::output(isa, p, ch, bias, 0, tiles);
        K::unpack(isa, p, ch, y, 0, unpack_jobs);
        continue;
      }
#pragma omp parallel num_threads(threads)
      {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        auto lo = [&](int n) { return static_cast<int>(static_cast<long long>(n) * t / nt); };
        auto hi = [&](int n) { return static_cast<int>(static_cast<long long>(n) * (t + 1) / nt); };
        K::pack(isa, p, ch, x, lo(pack_jobs), hi(pack_jobs));
#pragma omp barrier
        K::input(isa, p, ch, lo(tiles), hi(tiles));
#pragma omp barrier
        products(p, ch, U, lo(jobs), hi(jobs), isa);
#pragma omp barrier
        K::output(isa, p, ch, bias, lo(tiles), hi(tiles));
#pragma omp barrier
        K::unpack(isa, p, ch, y, lo(unpack_jobs), hi(unpack_jobs));
      }
    }
  }

  // Buffers only grow; zero-filled once.
  static void grow(std::vector<T>& v, std::size_t n) {
    if (v.size() < n) v.resize(n, T(0));
  }

  Filters fwd_, bwd_;
  std::vector<T> bias_;  // padded bias of the pass (zero for the input gradient)
  std::vector<Scratch> scratch_;
  int chunk_images_ = 0;
};

}  // namespace math
POSEIDON_NAMESPACE_END
