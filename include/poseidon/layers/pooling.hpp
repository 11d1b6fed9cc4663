// Pooling: Caffe's MAX and AVE pooling over 2-d windows (pad, stride, global pooling, CEIL/FLOOR
// output rounding), with the optional argmax mask top of MAX pooling.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/math/blas.hpp>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <string_view>
#include <type_traits>
#include <vector>

// The AVX-512 path of MAX pooling at column stride 2 is compiled with a GCC/Clang target
// attribute and picked at run time; nvcc's host pass does without it.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
#define POSEIDON_POOL_X86 1
#include <immintrin.h>
#define POSEIDON_POOL_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
#endif

POSEIDON_NAMESPACE_BEGIN

struct PoolingParam {
  enum class Method { max, ave, stochastic };
  enum class RoundMode { ceil, floor };

  Method pool = Method::max;
  int kernel_h = 0, kernel_w = 0;
  int stride_h = 1, stride_w = 1;
  int pad_h = 0, pad_w = 0;
  bool global_pooling = false;
  bool has_kernel = false;  // a kernel was given (an error with global_pooling)
  RoundMode round_mode = RoundMode::ceil;

  static PoolingParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"pool", "pad", "pad_h", "pad_w", "kernel_size", "kernel_h", "kernel_w", "stride", "stride_h",
                    "stride_w", "engine", "global_pooling", "round_mode"},
                   context);
    PoolingParam p;
    p.pool = static_cast<Method>(m.get_enum("pool", {"MAX", "AVE", "STOCHASTIC"}, 0));
    p.round_mode = static_cast<RoundMode>(m.get_enum("round_mode", {"CEIL", "FLOOR"}, 0));
    (void)m.get_enum("engine", {"DEFAULT", "CAFFE", "CUDNN"}, 0);  // one engine on the CPU
    p.global_pooling = m.get("global_pooling", false);
    // Caffe's rule: the scalar field or the _h/_w pair, not both; a lone kernel_h is incomplete.
    auto pair = [&](std::string_view name, std::string_view hname, std::string_view wname, int fallback, int& h,
                    int& w) {
      const bool has_hw = m.has(hname) || m.has(wname);
      if (has_hw && m.has(name))
        detail::raise(context, ": either ", name, " or ", hname, "/", wname, " should be specified; not both");
      if (has_hw && !(m.has(hname) && m.has(wname)))
        detail::raise(context, ": ", hname, " and ", wname, " must be given together");
      h = has_hw ? m.get(hname, fallback) : m.get(name, fallback);
      w = has_hw ? m.get(wname, fallback) : m.get(name, fallback);
    };
    pair("kernel_size", "kernel_h", "kernel_w", 0, p.kernel_h, p.kernel_w);
    pair("pad", "pad_h", "pad_w", 0, p.pad_h, p.pad_w);
    pair("stride", "stride_h", "stride_w", 1, p.stride_h, p.stride_w);
    p.has_kernel = m.has("kernel_size") || m.has("kernel_h") || m.has("kernel_w");
    return p;
  }
};

namespace detail {

/// The window geometry of one pooling pass (Caffe's PoolingLayer fields).
struct PoolGeometry {
  int height = 0, width = 0, out_h = 0, out_w = 0;
  int kernel_h = 0, kernel_w = 0, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  [[nodiscard]] POSEIDON_HOST_DEVICE std::size_t in_plane() const {
    return static_cast<std::size_t>(height) * static_cast<std::size_t>(width);
  }
  [[nodiscard]] POSEIDON_HOST_DEVICE std::size_t out_plane() const {
    return static_cast<std::size_t>(out_h) * static_cast<std::size_t>(out_w);
  }
};

template <class D, class T>
struct PoolKernel {
  POSEIDON_NO_KERNEL(D, "Pooling");
};

// One axis of the pooling windows, worked out once per pass instead of per output: output o
// covers input [lo[o], hi[o]) (clipped to the image); `padded[o]` is the window's length clipped to
// the padded image only (Caffe's AVE divisor counts the padding); outputs [full_lo, full_hi) have
// the whole kernel inside the image at start o * stride - pad, the stretch the fast loops run over.
struct PoolAxis {
  std::vector<int> lo, hi, padded;
  int full_lo = 0, full_hi = 0;

  PoolAxis(int out, int in, int kernel, int stride, int pad)
      : lo(static_cast<std::size_t>(out)), hi(static_cast<std::size_t>(out)), padded(static_cast<std::size_t>(out)) {
    full_lo = out;
    for (int o = 0; o < out; ++o) {
      const int s = o * stride - pad;
      const auto i = static_cast<std::size_t>(o);
      padded[i] = std::min(s + kernel, in + pad) - s;
      lo[i] = std::max(s, 0);
      hi[i] = std::min(s + kernel, in);
      if (s >= 0 && s + kernel <= in) {
        full_lo = std::min(full_lo, o);
        full_hi = o + 1;
      }
    }
    if (full_lo >= full_hi) full_lo = full_hi = 0;
  }
};

#if defined(POSEIDON_POOL_X86)
inline bool pool_cpu_has_avx512() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  }();
  return has;
}

/// Tests turn the vector path off to compare it with the portable loops.
inline bool& pool_vector_allowed() {
  static bool allowed = true;
  return allowed;
}

inline __mmask16 pool_lanes_below(int n) {
  if (n <= 0) return 0;
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// Candidate (c, i) replaces (v, a) where greater, or equal with a smaller flat index.
POSEIDON_POOL_AVX512 inline void pool_merge_max(__m512& v, __m512i& a, __m512 c, __m512i i) {
  const __mmask16 take =
      _mm512_cmp_ps_mask(c, v, _CMP_GT_OQ) | (_mm512_cmp_ps_mask(c, v, _CMP_EQ_OQ) & _mm512_cmplt_epi32_mask(i, a));
  v = _mm512_mask_mov_ps(v, take, c);
  a = _mm512_mask_mov_epi32(a, take, i);
}

// MAX pooling of planes [p0, p1) without padding, at column stride 2 with 2- or 3-wide windows
// (CIFAR-10 quick's and AlexNet's 3x3/2): 16 outputs of a row per register. Per row of windows,
// each input column's maximum over the window rows (the topmost on ties, NaN never taken), then
// each window's maximum over its columns, gathered from the column maxima by even/odd lane
// permutes, taking a column when greater or equal with a smaller flat index: the same rules, and
// so the same values and argmax, as the portable loops. Columns past the image load as -inf
// with index INT_MAX and are never taken.
POSEIDON_POOL_AVX512 inline void max_forward_s2_avx512(const PoolGeometry& g, int p0, int p1, const float* x, float* y,
                                                       int* argmax) {
  const int W = g.width, H = g.height, ow = g.out_w, kw = g.kernel_w;
  const std::size_t in_plane = g.in_plane(), out_plane = g.out_plane();
  const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  const __m512i none = _mm512_set1_epi32(std::numeric_limits<int>::max());
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i even = _mm512_add_epi32(lane, lane), odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const int regs = kw == 3 ? 3 : 2;
  for (int pl = p0; pl < p1; ++pl) {
    const float* xp = x + static_cast<std::size_t>(pl) * in_plane;
    float* yp = y + static_cast<std::size_t>(pl) * out_plane;
    int* ap = argmax + static_cast<std::size_t>(pl) * out_plane;
    for (int ph = 0; ph < g.out_h; ++ph) {
      const int hs = ph * g.stride_h, he = std::min(hs + g.kernel_h, H);
      for (int c0 = 0; c0 < ow; c0 += 16) {
        const int x0 = 2 * c0;
        __m512 cm[3];
        __m512i ci[3], col[3];
        __mmask16 in[3];
        for (int r = 0; r < regs; ++r) {
          in[r] = pool_lanes_below(W - x0 - 16 * r);
          col[r] = _mm512_add_epi32(lane, _mm512_set1_epi32(x0 + 16 * r));
          cm[r] = ninf;
          ci[r] = _mm512_mask_add_epi32(none, in[r], col[r], _mm512_set1_epi32(hs * W));
        }
        for (int h = hs; h < he; ++h) {
          const float* row = xp + static_cast<std::size_t>(h) * static_cast<std::size_t>(W) + x0;
          const __m512i base = _mm512_set1_epi32(h * W);
          for (int r = 0; r < regs; ++r) {
            const __m512 v = _mm512_mask_loadu_ps(ninf, in[r], row + 16 * r);
            const __mmask16 gt = _mm512_cmp_ps_mask(v, cm[r], _CMP_GT_OQ);
            cm[r] = _mm512_mask_mov_ps(cm[r], gt, v);
            ci[r] = _mm512_mask_add_epi32(ci[r], gt, col[r], base);
          }
        }
        // Each window starts from its first element (row hs, column x0 + 2j: inside the image).
        const float* first = xp + static_cast<std::size_t>(hs) * static_cast<std::size_t>(W) + x0;
        __m512 v = _mm512_permutex2var_ps(_mm512_mask_loadu_ps(ninf, in[0], first), even,
                                          _mm512_mask_loadu_ps(ninf, in[1], first + 16));
        __m512i a = _mm512_add_epi32(even, _mm512_set1_epi32(hs * W + x0));
        pool_merge_max(v, a, _mm512_permutex2var_ps(cm[0], even, cm[1]), _mm512_permutex2var_epi32(ci[0], even, ci[1]));
        pool_merge_max(v, a, _mm512_permutex2var_ps(cm[0], odd, cm[1]), _mm512_permutex2var_epi32(ci[0], odd, ci[1]));
        if (kw == 3) {
          // Columns x0 + 2 + 2j: the column maxima shifted by two lanes across the registers.
          // (The zero-masking form: GCC 12 warns about the plain one's undefined merge operand.)
          const __mmask16 all = 0xFFFF;
          const __m512i m0 = _mm512_castps_si512(cm[0]), m1 = _mm512_castps_si512(cm[1]),
                        m2 = _mm512_castps_si512(cm[2]);
          const __m512i s0 = _mm512_maskz_alignr_epi32(all, m1, m0, 2), s1 = _mm512_maskz_alignr_epi32(all, m2, m1, 2);
          const __m512i t0 = _mm512_maskz_alignr_epi32(all, ci[1], ci[0], 2);
          const __m512i t1 = _mm512_maskz_alignr_epi32(all, ci[2], ci[1], 2);
          pool_merge_max(v, a, _mm512_castsi512_ps(_mm512_permutex2var_epi32(s0, even, s1)),
                         _mm512_permutex2var_epi32(t0, even, t1));
        }
        const __mmask16 out = pool_lanes_below(ow - c0);
        const std::size_t o = static_cast<std::size_t>(ph) * static_cast<std::size_t>(ow) + static_cast<std::size_t>(c0);
        _mm512_mask_storeu_ps(yp + o, out, v);
        _mm512_mask_storeu_epi32(ap + o, out, a);
      }
    }
  }
}

// Lane l of the result takes lane first + l / 2 of the first operand (l even) or of the second
// (l odd): two registers interleaved.
POSEIDON_POOL_AVX512 inline __m512i pool_interleave_index(int first) {
  alignas(64) int idx[16];
  for (int l = 0; l < 16; ++l) idx[l] = first + (l >> 1) + ((l & 1) << 4);
  return _mm512_load_si512(idx);
}

// Per output column j of a row: the window's width clipped to the image, times the rows.
POSEIDON_POOL_AVX512 inline __m512 pool_ave_divisors(const PoolGeometry& g, int rows) {
  alignas(64) float d[16];
  for (int j = 0; j < 16; ++j) d[j] = static_cast<float>(rows * std::max(1, std::min(g.kernel_w, g.width - 2 * j)));
  return _mm512_load_ps(d);
}

// AVE pooling of planes [p0, p1) without padding, at column stride 2 with 2- or 3-wide windows,
// on planes at most 32 columns wide (CIFAR-10 quick's pool2 and pool3: 3x3/2 on 16x16 and 8x8):
// a whole output row in one register, where the portable loops' per-row set-up dominated on such
// short rows. The sums are added in the portable loops' order (rows first, then a window's
// columns left to right), so the results are theirs up to the sign of a zero sum.
POSEIDON_POOL_AVX512 inline void ave_forward_s2_avx512(const PoolGeometry& g, int p0, int p1, const float* x,
                                                       float* y) {
  const int W = g.width, H = g.height, ow = g.out_w;
  const std::size_t in_plane = g.in_plane(), out_plane = g.out_plane();
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i even = _mm512_add_epi32(lane, lane), odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __mmask16 in0 = pool_lanes_below(W), in1 = pool_lanes_below(W - 16), out = pool_lanes_below(ow);
  const __mmask16 all = 0xFFFF;
  const __m512 zero = _mm512_setzero_ps();
  __m512 divisors[32];
  for (int ph = 0; ph < g.out_h; ++ph)
    divisors[ph] = pool_ave_divisors(g, std::min(ph * g.stride_h + g.kernel_h, H) - ph * g.stride_h);
  for (int pl = p0; pl < p1; ++pl) {
    const float* xp = x + static_cast<std::size_t>(pl) * in_plane;
    float* yp = y + static_cast<std::size_t>(pl) * out_plane;
    for (int ph = 0; ph < g.out_h; ++ph) {
      const int hs = ph * g.stride_h, he = std::min(hs + g.kernel_h, H);
      __m512 c0 = zero, c1 = zero;
      for (int h = hs; h < he; ++h) {
        const float* row = xp + static_cast<std::size_t>(h) * static_cast<std::size_t>(W);
        c0 = _mm512_add_ps(c0, _mm512_maskz_loadu_ps(in0, row));
        c1 = _mm512_add_ps(c1, _mm512_maskz_loadu_ps(in1, row + 16));
      }
      // Window j covers columns 2j, 2j + 1 (and 2j + 2): added in that order; columns past the
      // image are zero.
      __m512 sum = _mm512_add_ps(zero, _mm512_permutex2var_ps(c0, even, c1));
      sum = _mm512_add_ps(sum, _mm512_permutex2var_ps(c0, odd, c1));
      if (g.kernel_w == 3) {
        const __m512i s0 = _mm512_maskz_alignr_epi32(all, _mm512_castps_si512(c1), _mm512_castps_si512(c0), 2);
        const __m512i s1 = _mm512_maskz_alignr_epi32(all, _mm512_setzero_si512(), _mm512_castps_si512(c1), 2);
        sum = _mm512_add_ps(sum, _mm512_castsi512_ps(_mm512_permutex2var_epi32(s0, even, s1)));
      }
      _mm512_mask_storeu_ps(yp + static_cast<std::size_t>(ph) * static_cast<std::size_t>(ow), out,
                            _mm512_div_ps(sum, divisors[ph]));
    }
  }
}

POSEIDON_POOL_AVX512 inline void ave_backward_s2_avx512(const PoolGeometry& g, int p0, int p1, const float* dy,
                                                        float* dx) {
  const int W = g.width, H = g.height, ow = g.out_w, oh = g.out_h, kh = g.kernel_h, sh = g.stride_h;
  const std::size_t in_plane = g.in_plane(), out_plane = g.out_plane();
  const __mmask16 in0 = pool_lanes_below(W), in1 = pool_lanes_below(W - 16), out = pool_lanes_below(ow);
  const __m512i lo = pool_interleave_index(0), hi = pool_interleave_index(8);
  const __m512i zero = _mm512_setzero_si512();
  __m512 spread[2 * 32];  // per output row, its shares spread over the input columns (2 registers)
  __m512 divisors[32];
  for (int ph = 0; ph < oh; ++ph) divisors[ph] = pool_ave_divisors(g, std::min(ph * sh + kh, H) - ph * sh);
  int first[64], last[64];  // the output rows whose windows cover input row h
  for (int h = 0; h < H; ++h) {
    first[h] = std::max(0, (h - kh + sh) / sh);
    last[h] = std::min(oh - 1, h / sh);
  }
  for (int pl = p0; pl < p1; ++pl) {
    float* dxp = dx + static_cast<std::size_t>(pl) * in_plane;
    const float* dyp = dy + static_cast<std::size_t>(pl) * out_plane;
    for (int ph = 0; ph < oh; ++ph) {
      // Each window's share, spread over its columns: column 2j gets window j's share (and,
      // for 3-wide windows, window j - 1's), column 2j + 1 window j's.
      const __m512 share =
          _mm512_div_ps(_mm512_maskz_loadu_ps(out, dyp + static_cast<std::size_t>(ph) * static_cast<std::size_t>(ow)),
                        divisors[ph]);
      __m512 evens = share;
      if (g.kernel_w == 3)
        evens = _mm512_add_ps(
            share, _mm512_castsi512_ps(_mm512_maskz_alignr_epi32(0xFFFF, _mm512_castps_si512(share), zero, 15)));
      spread[2 * ph] = _mm512_permutex2var_ps(evens, lo, share);
      spread[2 * ph + 1] = _mm512_permutex2var_ps(evens, hi, share);
    }
    // Each input row once: the spreads of the windows over it, in output-row order (the
    // portable loops' order of additions), stored without reading the row back.
    for (int h = 0; h < H; ++h) {
      __m512 r0 = _mm512_setzero_ps(), r1 = _mm512_setzero_ps();
      for (int ph = first[h]; ph <= last[h]; ++ph) {
        r0 = _mm512_add_ps(r0, spread[2 * ph]);
        r1 = _mm512_add_ps(r1, spread[2 * ph + 1]);
      }
      float* row = dxp + static_cast<std::size_t>(h) * static_cast<std::size_t>(W);
      _mm512_mask_storeu_ps(row, in0, r0);
      if (W > 16) _mm512_mask_storeu_ps(row + 16, in1, r1);
    }
  }
}
#endif

template <class T>
struct PoolKernel<CPU, T> {
  // Planes (n, c) are independent: every loop is parallel over them. `argmax` holds, per output,
  // the flat index h * width + w of its maximum in the plane, or -1 for an empty window.
  //
  // The loops run a whole output row at a time over windows worked out once per pass (PoolAxis),
  // with one branch-free sweep per kernel tap over the outputs whose windows lie inside the image
  // (the compiler vectorises it) and the clipped edge windows apart. Measured on CIFAR-10 quick's
  // shapes against per-output loops: 3x3/2 MAX forward 1.6x (training data) to 3x (random data,
  // where the old branches mispredicted) faster, AVE forward and backward 1.5-1.7x.
  static void max_forward(const PoolGeometry& g, int planes, const T* x, T* y, int* argmax, T* mask) {
#if defined(POSEIDON_POOL_X86)
    // Before the tiled loops too: CIFAR-10 quick's pool1 (100 x 32 x 32 x 32, 3x3/2) 4.2 -> 1.6 ms,
    // LeNet's 2x2/2 pool1 and pool2 (B64) 0.49 -> 0.25 and 0.28 -> 0.20 ms (see max_forward_s2_avx512).
    if constexpr (std::is_same_v<T, float>) {
      if (column_stride_2(g) && pool_cpu_has_avx512() && pool_vector_allowed()) {
        for_plane_shares(g, planes, [&](int p0, int p1) { max_forward_s2_avx512(g, p0, p1, x, y, argmax); });
        if (mask)
          for (std::size_t o = 0; o < static_cast<std::size_t>(planes) * g.out_plane(); ++o)
            mask[o] = static_cast<T>(argmax[o]);
        return;
      }
    }
#endif
    if (tiles_exactly(g)) {
      max_forward_tiled(g, planes, x, y, argmax, mask);
      return;
    }
    const std::size_t in_plane = g.in_plane(), out_plane = g.out_plane();
    const PoolAxis rows(g.out_h, g.height, g.kernel_h, g.stride_h, g.pad_h);
    const PoolAxis cols(g.out_w, g.width, g.kernel_w, g.stride_w, g.pad_w);
    const int ow = g.out_w, sw = g.stride_w, kw = g.kernel_w, W = g.width;
    const int f0 = cols.full_lo, f1 = cols.full_hi;
#pragma omp parallel if (static_cast<std::size_t>(planes) * out_plane * static_cast<std::size_t>(g.kernel_h * g.kernel_w) > \
                         math::detail::omp_min_elements)
    {
      // Per row of windows: first each input column's maximum over the window rows (contiguous,
      // vectorised), then each window's maximum over its columns. Caffe takes the row-major first
      // maximum (strict >, starting from the window's first element); so does this: each column
      // keeps its topmost maximum, and between columns equal values go to the smaller flat index.
      // Column maxima start at -inf and skip NaN as Caffe's compares do; a NaN first element wins
      // in both. The buffers are the thread's own, so nothing aliases the input.
      std::vector<T> cmax_buf(static_cast<std::size_t>(W)), vbuf(static_cast<std::size_t>(ow));
      std::vector<int> carg_buf(static_cast<std::size_t>(W)), abuf(static_cast<std::size_t>(ow));
      T* cmax = cmax_buf.data();
      int* carg = carg_buf.data();
      T* v = vbuf.data();
      int* a = abuf.data();
#pragma omp for schedule(static)
      for (int pl = 0; pl < planes; ++pl) {
        const T* xp = x + static_cast<std::size_t>(pl) * in_plane;
        T* yp = y + static_cast<std::size_t>(pl) * out_plane;
        int* ap = argmax + static_cast<std::size_t>(pl) * out_plane;
        for (int ph = 0; ph < g.out_h; ++ph) {
          const auto phi = static_cast<std::size_t>(ph);
          const int hs = rows.lo[phi], he = rows.hi[phi];
          // Start from each window's first element (empty windows: 0 and -1).
          for (int pw = 0; pw < ow; ++pw) {
            const auto i = static_cast<std::size_t>(pw);
            const bool empty = hs >= he || cols.lo[i] >= cols.hi[i];
            a[pw] = empty ? -1 : hs * W + cols.lo[i];
            v[pw] = empty ? T(0) : xp[empty ? 0 : a[pw]];
          }
          if (hs < he) {
            for (int xi = 0; xi < W; ++xi) {
              cmax[xi] = -std::numeric_limits<T>::infinity();
              carg[xi] = hs * W + xi;
            }
            for (int h = hs; h < he; ++h) {
              const T* row = xp + static_cast<std::size_t>(h) * static_cast<std::size_t>(W);
              const int base = h * W;
              for (int xi = 0; xi < W; ++xi) {
                // The index through a mask: GCC 12 if-converts (and vectorises) this, not a ?:.
                const T c = row[xi], m = cmax[xi];
                const int take = -static_cast<int>(c > m);
                cmax[xi] = c > m ? c : m;
                carg[xi] = (carg[xi] & ~take) | ((base + xi) & take);
              }
            }
            // Bitwise, not ||, to stay branch-free; on a tie the value does not change.
            for (int k = 0; k < kw; ++k)
              for (int pw = f0; pw < f1; ++pw) {
                const int xi = pw * sw + k - g.pad_w;
                const T c = cmax[xi], m = v[pw];
                const int ci = carg[xi], ai = a[pw];
                const int take = -(static_cast<int>(c > m) | (static_cast<int>(c == m) & static_cast<int>(ci < ai)));
                v[pw] = c > m ? c : m;
                a[pw] = (ai & ~take) | (ci & take);
              }
            for (int pw = 0; pw < ow; ++pw) {
              if (pw == f0) pw = f1;
              if (pw >= ow) break;
              const auto i = static_cast<std::size_t>(pw);
              for (int xi = cols.lo[i]; xi < cols.hi[i]; ++xi) {
                const T c = cmax[xi], m = v[pw];
                const int ci = carg[xi], ai = a[pw];
                const int take = -(static_cast<int>(c > m) | (static_cast<int>(c == m) & static_cast<int>(ci < ai)));
                v[pw] = c > m ? c : m;
                a[pw] = (ai & ~take) | (ci & take);
              }
            }
          }
          std::copy_n(v, ow, yp + phi * static_cast<std::size_t>(ow));
          std::copy_n(a, ow, ap + phi * static_cast<std::size_t>(ow));
        }
        if (mask)
          for (std::size_t o = 0; o < out_plane; ++o)
            mask[static_cast<std::size_t>(pl) * out_plane + o] = static_cast<T>(ap[o]);
      }
    }
  }

  // The vector path's windows: no padding, column stride 2, 2 or 3 columns wide, and no window
  // past the image (kernels at least as large as the strides).
  static bool column_stride_2(const PoolGeometry& g) {
    return g.pad_h == 0 && g.pad_w == 0 && g.stride_w == 2 && (g.kernel_w == 2 || g.kernel_w == 3) &&
           g.kernel_h >= g.stride_h;
  }

  // f(p0, p1) over each thread's contiguous share of the planes (one call without threads).
  template <class F>
  static void for_plane_shares(const PoolGeometry& g, int planes, F f) {
    if (static_cast<std::size_t>(planes) * g.in_plane() <= math::detail::omp_min_elements) {
      f(0, planes);
      return;
    }
#pragma omp parallel
    {
      const auto t = static_cast<long long>(omp_get_thread_num()), nt = static_cast<long long>(omp_get_num_threads());
      f(static_cast<int>(planes * t / nt), static_cast<int>(planes * (t + 1) / nt));
    }
  }

  // The AVE vector path's: those, on planes at most 32 columns wide (one row of outputs per
  // register) and at most 64 rows (the backward pass keeps a plane's spreads).
  static bool narrow_column_stride_2(const PoolGeometry& g) {
    return column_stride_2(g) && g.width <= 32 && g.height <= 64 && g.out_h <= 32;
  }

  // Windows that tile the image exactly (kernel == stride, no padding, nothing left over: LeNet's
  // and VGG's 2x2/2) need neither the column maxima nor the edge cases: each output compares its
  // window's taps in row-major order, one sweep over an output row per tap. LeNet's pool1 (64 x 20 x
  // 24 x 24) ran 3.5x faster this way than through the general loops, whose per-row set-up
  // dominated on such short rows (float 2x2/2 now takes the vector path where there is one).
  static bool tiles_exactly(const PoolGeometry& g) {
    return g.pad_h == 0 && g.pad_w == 0 && g.kernel_h == g.stride_h && g.kernel_w == g.stride_w &&
           g.out_h * g.stride_h == g.height && g.out_w * g.stride_w == g.width;
  }

  static void max_forward_tiled(const PoolGeometry& g, int planes, const T* x, T* y, int* argmax, T* mask) {
    const std::size_t in_plane = g.in_plane(), out_plane = g.out_plane();
    const int ow = g.out_w, kh = g.kernel_h, kw = g.kernel_w, W = g.width;
#pragma omp parallel for schedule(static) if (static_cast<std::size_t>(planes) * in_plane > math::detail::omp_min_elements)
    for (int pl = 0; pl < planes; ++pl) {
      const T* xp = x + static_cast<std::size_t>(pl) * in_plane;
      T* yp = y + static_cast<std::size_t>(pl) * out_plane;
      int* ap = argmax + static_cast<std::size_t>(pl) * out_plane;
      for (int ph = 0; ph < g.out_h; ++ph) {
        T* v = yp + static_cast<std::size_t>(ph) * static_cast<std::size_t>(ow);
        int* a = ap + static_cast<std::size_t>(ph) * static_cast<std::size_t>(ow);
        const int h0 = ph * kh;
        // The window's first tap starts it; later taps win only when strictly greater, Caffe's
        // first maximum (a NaN first tap stays, as in the general loops).
        const T* r0 = xp + static_cast<std::size_t>(h0) * static_cast<std::size_t>(W);
        for (int pw = 0; pw < ow; ++pw) {
          v[pw] = r0[pw * kw];
          a[pw] = h0 * W + pw * kw;
        }
        for (int dh = 0; dh < kh; ++dh) {
          const int base = (h0 + dh) * W;
          const T* row = xp + static_cast<std::size_t>(base);
          for (int dw = dh == 0 ? 1 : 0; dw < kw; ++dw)
            for (int pw = 0; pw < ow; ++pw) {
              const T c = row[pw * kw + dw], m = v[pw];
              const int take = -static_cast<int>(c > m);
              v[pw] = c > m ? c : m;
              a[pw] = (a[pw] & ~take) | ((base + pw * kw + dw) & take);
            }
        }
      }
      if (mask)
        for (std::size_t o = 0; o < out_plane; ++o)
          mask[static_cast<std::size_t>(pl) * out_plane + o] = static_cast<T>(ap[o]);
    }
  }

  static void max_backward(const PoolGeometry& g, int planes, const T* dy, const int* argmax, T* dx) {
    const std::size_t in_plane = g.in_plane(), out_plane = g.out_plane();
#pragma omp parallel for schedule(static) if (static_cast<std::size_t>(planes) * in_plane > math::detail::omp_min_elements)
    for (int pl = 0; pl < planes; ++pl) {
      T* dxp = dx + static_cast<std::size_t>(pl) * in_plane;
      const T* dyp = dy + static_cast<std::size_t>(pl) * out_plane;
      const int* ap = argmax + static_cast<std::size_t>(pl) * out_plane;
      std::memset(dxp, 0, in_plane * sizeof(T));
      for (std::size_t o = 0; o < out_plane; ++o)
        if (ap[o] >= 0) dxp[ap[o]] += dyp[o];
    }
  }

  // Caffe's divisor: the window clipped to the padded image (padding counts), before it is clipped
  // to the image itself. An empty window (kernel < stride, no pad) averages nothing: 0.
  static T ave_divisor(const PoolAxis& rows, const PoolAxis& cols, std::size_t ph, std::size_t pw) {
    const bool empty = rows.lo[ph] >= rows.hi[ph] || cols.lo[pw] >= cols.hi[pw];
    return empty ? T(0) : static_cast<T>(rows.padded[ph] * cols.padded[pw]);
  }

  // Per row of windows: the covered input rows summed into one row vector (contiguous adds the
  // compiler vectorises), then each window's columns of it. The sums differ from Caffe's order of
  // additions by rounding only.
  static void ave_forward(const PoolGeometry& g, int planes, const T* x, T* y) {
#if defined(POSEIDON_POOL_X86)
    // CIFAR-10 quick's pool2 and pool3 (B100): forward 0.84 -> 0.16 and 0.72 -> 0.13 ms, backward
    // 0.85 -> 0.23 and 0.73 -> 0.17 ms (the divisors and row ranges worked out once per pass;
    // per plane, they had kept the first version at 0.44 forward).
    if constexpr (std::is_same_v<T, float>) {
      if (narrow_column_stride_2(g) && pool_cpu_has_avx512() && pool_vector_allowed()) {
        for_plane_shares(g, planes, [&](int p0, int p1) { ave_forward_s2_avx512(g, p0, p1, x, y); });
        return;
      }
    }
#endif
    const std::size_t in_plane = g.in_plane(), out_plane = g.out_plane();
    const PoolAxis rows(g.out_h, g.height, g.kernel_h, g.stride_h, g.pad_h);
    const PoolAxis cols(g.out_w, g.width, g.kernel_w, g.stride_w, g.pad_w);
    const int ow = g.out_w, sw = g.stride_w, kw = g.kernel_w, W = g.width;
    const int f0 = cols.full_lo, f1 = cols.full_hi;
#pragma omp parallel if (static_cast<std::size_t>(planes) * out_plane * static_cast<std::size_t>(g.kernel_h * g.kernel_w) > \
                         math::detail::omp_min_elements)
    {
      std::vector<T> colsum_buf(static_cast<std::size_t>(W)), sum_buf(static_cast<std::size_t>(ow));
      T* colsum = colsum_buf.data();
      T* sum = sum_buf.data();
#pragma omp for schedule(static)
      for (int pl = 0; pl < planes; ++pl) {
        const T* xp = x + static_cast<std::size_t>(pl) * in_plane;
        T* yp = y + static_cast<std::size_t>(pl) * out_plane;
        for (int ph = 0; ph < g.out_h; ++ph) {
          const auto phi = static_cast<std::size_t>(ph);
          std::fill_n(colsum, W, T(0));
          std::fill_n(sum, ow, T(0));
          for (int h = rows.lo[phi]; h < rows.hi[phi]; ++h) {
            const T* row = xp + static_cast<std::size_t>(h) * static_cast<std::size_t>(W);
            for (int xi = 0; xi < W; ++xi) colsum[xi] += row[xi];
          }
          for (int k = 0; k < kw; ++k)
            for (int pw = f0; pw < f1; ++pw) sum[pw] += colsum[pw * sw + k - g.pad_w];
          for (int pw = 0; pw < ow; ++pw) {
            if (pw == f0) pw = f1;
            if (pw >= ow) break;
            const auto i = static_cast<std::size_t>(pw);
            for (int xi = cols.lo[i]; xi < cols.hi[i]; ++xi) sum[pw] += colsum[xi];
          }
          T* out = yp + phi * static_cast<std::size_t>(ow);
          for (int pw = 0; pw < ow; ++pw) {
            const T d = ave_divisor(rows, cols, phi, static_cast<std::size_t>(pw));
            out[pw] = d > T(0) ? sum[pw] / d : T(0);
          }
        }
      }
    }
  }

  // Per row of windows: the outputs' shares (dy / divisor) spread along the row into one input-row
  // vector, added to every input row the windows cover: contiguous adds the compiler vectorises
  // instead of kernel_h * kernel_w scattered ones per output. The sums differ from Caffe's order
  // of additions by rounding only.
  static void ave_backward(const PoolGeometry& g, int planes, const T* dy, T* dx) {
#if defined(POSEIDON_POOL_X86)
    if constexpr (std::is_same_v<T, float>) {
      if (narrow_column_stride_2(g) && pool_cpu_has_avx512() && pool_vector_allowed()) {
        for_plane_shares(g, planes, [&](int p0, int p1) { ave_backward_s2_avx512(g, p0, p1, dy, dx); });
        return;
      }
    }
#endif
    const std::size_t in_plane = g.in_plane(), out_plane = g.out_plane();
    const PoolAxis rows(g.out_h, g.height, g.kernel_h, g.stride_h, g.pad_h);
    const PoolAxis cols(g.out_w, g.width, g.kernel_w, g.stride_w, g.pad_w);
    const int ow = g.out_w, sw = g.stride_w, kw = g.kernel_w, W = g.width;
    const int f0 = cols.full_lo, f1 = cols.full_hi;
#pragma omp parallel if (static_cast<std::size_t>(planes) * in_plane > math::detail::omp_min_elements)
    {
      std::vector<T> spread_buf(static_cast<std::size_t>(W)), share_buf(static_cast<std::size_t>(ow));
      T* spread = spread_buf.data();
      T* share = share_buf.data();
#pragma omp for schedule(static)
      for (int pl = 0; pl < planes; ++pl) {
        T* dxp = dx + static_cast<std::size_t>(pl) * in_plane;
        const T* dyp = dy + static_cast<std::size_t>(pl) * out_plane;
        std::memset(dxp, 0, in_plane * sizeof(T));
        for (int ph = 0; ph < g.out_h; ++ph) {
          const auto phi = static_cast<std::size_t>(ph);
          if (rows.lo[phi] >= rows.hi[phi]) continue;
          const T* d = dyp + phi * static_cast<std::size_t>(ow);
          std::fill_n(spread, W, T(0));
          for (int pw = 0; pw < ow; ++pw) {
            const auto i = static_cast<std::size_t>(pw);
            const T div = ave_divisor(rows, cols, phi, i);
            share[i] = div > T(0) ? d[i] / div : T(0);
          }
          // One kernel column at a time over the whole-kernel windows: no two adds of a sweep touch
          // the same input, so there is no chain of stores and reloads through overlapping windows.
          for (int k = 0; k < kw; ++k)
            for (int pw = f0; pw < f1; ++pw) spread[pw * sw + k - g.pad_w] += share[static_cast<std::size_t>(pw)];
          for (int pw = 0; pw < ow; ++pw) {
            if (pw == f0) pw = f1;
            if (pw >= ow) break;
            const auto i = static_cast<std::size_t>(pw);
            for (int xi = cols.lo[i]; xi < cols.hi[i]; ++xi) spread[xi] += share[i];
          }
          for (int h = rows.lo[phi]; h < rows.hi[phi]; ++h) {
            T* row = dxp + static_cast<std::size_t>(h) * static_cast<std::size_t>(W);
            for (int xi = 0; xi < W; ++xi) row[xi] += spread[xi];
          }
        }
      }
    }
  }
};

/// What Pooling shares on every device: its parameters and their checks, the output shape
/// (Caffe's rounding) and the argmax buffer. PoolingLayer<D> adds forward and backward.
template <class D, class T>
class PoolingLayerBase : public Layer<D, T> {
  using Base = Layer<D, T>;

 protected:
  using Method = PoolingParam::Method;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit PoolingLayerBase(const LayerParameter& p)
      : Base(p), pp_(PoolingParam::from_message(p.sub("pooling_param"), p.describe() + " pooling_param")) {}
  PoolingLayerBase(const LayerParameter& p, PoolingParam pp) : Base(p), pp_(pp) {}

  [[nodiscard]] std::string_view type() const override { return "Pooling"; }
  [[nodiscard]] int exact_num_bottom() const override { return 1; }
  [[nodiscard]] int min_num_top() const override { return 1; }
  // MAX pooling may output its argmax mask as a second top.
  [[nodiscard]] int max_num_top() const override { return pp_.pool == Method::max ? 2 : 1; }
  [[nodiscard]] const PoolingParam& pooling_param() const { return pp_; }
  /// The argmax of the last MAX forward: per output, h * width + w within its plane (-1: none).
  [[nodiscard]] const Tensor<D, int>& argmax() const { return argmax_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    const auto& b = *bottom[0];
    this->check_axes(b, 0, 4, 4);
    g_.height = b.shape(2);
    g_.width = b.shape(3);
    if (pp_.global_pooling) {
      g_.kernel_h = g_.height;
      g_.kernel_w = g_.width;
    }
    this->check(g_.kernel_h <= g_.height + 2 * g_.pad_h && g_.kernel_w <= g_.width + 2 * g_.pad_w, "kernel_size ",
                g_.kernel_h, "x", g_.kernel_w, " is larger than the padded input ", g_.height + 2 * g_.pad_h, "x",
                g_.width + 2 * g_.pad_w, " of bottom '", this->name_of_bottom(0), "' ", b.shape().str());
    g_.out_h = out_size(g_.height, g_.kernel_h, g_.pad_h, g_.stride_h);
    g_.out_w = out_size(g_.width, g_.kernel_w, g_.pad_w, g_.stride_w);
    const Shape s{b.shape(0), b.shape(1), g_.out_h, g_.out_w};
    for (auto* t : top) t->reshape(s);
    if (pp_.pool == Method::max) argmax_.reshape(s);
  }

 protected:
  void layer_setup(Context&, const Vec& bottom, const Vec&) override {
    this->check(pp_.pool != Method::stochastic,
                "pool STOCHASTIC is not supported (only MAX and AVE); Caffe implements it on the GPU only");
    this->check_axes(*bottom[0], 0, 4, 4);
    if (pp_.global_pooling) {
      this->check(!pp_.has_kernel, "with global_pooling: true, kernel_size must not be specified");
      this->check(pp_.pad_h == 0 && pp_.pad_w == 0 && pp_.stride_h == 1 && pp_.stride_w == 1,
                  "with global_pooling: true, only pad 0 and stride 1 are allowed; got pad ", pp_.pad_h, "x",
                  pp_.pad_w, ", stride ", pp_.stride_h, "x", pp_.stride_w);
    } else {
      this->check(pp_.has_kernel, "kernel_size (or kernel_h and kernel_w) is required");
      this->check(pp_.kernel_h > 0 && pp_.kernel_w > 0, "kernel_size must be positive, got ", pp_.kernel_h, "x",
                  pp_.kernel_w);
    }
    this->check(pp_.stride_h > 0 && pp_.stride_w > 0, "stride must be positive, got ", pp_.stride_h, "x",
                pp_.stride_w);
    this->check(pp_.pad_h >= 0 && pp_.pad_w >= 0, "pad must be non-negative, got ", pp_.pad_h, "x", pp_.pad_w);
    if (!pp_.global_pooling)
      this->check(pp_.pad_h < pp_.kernel_h && pp_.pad_w < pp_.kernel_w, "pad ", pp_.pad_h, "x", pp_.pad_w,
                  " must be smaller than kernel_size ", pp_.kernel_h, "x", pp_.kernel_w);
    g_.kernel_h = pp_.kernel_h;
    g_.kernel_w = pp_.kernel_w;
    g_.stride_h = pp_.stride_h;
    g_.stride_w = pp_.stride_w;
    g_.pad_h = pp_.pad_h;
    g_.pad_w = pp_.pad_w;
  }

  // Caffe's rule: ceil (or floor) of the window count, and with padding the last window must
  // start inside the image (or its left padding), else it is dropped.
  [[nodiscard]] int out_size(int in, int kernel, int pad, int stride) const {
    const int span = in + 2 * pad - kernel;  // >= 0, checked above
    int out = (pp_.round_mode == PoolingParam::RoundMode::ceil ? (span + stride - 1) / stride : span / stride) + 1;
    if ((g_.pad_h || g_.pad_w) && (out - 1) * stride >= in + pad) --out;
    return out;
  }

  PoolingParam pp_;
  PoolGeometry g_;
  Tensor<D, int> argmax_;
};

}  // namespace detail

template <class D, class T = float>
class PoolingLayer final : public detail::PoolingLayerBase<D, T> {
  using Base = detail::PoolingLayerBase<D, T>;
  using Kernel = detail::PoolKernel<D, T>;
  using typename Base::Method;

 public:
  using typename Base::Context;
  using typename Base::Vec;
  using Base::Base;

 protected:
  void forward_impl(Context&, const Vec& bottom, const Vec& top) override {
    const int planes = bottom[0]->shape(0) * bottom[0]->shape(1);
    if (this->pp_.pool == Method::max)
      Kernel::max_forward(this->g_, planes, bottom[0]->data(), top[0]->data(), this->argmax_.data(),
                          top.size() > 1 ? top[1]->data() : nullptr);
    else
      Kernel::ave_forward(this->g_, planes, bottom[0]->data(), top[0]->data());
  }

  void backward_impl(Context&, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    if (!propagate_down[0]) return;
    const int planes = bottom[0]->shape(0) * bottom[0]->shape(1);
    if (this->pp_.pool == Method::max)
      Kernel::max_backward(this->g_, planes, top[0]->diff(), this->argmax_.data(), bottom[0]->diff());
    else
      Kernel::ave_backward(this->g_, planes, top[0]->diff(), bottom[0]->diff());
  }

};

POSEIDON_REGISTER_LAYER("Pooling", PoolingLayer)

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/layers/cuda/pooling.cuh>
#endif
