// Direct convolution for layers with few input channels (the first layer of an image net:
// CIFAR-10 quick's and LeNet's conv1): the output and the weight gradient computed straight from
// a zero-padded copy of each image, without a column matrix.
#pragma once
// Why: with 1-4 input channels the GEMM of im2col + GEMM has an inner dimension of only
// C * KH * KW (25-100), too short for BLAS to reach its speed, and the column matrix it reads is
// KH * KW times the image. Here each output row is a sum over the C * KH * KW taps of a shifted
// input row times a weight: 16 output columns per AVX-512 register, 8 output channels per block
// (16 accumulators). The weight gradient turns the loops around: for each block of 4 output
// channels x 6 taps (24 accumulators) it sums output-gradient rows times shifted input rows
// over the image, and the lanes are added up once at the end.
//
// Stride 1, no dilation, one group, float. On CPUs without AVX-512 (and in nvcc's host pass)
// a plain loop nest computes the same sums: correct, not fast, so the convolution layer takes
// this path automatically only where AVX-512 is present.

#include <poseidon/core/config.hpp>
#include <poseidon/core/context.hpp>
#include <poseidon/core/error.hpp>

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
#define POSEIDON_DIRECT_CONV_X86 1
#include <immintrin.h>
#define POSEIDON_DIRECT_CONV_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
#endif

POSEIDON_NAMESPACE_BEGIN
namespace math {

/// One convolution in the direct kernels' reach: stride 1, no dilation, one group.
struct DirectConvShape {
  int channels = 0, outputs = 0;  // C and K
  int height = 0, width = 0;
  int kernel_h = 0, kernel_w = 0;
  int pad_h = 0, pad_w = 0;
  [[nodiscard]] int out_h() const { return height + 2 * pad_h - kernel_h + 1; }
  [[nodiscard]] int out_w() const { return width + 2 * pad_w - kernel_w + 1; }
};

namespace detail::direct_conv {

inline constexpr int lanes = 16;
inline constexpr int fwd_block = 8;   // output channels per forward block
inline constexpr int grad_block = 4;  // output channels per weight-gradient block
inline constexpr int grad_taps = 6;   // taps per weight-gradient block

/// Where things lie: each image is copied into C planes of `rows` x `stride` floats with the
/// padding (and everything right of it) zero, so that every tap of every output row reads whole
/// registers without bounds checks: a row of the padded plane is wide enough for the output
/// width rounded up to two registers plus the kernel width. A plane of ones follows: the weight
/// gradient's kernel gets the bias gradient as one more tap, reading it.
struct Plan {
  int C = 0, K = 0, H = 0, W = 0, KH = 0, KW = 0, ph = 0, pw = 0, OH = 0, OW = 0;
  int rows = 0, stride = 0;
  [[nodiscard]] std::size_t plane() const { return static_cast<std::size_t>(rows) * static_cast<std::size_t>(stride); }
  [[nodiscard]] std::size_t image() const { return static_cast<std::size_t>(C) * plane(); }
  [[nodiscard]] std::size_t buffer() const { return image() + plane(); }  // the image and the ones
  [[nodiscard]] int taps() const { return C * KH * KW; }
  [[nodiscard]] std::size_t out_plane() const { return static_cast<std::size_t>(OH) * static_cast<std::size_t>(OW); }
  [[nodiscard]] static int round_up(int v, int m) { return (v + m - 1) / m * m; }
};

inline Plan plan(const DirectConvShape& s) {
  Plan p;
  p.C = s.channels;
  p.K = s.outputs;
  p.H = s.height;
  p.W = s.width;
  p.KH = s.kernel_h;
  p.KW = s.kernel_w;
  p.ph = s.pad_h;
  p.pw = s.pad_w;
  p.OH = s.out_h();
  p.OW = s.out_w();
  p.rows = p.H + 2 * p.ph;
  p.stride = Plan::round_up(Plan::round_up(p.OW, 2 * lanes) + p.KW - 1, lanes);
  return p;
}

/// Copies image x (C x H x W) into the interior of the padded planes; the rest stays zero.
inline void pad_image(const Plan& p, const float* x, float* buf) {
  for (int c = 0; c < p.C; ++c)
    for (int i = 0; i < p.H; ++i)
      std::memcpy(buf + static_cast<std::size_t>(c) * p.plane() +
                      static_cast<std::size_t>(i + p.ph) * static_cast<std::size_t>(p.stride) +
                      static_cast<std::size_t>(p.pw),
                  x + (static_cast<std::size_t>(c) * static_cast<std::size_t>(p.H) + static_cast<std::size_t>(i)) *
                          static_cast<std::size_t>(p.W),
                  static_cast<std::size_t>(p.W) * sizeof(float));
}

/// Tap t = (c * KH + ky) * KW + kx (the weights' order) reads the padded input at this offset
/// from the output position; with `bias`, tap C * KH * KW reads the plane of ones; taps past
/// those (block padding) read offset 0.
inline std::vector<int> tap_offsets(const Plan& p, int count, bool bias) {
  std::vector<int> off(static_cast<std::size_t>(count), 0);
  for (int t = 0; t < p.taps(); ++t) {
    const int kx = t % p.KW, ky = (t / p.KW) % p.KH, c = t / (p.KW * p.KH);
    off[static_cast<std::size_t>(t)] = static_cast<int>(static_cast<std::size_t>(c) * p.plane()) + ky * p.stride + kx;
  }
  if (bias) off[static_cast<std::size_t>(p.taps())] = static_cast<int>(p.image());
  return off;
}

/// The plain loop nest: y (one image) = conv + bias (bias may be null).
inline void forward_plain(const Plan& p, const float* buf, const float* w, const float* bias, float* y) {
  const auto z = [](int v) { return static_cast<std::size_t>(v); };
  const std::size_t taps = z(p.taps()), stride = z(p.stride);
  for (int k = 0; k < p.K; ++k)
    for (int oy = 0; oy < p.OH; ++oy)
      for (int ox = 0; ox < p.OW; ++ox) {
        float s = bias ? bias[k] : 0.0f;
        const float* wk = w + z(k) * taps;
        for (int c = 0; c < p.C; ++c)
          for (int ky = 0; ky < p.KH; ++ky)
            for (int kx = 0; kx < p.KW; ++kx)
              s += wk[z((c * p.KH + ky) * p.KW + kx)] * buf[z(c) * p.plane() + z(oy + ky) * stride + z(ox + kx)];
        y[(z(k) * z(p.OH) + z(oy)) * z(p.OW) + z(ox)] = s;
      }
}

// sums (K x taps) += the sums over one image of the output gradient times each of the `taps`
// taps at offsets `off`.
inline void filter_plain(const Plan& p, const float* buf, const int* off, int taps, const float* dy, float* sums) {
  const auto z = [](int v) { return static_cast<std::size_t>(v); };
  const std::size_t stride = z(p.stride);
  for (int k = 0; k < p.K; ++k)
    for (int t = 0; t < taps; ++t) {
      float s = 0.0f;
      for (int oy = 0; oy < p.OH; ++oy)
        for (int ox = 0; ox < p.OW; ++ox)
          s += dy[(z(k) * z(p.OH) + z(oy)) * z(p.OW) + z(ox)] * buf[z(off[t]) + z(oy) * stride + z(ox)];
      sums[z(k) * z(taps) + z(t)] += s;
    }
}

#if defined(POSEIDON_DIRECT_CONV_X86)
// Lanes [0, n) of a register, n in [0, 16].
POSEIDON_DIRECT_CONV_AVX512 inline __mmask16 lane_mask(int n) {
  return n >= lanes ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// Output rows of one block of fwd_block channels, V registers (16 V columns) at a time from x0.
// `wp`: the block's weights, taps x fwd_block; `y`: the block's first output plane; channels
// from `valid` on are padding and are not stored.
template <int V>
POSEIDON_DIRECT_CONV_AVX512 inline void forward_cols(const Plan& p, const float* buf, const int* off, int taps,
                                                     const float* wp, const float* bias, float* y, int valid,
                                                     int x0) {
  constexpr int M = fwd_block;
  const std::size_t out_plane = p.out_plane();
  for (int oy = 0; oy < p.OH; ++oy) {
    __m512 acc[M][V];
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m)
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) acc[m][v] = _mm512_set1_ps(bias[m]);
    const float* base = buf + static_cast<std::size_t>(oy * p.stride + x0);
    for (int t = 0; t < taps; ++t) {
      const float* q = base + off[t];
      __m512 a[V];
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) a[v] = _mm512_loadu_ps(q + v * lanes);
      const float* wt = wp + static_cast<std::size_t>(t) * M;
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) {
        const __m512 wv = _mm512_set1_ps(wt[m]);
#pragma GCC unroll 2
        for (int v = 0; v < V; ++v) acc[m][v] = _mm512_fmadd_ps(wv, a[v], acc[m][v]);
      }
    }
    float* row = y + static_cast<std::size_t>(oy) * static_cast<std::size_t>(p.OW) + static_cast<std::size_t>(x0);
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      if (m >= valid) break;
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) {
        const int n = p.OW - x0 - v * lanes;
        float* dst = row + static_cast<std::size_t>(m) * out_plane + static_cast<std::size_t>(v * lanes);
        if (n >= lanes)
          _mm512_storeu_ps(dst, acc[m][v]);
        else if (n > 0)
          _mm512_mask_storeu_ps(dst, lane_mask(n), acc[m][v]);
      }
    }
  }
}

POSEIDON_DIRECT_CONV_AVX512 inline void forward_avx512(const Plan& p, const float* buf, const int* off, int taps,
                                                       const float* wp, const float* bias, float* y) {
  constexpr int M = fwd_block;
  for (int k0 = 0; k0 < p.K; k0 += M) {
    const float* w = wp + static_cast<std::size_t>(k0) * static_cast<std::size_t>(taps);
    float* yk = y + static_cast<std::size_t>(k0) * p.out_plane();
    const int valid = std::min(M, p.K - k0);
    int x0 = 0;
    for (; p.OW - x0 > lanes; x0 += 2 * lanes) forward_cols<2>(p, buf, off, taps, w, bias + k0, yk, valid, x0);
    if (x0 < p.OW) forward_cols<1>(p, buf, off, taps, w, bias + k0, yk, valid, x0);
  }
}

// One block of grad_block output channels x grad_taps taps over one image: acc (the block's
// 24 lane vectors, stored) += dy rows x shifted input rows. `dy[m]`: the output-gradient plane of
// channel m (a zero plane for padding channels).
POSEIDON_DIRECT_CONV_AVX512 inline void filter_block_avx512(const Plan& p, const float* buf, const int* off,
                                                            const float* const* dy, float* accp) {
  constexpr int M = grad_block, T = grad_taps;
  __m512 acc[M][T];
#pragma GCC unroll 4
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 6
    for (int t = 0; t < T; ++t) acc[m][t] = _mm512_loadu_ps(accp + (m * T + t) * lanes);
  const int full = p.OW / lanes * lanes;
  const __mmask16 tail = lane_mask(p.OW - full);
  for (int oy = 0; oy < p.OH; ++oy) {
    const float* in = buf + static_cast<std::size_t>(oy) * static_cast<std::size_t>(p.stride);
    const std::size_t r = static_cast<std::size_t>(oy) * static_cast<std::size_t>(p.OW);
    for (int x0 = 0; x0 < p.OW; x0 += lanes) {
      // The last, partial register reads its lanes past the row as zero, input too: the padded
      // input there may hold the next row's pixels, and 0 * NaN would not be 0.
      const __mmask16 mk = x0 < full ? static_cast<__mmask16>(0xFFFF) : tail;
      // One input register at a time: 24 accumulators + 4 gradient rows + 1 input fit the 32
      // registers (all six inputs at once made the compiler spill two accumulators). Measured
      // against 8 channels x 3 taps (8 gradient rows, 3 inputs): 78 against 63 GFLOP/s.
      __m512 d[M];
#pragma GCC unroll 4
      for (int m = 0; m < M; ++m) d[m] = _mm512_maskz_loadu_ps(mk, dy[m] + r + static_cast<std::size_t>(x0));
#pragma GCC unroll 6
      for (int t = 0; t < T; ++t) {
        const __m512 a = _mm512_maskz_loadu_ps(mk, in + off[t] + x0);
#pragma GCC unroll 4
        for (int m = 0; m < M; ++m) acc[m][t] = _mm512_fmadd_ps(d[m], a, acc[m][t]);
      }
    }
  }
#pragma GCC unroll 4
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 6
    for (int t = 0; t < T; ++t) _mm512_storeu_ps(accp + (m * T + t) * lanes, acc[m][t]);
}
#endif

/// Whether this CPU runs the AVX-512 kernels; tests turn them off to run the plain loops.
inline bool& vector_kernels_allowed() {
  static bool allowed = true;
  return allowed;
}

inline bool cpu_has_avx512() {
#if defined(POSEIDON_DIRECT_CONV_X86)
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

}  // namespace detail::direct_conv

/// Stride-1 convolution computed directly (see the top of this file). Holds its scratch, so one
/// instance serves one layer (not two threads at once).
class DirectConvolution {
  using Plan = detail::direct_conv::Plan;
  static constexpr int lanes = detail::direct_conv::lanes;

 public:
  /// Whether the geometry is in reach: stride 1, no dilation, pads smaller than the kernel.
  static bool applies(int stride_h, int stride_w, int dilation_h, int dilation_w, int pad_h, int pad_w, int kernel_h,
                      int kernel_w) {
    return stride_h == 1 && stride_w == 1 && dilation_h == 1 && dilation_w == 1 && kernel_h > 0 && kernel_w > 0 &&
           pad_h >= 0 && pad_w >= 0 && pad_h < kernel_h && pad_w < kernel_w;
  }
  /// Whether one padded image is small enough for the loops' int offsets (any real layer is).
  static bool fits(const DirectConvShape& s) {
    return s.channels > 0 && s.height > 0 && s.width > 0 && s.out_w() > 0 &&
           detail::direct_conv::plan(s).buffer() < (std::size_t(1) << 31);
  }
  /// Whether the vector kernels run here (otherwise the plain loops do).
  static bool fast() { return detail::direct_conv::cpu_has_avx512() && detail::direct_conv::vector_kernels_allowed(); }

  /// y (num x K x OH x OW) = conv(x, w) + bias; bias may be null. Images are split among the
  /// context's threads.
  void forward(DeviceContext<CPU>& ctx, const DirectConvShape& s, const float* w, const float* bias, const float* x,
               int num, float* y) {
    const Plan p = checked_plan(s);
    const bool vec = fast();
    constexpr int M = detail::direct_conv::fwd_block;
    const int kp = Plan::round_up(p.K, M), taps = p.taps();
    if (vec) {
      // Weights regrouped per block as taps x M (one broadcast per tap and channel), padding zero.
      packed_.assign(z(kp) * z(taps), 0.0f);
      for (int k = 0; k < p.K; ++k)
        for (int t = 0; t < taps; ++t) packed_[(z(k / M) * z(taps) + z(t)) * M + z(k % M)] = w[z(k) * z(taps) + z(t)];
      bias_.assign(z(kp), 0.0f);
      if (bias) std::copy_n(bias, p.K, bias_.data());
      offsets_ = detail::direct_conv::tap_offsets(p, taps, false);
    }
    const int threads = std::max(1, std::min(ctx.threads(), num));
    prepare(p, threads, 0, 0);
    const std::size_t in_image = z(p.C) * z(p.H) * z(p.W), out_image = z(p.K) * p.out_plane();
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int n = 0; n < num; ++n) {
      float* buf = scratch_[z(omp_get_thread_num())].buf.data();
      detail::direct_conv::pad_image(p, x + z(n) * in_image, buf);
      float* yn = y + z(n) * out_image;
#if defined(POSEIDON_DIRECT_CONV_X86)
      if (vec) {
        detail::direct_conv::forward_avx512(p, buf, offsets_.data(), taps, packed_.data(), bias_.data(), yn);
        continue;
      }
#endif
      detail::direct_conv::forward_plain(p, buf, w, bias, yn);
    }
  }

  /// dw (K x C x KH x KW) += the weight gradient for bottom x and top gradient dy, and, when db
  /// is not null, db (K) += the bias gradient. Each thread sums a contiguous share of the images,
  /// and the shares are added in thread order: a fixed thread count gives the same bits on every
  /// run.
  void backward_filter(DeviceContext<CPU>& ctx, const DirectConvShape& s, const float* x, const float* dy, int num,
                       float* dw, float* db = nullptr) {
    const Plan p = checked_plan(s);
    const bool vec = fast();
    constexpr int M = detail::direct_conv::grad_block, T = detail::direct_conv::grad_taps;
    const int taps = p.taps() + (db ? 1 : 0);  // the weights' taps and the bias's
    const int kp = Plan::round_up(p.K, M), tp = Plan::round_up(taps, T);
    const std::size_t sums = z(p.K) * z(taps);
    const std::size_t acc_count = vec ? z(kp) * z(tp) * lanes : sums;
    offsets_ = detail::direct_conv::tap_offsets(p, tp, db != nullptr);
    const int threads = std::max(1, std::min(ctx.threads(), num));
    prepare(p, threads, acc_count, sums);
    if (vec) zeros_.assign(p.out_plane(), 0.0f);
    const std::size_t in_image = z(p.C) * z(p.H) * z(p.W), out_image = z(p.K) * p.out_plane();
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      Scratch& sc = scratch_[z(t)];
      const int lo = static_cast<int>(static_cast<long long>(num) * t / nt);
      const int hi = static_cast<int>(static_cast<long long>(num) * (t + 1) / nt);
      std::fill_n(sc.acc.data(), acc_count, 0.0f);
      for (int n = lo; n < hi; ++n) {
        detail::direct_conv::pad_image(p, x + z(n) * in_image, sc.buf.data());
        const float* dyn = dy + z(n) * out_image;
#if defined(POSEIDON_DIRECT_CONV_X86)
        if (vec) {
          for (int k0 = 0; k0 < kp; k0 += M) {
            const float* planes[M];
            for (int m = 0; m < M; ++m)
              planes[m] = k0 + m < p.K ? dyn + z(k0 + m) * p.out_plane() : zeros_.data();
            for (int t0 = 0; t0 < tp; t0 += T)
              detail::direct_conv::filter_block_avx512(
                  p, sc.buf.data(), offsets_.data() + t0, planes,
                  sc.acc.data() + (z(k0 / M) * z(tp / T) + z(t0 / T)) * (M * T * lanes));
          }
          continue;
        }
#endif
        detail::direct_conv::filter_plain(p, sc.buf.data(), offsets_.data(), taps, dyn, sc.acc.data());
      }
      // The thread's sums, K x taps: the lanes added up (vector kernels) or as they are.
      float* part = sc.part.data();
      if (vec) {
        for (std::size_t e = 0; e < sums; ++e) {
          const std::size_t k = e / z(taps), tap = e % z(taps);
          const float* v = sc.acc.data() + ((k / M * z(tp / T) + tap / T) * (M * T) + (k % M) * T + tap % T) * lanes;
          float sum = 0.0f;
          for (int l = 0; l < lanes; ++l) sum += v[l];
          part[e] = sum;
        }
      } else {
        std::copy_n(sc.acc.data(), sums, part);
      }
#pragma omp barrier
      const std::size_t e0 = sums * z(t) / z(nt);
      const std::size_t e1 = sums * z(t + 1) / z(nt);
      for (std::size_t e = e0; e < e1; ++e) {
        float sum = 0.0f;
        for (int u = 0; u < nt; ++u) sum += scratch_[z(u)].part[e];
        const std::size_t k = e / z(taps), tap = e % z(taps);
        if (tap < z(p.taps()))
          dw[k * z(p.taps()) + tap] += sum;
        else
          db[k] += sum;
      }
    }
  }

 private:
  static std::size_t z(int v) { return static_cast<std::size_t>(v); }

  struct Scratch {
    std::vector<float> buf;   // the padded image (zero outside the interior, kept so)
    std::vector<float> acc;   // weight-gradient lane sums (vector kernels) or sums (plain loops)
    std::vector<float> part;  // the thread's weight gradient
  };

  static Plan checked_plan(const DirectConvShape& s) {
    POSEIDON_CHECK(s.channels > 0 && s.outputs > 0 && s.height > 0 && s.width > 0 &&
                       applies(1, 1, 1, 1, s.pad_h, s.pad_w, s.kernel_h, s.kernel_w) && s.out_h() > 0 && s.out_w() > 0,
                   "direct convolution: bad shape (C ", s.channels, ", K ", s.outputs, ", ", s.height, "x", s.width,
                   ", kernel ", s.kernel_h, "x", s.kernel_w, ", pad ", s.pad_h, "x", s.pad_w, ")");
    POSEIDON_CHECK(fits(s), "direct convolution: an image of ", s.channels, "x", s.height, "x", s.width,
                   " is too large for the direct loops");
    return detail::direct_conv::plan(s);
  }

  // Per-thread buffers for this plan; the padded image (zero) and the ones after it are laid
  // out anew whenever the layout changes.
  void prepare(const Plan& p, int threads, std::size_t acc, std::size_t part) {
    if (scratch_.size() < z(threads)) scratch_.resize(z(threads));
    const bool relayout = p.rows != rows_ || p.stride != stride_ || p.C != channels_;
    rows_ = p.rows;
    stride_ = p.stride;
    channels_ = p.C;
    for (auto& sc : scratch_) {
      if (relayout || sc.buf.size() != p.buffer()) {
        sc.buf.assign(p.buffer(), 0.0f);
        std::fill(sc.buf.begin() + static_cast<std::ptrdiff_t>(p.image()), sc.buf.end(), 1.0f);
      }
      if (sc.acc.size() < acc) sc.acc.resize(acc);
      if (sc.part.size() < part) sc.part.resize(part);
    }
  }

  std::vector<Scratch> scratch_;
  std::vector<float> packed_, bias_, zeros_;
  std::vector<int> offsets_;
  int rows_ = -1, stride_ = -1, channels_ = -1;
};

}  // namespace math
POSEIDON_NAMESPACE_END
