// Convolution: Caffe's 2-d convolution (pad, stride, dilation, groups, optional bias) lowered to
// im2col + GEMM (several samples per GEMM for small planes), or on the CPU to Winograd's F(4x4, 3x3)
// / F(2x2, 5x5) for stride-1 3x3 and 5x5 kernels, or to direct loops for few input channels.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/filler.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/math/blas.hpp>
#include <poseidon/math/direct_conv.hpp>
#include <poseidon/math/im2col.hpp>
#include <poseidon/math/winograd.hpp>

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct ConvolutionParam {
  int num_output = 0;
  bool bias_term = true;
  int kernel_h = 0, kernel_w = 0;
  int pad_h = 0, pad_w = 0;
  int stride_h = 1, stride_w = 1;
  int dilation_h = 1, dilation_w = 1;
  int group = 1;
  FillerParameter weight_filler;
  FillerParameter bias_filler;
  int axis = 1;
  bool force_nd_im2col = false;

  static ConvolutionParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"num_output", "bias_term", "pad", "kernel_size", "stride", "dilation", "pad_h", "pad_w",
                    "kernel_h", "kernel_w", "stride_h", "stride_w", "group", "weight_filler", "bias_filler",
                    "engine", "axis", "force_nd_im2col"},
                   context);
    ConvolutionParam p;
    p.num_output = m.required<int>("num_output", context);
    p.bias_term = m.get("bias_term", true);
    p.group = m.get("group", 1);
    p.axis = m.get("axis", 1);
    p.force_nd_im2col = m.get("force_nd_im2col", false);
    // Validated so that typos are caught, then ignored: the CPU has one engine.
    (void)m.get_enum("engine", {"DEFAULT", "CAFFE", "CUDNN"}, 0);
    p.weight_filler = FillerParameter::from_message(m.child("weight_filler"), detail::concat(context, " weight_filler"));
    p.bias_filler = FillerParameter::from_message(m.child("bias_filler"), detail::concat(context, " bias_filler"));

    // Caffe's rule: a repeated field gives one value for both spatial axes or one per axis, and the
    // _h/_w pair replaces it (proto defaults apply to a member of the pair left out, except that
    // the kernel needs both).
    auto spatial = [&](std::string_view name, std::string_view hname, std::string_view wname, int fallback,
                       int pair_fallback, int& h, int& w) {
      const auto values = m.get_all<int>(name);
      const bool has_hw = !hname.empty() && (m.has(hname) || m.has(wname));
      if (has_hw) {
        if (!values.empty())
          detail::raise(context, ": either ", name, " or ", hname, "/", wname, " should be specified; not both");
        h = m.get(hname, pair_fallback);
        w = m.get(wname, pair_fallback);
        return;
      }
      if (values.size() > 2)
        detail::raise(context, ": ", name, " has ", values.size(),
                      " values; 2-d convolution takes 1 (both axes) or 2 (height, width)");
      h = values.empty() ? fallback : values[0];
      w = values.empty() ? fallback : values.back();
    };
    if (m.has("kernel_h") != m.has("kernel_w"))
      detail::raise(context, ": kernel_h and kernel_w must be given together");
    if (!m.has("kernel_h") && m.count("kernel_size") == 0)
      detail::raise(context, ": kernel_size (or kernel_h and kernel_w) is required");
    spatial("kernel_size", "kernel_h", "kernel_w", 0, 0, p.kernel_h, p.kernel_w);
    spatial("pad", "pad_h", "pad_w", 0, 0, p.pad_h, p.pad_w);
    spatial("stride", "stride_h", "stride_w", 1, 0, p.stride_h, p.stride_w);
    spatial("dilation", "", "", 1, 1, p.dilation_h, p.dilation_w);
    return p;
  }
};

namespace detail {

/// Host kernels of the convolution that are not BLAS calls: im2col/col2im over a run of samples
/// laid side by side in one column buffer, and the copies between that layout and NCHW.
template <class D, class T>
struct ConvKernel {
  POSEIDON_NO_KERNEL(D, "Convolution");
};

template <class T>
struct ConvKernel<CPU, T> {
  using Ctx = DeviceContext<CPU>;

  // Sample s of `samples` occupies columns [s*P, (s+1)*P) of a (C*KH*KW) x (samples*P) buffer, so
  // one GEMM covers them all. Jobs are (sample, channel, kernel row): independent, and enough of
  // them to keep every thread busy even for AlexNet's 3-channel conv1.
  static void im2col(Ctx&, const math::ConvGeometry& g, int samples, const T* data, T* col, bool parallel = true) {
    const int oh = g.out_h(), ow = g.out_w();
    const std::size_t plane = static_cast<std::size_t>(oh) * static_cast<std::size_t>(ow);
    const std::size_t ld = plane * static_cast<std::size_t>(samples);
    const std::size_t img = static_cast<std::size_t>(g.height) * static_cast<std::size_t>(g.width);
    const int jobs = samples * g.channels * g.kernel_h;
    const bool par = parallel && g.col_rows() * ld > (1u << 15);
    const bool unit_stride = g.stride_h == 1 && g.stride_w == 1;
#pragma omp parallel for schedule(static) if (par)
    for (int job = 0; job < jobs; ++job) {
      const int kh = job % g.kernel_h;
      const int c = (job / g.kernel_h) % g.channels;
      const int s = job / (g.kernel_h * g.channels);
      const T* src_plane = data + (static_cast<std::size_t>(s) * static_cast<std::size_t>(g.channels) +
                                   static_cast<std::size_t>(c)) * img;
      int ylo, yhi;
      math::detail::valid_range(oh, g.height, g.pad_h, g.stride_h, kh * g.dilation_h, ylo, yhi);
      if (g.stride_w > 1) {
        const std::size_t r0 = (static_cast<std::size_t>(c) * static_cast<std::size_t>(g.kernel_h) +
                                static_cast<std::size_t>(kh)) * static_cast<std::size_t>(g.kernel_w);
        im2col_strided_rows(g, ylo, yhi, src_plane, col + r0 * ld + static_cast<std::size_t>(s) * plane, ld,
                            kh * g.dilation_h - g.pad_h);
        continue;
      }
      for (int kw = 0; kw < g.kernel_w; ++kw) {
        int xlo, xhi;
        math::detail::valid_range(ow, g.width, g.pad_w, g.stride_w, kw * g.dilation_w, xlo, xhi);
        const std::size_t r = (static_cast<std::size_t>(c) * static_cast<std::size_t>(g.kernel_h) +
                               static_cast<std::size_t>(kh)) * static_cast<std::size_t>(g.kernel_w) +
                              static_cast<std::size_t>(kw);
        T* out = col + r * ld + static_cast<std::size_t>(s) * plane;
        const int ix0 = kw * g.dilation_w - g.pad_w;
        const auto w = static_cast<std::size_t>(ow);
        zero_padding_rows(out, ylo, yhi, oh, w);
        if (ylo >= yhi) continue;
        if (xlo >= xhi) {
          std::memset(out + static_cast<std::size_t>(ylo) * w, 0, static_cast<std::size_t>(yhi - ylo) * w * sizeof(T));
          continue;
        }
        const int iy0 = ylo * g.stride_h - g.pad_h + kh * g.dilation_h;
        if (unit_stride && ow == g.width) {
          // "Same" convolution at stride 1: column row y is input row y + const shifted by ix0,
          // and both advance by the width, so the whole band is one copy (the entries it takes
          // from neighbouring rows are the clipped ones, zeroed after). Per-row copies of 16-32
          // floats cost more in call overhead than in bytes (CIFAR-10 conv2 im2col: 1.5x faster).
          const std::size_t first = static_cast<std::size_t>(ylo) * w + static_cast<std::size_t>(xlo);
          const std::size_t last = static_cast<std::size_t>(yhi - 1) * w + static_cast<std::size_t>(xhi);
          std::memcpy(out + first,
                      src_plane + static_cast<std::size_t>(iy0) * w + static_cast<std::size_t>(xlo + ix0),
                      (last - first) * sizeof(T));
          for (int y = ylo; y < yhi; ++y) {
            T* row = out + static_cast<std::size_t>(y) * w;
            for (int x = 0; x < xlo; ++x) row[x] = T(0);
            for (int x = xhi; x < ow; ++x) row[x] = T(0);
          }
          continue;
        }
        for (int y = ylo; y < yhi; ++y) {
          T* row = out + static_cast<std::size_t>(y) * w;
          const int iy = iy0 + (y - ylo) * g.stride_h;
          const T* src = src_plane + static_cast<std::size_t>(iy) * static_cast<std::size_t>(g.width);
          for (int x = 0; x < xlo; ++x) row[x] = T(0);
          // An inline loop, not memcpy: rows are short (LeNet conv2: 8 floats), and a library
          // call per row cost more than the copy (LeNet conv2's im2col 1.4x slower).
          const T* s0 = src + ix0;
          for (int x = xlo; x < xhi; ++x) row[x] = s0[x];
          for (int x = xhi; x < ow; ++x) row[x] = T(0);
        }
      }
    }
  }

  /// The adjoint of im2col: OVERWRITES the `samples` images with the summed column entries.
  static void col2im(Ctx&, const math::ConvGeometry& g, int samples, const T* col, T* data, bool parallel = true) {
    const int oh = g.out_h(), ow = g.out_w();
    const std::size_t plane = static_cast<std::size_t>(oh) * static_cast<std::size_t>(ow);
    const std::size_t ld = plane * static_cast<std::size_t>(samples);
    const std::size_t img = static_cast<std::size_t>(g.height) * static_cast<std::size_t>(g.width);
    const bool par = parallel && g.col_rows() * ld > (1u << 15);
    // Jobs are (sample, channel, band of input rows): each writes only its own rows, so there are
    // no write conflicts; bands split planes when there are fewer planes than threads (conv1).
    const int planes = samples * g.channels;
    const int threads = par ? omp_get_max_threads() : 1;
    const int bands = std::clamp((2 * threads + planes - 1) / planes, 1, g.height);
    const int jobs = planes * bands;
#pragma omp parallel for schedule(static) if (par)
    for (int job = 0; job < jobs; ++job) {
      const int band = job % bands;
      const int c = (job / bands) % g.channels;
      const int s = job / (bands * g.channels);
      const int r0 = static_cast<int>(static_cast<long long>(g.height) * band / bands);
      const int r1 = static_cast<int>(static_cast<long long>(g.height) * (band + 1) / bands);
      T* dst_plane = data + (static_cast<std::size_t>(s) * static_cast<std::size_t>(g.channels) +
                             static_cast<std::size_t>(c)) * img;
      std::optional<Phases> phases;  // for stride_w > 1, made on first use
      std::memset(dst_plane + static_cast<std::size_t>(r0) * static_cast<std::size_t>(g.width), 0,
                  static_cast<std::size_t>(r1 - r0) * static_cast<std::size_t>(g.width) * sizeof(T));
      for (int kh = 0; kh < g.kernel_h; ++kh) {
        int ylo, yhi;
        math::detail::valid_range(oh, g.height, g.pad_h, g.stride_h, kh * g.dilation_h, ylo, yhi);
        // Output rows whose input row iy = y * stride + base falls in this band [r0, r1).
        const int base = kh * g.dilation_h - g.pad_h;
        ylo = std::max(ylo, ceil_div(r0 - base, g.stride_h));
        yhi = std::min(yhi, ceil_div(r1 - base, g.stride_h));
        if (ylo >= yhi) continue;
        if (g.stride_w > 1) {
          const std::size_t rk = (static_cast<std::size_t>(c) * static_cast<std::size_t>(g.kernel_h) +
                                  static_cast<std::size_t>(kh)) * static_cast<std::size_t>(g.kernel_w);
          col2im_strided_rows(g, ylo, yhi, col + rk * ld + static_cast<std::size_t>(s) * plane, ld, dst_plane, base,
                              phases);
          continue;
        }
        for (int kw = 0; kw < g.kernel_w; ++kw) {
          int xlo, xhi;
          math::detail::valid_range(ow, g.width, g.pad_w, g.stride_w, kw * g.dilation_w, xlo, xhi);
          const std::size_t r = (static_cast<std::size_t>(c) * static_cast<std::size_t>(g.kernel_h) +
                                 static_cast<std::size_t>(kh)) * static_cast<std::size_t>(g.kernel_w) +
                                static_cast<std::size_t>(kw);
          const T* in = col + r * ld + static_cast<std::size_t>(s) * plane;
          const int ix0 = kw * g.dilation_w - g.pad_w;
          for (int y = ylo; y < yhi; ++y) {
            const int iy = y * g.stride_h + base;
            T* dst = dst_plane + static_cast<std::size_t>(iy) * static_cast<std::size_t>(g.width) + ix0;
            const T* row = in + static_cast<std::size_t>(y) * static_cast<std::size_t>(ow);
            for (int x = xlo; x < xhi; ++x) dst[x] += row[x];
          }
        }
      }
    }
  }

  /// Row r of the rows x cols matrix `out` = values[r]: the bias, so that the GEMM after it adds
  /// with beta = 1 instead of a zero pass plus a rank-1 bias GEMM over the output.
  static void fill_rows(Ctx&, int rows, std::size_t cols, const T* values, T* out) {
    for (int r = 0; r < rows; ++r) std::fill_n(out + static_cast<std::size_t>(r) * cols, cols, values[r]);
  }

  /// A (rows x samples*plane) batch matrix -> `samples` NCHW blocks of rows x plane.
  static void to_nchw(Ctx&, int samples, int rows, std::size_t plane, const T* wide, T* nchw, bool parallel = true) {
    relayout(samples, rows, plane, parallel, [&](std::size_t job, std::size_t off) {
      std::memcpy(nchw + job * plane, wide + off, plane * sizeof(T));
    });
  }
  /// The inverse of to_nchw.
  static void from_nchw(Ctx&, int samples, int rows, std::size_t plane, const T* nchw, T* wide, bool parallel = true) {
    relayout(samples, rows, plane, parallel, [&](std::size_t job, std::size_t off) {
      std::memcpy(wide + off, nchw + job * plane, plane * sizeof(T));
    });
  }

 private:
  // Rounds towards +infinity for any sign of a (b > 0).
  static int ceil_div(int a, int b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

  // Zeroes the rows of an (oh x w) column row whose window row lies in the padding: [0, ylo) above
  // the image, [yhi, oh) below. Unpadded layers have neither, and a library call per empty block
  // is not free (LeNet conv2, 500 column rows per sample: forward 3.28 -> 3.14 ms per step).
  static void zero_padding_rows(T* out, int ylo, int yhi, int oh, std::size_t w) {
    if (ylo > 0) std::memset(out, 0, static_cast<std::size_t>(ylo) * w * sizeof(T));
    if (yhi < oh) std::memset(out + static_cast<std::size_t>(yhi) * w, 0, static_cast<std::size_t>(oh - yhi) * w * sizeof(T));
  }

  // Strided rows (AlexNet conv1: stride 4, 11 taps). Tap kw of output column x reads input
  // position x * sw + kw * dw - pad; read directly, that is one strided load per column entry, for
  // every tap. Instead an input row is split once into its sw phases (phase p holds the padded
  // positions p, p + sw, p + 2 sw, ...), after which tap kw's row is the contiguous run of phase
  // (kw * dw) % sw starting at (kw * dw) / sw. Entries outside the image stay zero: the padding.
  struct Phases {
    int stride = 1, len = 0;
    std::vector<int> lo, hi;  // phase p holds image pixels at entries [lo[p], hi[p])
    std::vector<T> buf;       // stride x len

    explicit Phases(const math::ConvGeometry& g)
        : stride(g.stride_w),
          len(g.out_w() + (g.kernel_w - 1) * g.dilation_w / g.stride_w),
          lo(static_cast<std::size_t>(stride)),
          hi(static_cast<std::size_t>(stride)),
          buf(static_cast<std::size_t>(stride) * static_cast<std::size_t>(len), T(0)) {
      for (int p = 0; p < stride; ++p) {
        const auto i = static_cast<std::size_t>(p);
        lo[i] = std::min(len, std::max(0, ceil_div(g.pad_w - p, stride)));
        hi[i] = std::max(lo[i], std::min(len, ceil_div(g.width + g.pad_w - p, stride)));
      }
    }
    [[nodiscard]] T* phase(int p) { return buf.data() + static_cast<std::size_t>(p) * static_cast<std::size_t>(len); }
    // Where tap kw's row starts.
    [[nodiscard]] T* tap(const math::ConvGeometry& g, int kw) {
      const int off = kw * g.dilation_w;
      return phase(off % stride) + off / stride;
    }
  };

  // im2col for one (sample, channel, kernel row) when stride_w > 1: `out` is the column row of
  // tap (kh, 0) for this sample, rows of the following taps ld apart; input row iy = y * stride_h + base.
  static void im2col_strided_rows(const math::ConvGeometry& g, int ylo, int yhi, const T* src_plane, T* out,
                                  std::size_t ld, int base) {
    const int oh = g.out_h(), ow = g.out_w();
    const auto w = static_cast<std::size_t>(ow);
    for (int kw = 0; kw < g.kernel_w; ++kw) zero_padding_rows(out + static_cast<std::size_t>(kw) * ld, ylo, yhi, oh, w);
    if (ylo >= yhi) return;
    Phases ph(g);
    const int sw = g.stride_w;
    for (int y = ylo; y < yhi; ++y) {
      const T* src = src_plane + static_cast<std::size_t>(y * g.stride_h + base) * static_cast<std::size_t>(g.width);
      for (int p = 0; p < sw; ++p) {
        T* q = ph.phase(p);
        const int from = p - g.pad_w;
        for (int j = ph.lo[static_cast<std::size_t>(p)]; j < ph.hi[static_cast<std::size_t>(p)]; ++j) q[j] = src[j * sw + from];
      }
      for (int kw = 0; kw < g.kernel_w; ++kw) {
        const T* q = ph.tap(g, kw);
        T* row = out + static_cast<std::size_t>(kw) * ld + static_cast<std::size_t>(y) * w;
        for (int x = 0; x < ow; ++x) row[x] = q[x];
      }
    }
  }

  // The adjoint of im2col_strided_rows for output rows [ylo, yhi): the taps of a row are summed
  // into the phases, which are then added back to the input row.
  static void col2im_strided_rows(const math::ConvGeometry& g, int ylo, int yhi, const T* in, std::size_t ld,
                                  T* dst_plane, int base, std::optional<Phases>& ph) {
    if (!ph) ph.emplace(g);
    const int ow = g.out_w(), sw = g.stride_w;
    const auto w = static_cast<std::size_t>(ow);
    for (int y = ylo; y < yhi; ++y) {
      std::fill(ph->buf.begin(), ph->buf.end(), T(0));
      for (int kw = 0; kw < g.kernel_w; ++kw) {
        T* q = ph->tap(g, kw);
        const T* row = in + static_cast<std::size_t>(kw) * ld + static_cast<std::size_t>(y) * w;
        for (int x = 0; x < ow; ++x) q[x] += row[x];
      }
      T* dst = dst_plane + static_cast<std::size_t>(y * g.stride_h + base) * static_cast<std::size_t>(g.width);
      for (int p = 0; p < sw; ++p) {
        const T* q = ph->phase(p);
        const int to = p - g.pad_w;
        for (int j = ph->lo[static_cast<std::size_t>(p)]; j < ph->hi[static_cast<std::size_t>(p)]; ++j) dst[j * sw + to] += q[j];
      }
    }
  }

  template <class F>
  static void relayout(int samples, int rows, std::size_t plane, bool parallel, F copy) {
    const int jobs = samples * rows;
    const std::size_t ld = plane * static_cast<std::size_t>(samples);
#pragma omp parallel for schedule(static) if (parallel && static_cast<std::size_t>(jobs) * plane > math::detail::omp_min_elements)
    for (int job = 0; job < jobs; ++job) {
      const int s = job / rows, r = job % rows;
      copy(static_cast<std::size_t>(job), static_cast<std::size_t>(r) * ld + static_cast<std::size_t>(s) * plane);
    }
  }
};

}  // namespace detail

template <class D, class T = float>
class ConvolutionLayer final : public Layer<D, T> {
  using Base = Layer<D, T>;
  using Kernel = detail::ConvKernel<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  // When samples share one GEMM (measured with OpenBLAS 0.3.21 on AVX2 and AVX-512 machines):
  // planes above 16x16 (AlexNet conv1/conv2, LeNet conv1) gain nothing and are done one sample
  // at a time; smaller planes are batched until the GEMM spans columns_per_thread columns per
  // thread, with at most column_bytes_per_thread of column buffer per thread: past that the
  // buffer leaves the cache. AlexNet conv3-5 at batch 32, % of sgemm peak with 1, 2, 3 samples per
  // GEMM: 1 thread 90-93 / 83-87 / 75-88; 2 threads (a thread per share of samples) 91 / 84-86 /
  // 79-80, and conv5 69-78% at the 3 that an 8 MB budget allowed, against 83% at 1.
  static constexpr std::size_t small_plane = 256;
  static constexpr std::size_t columns_per_thread = 512;
  static constexpr std::size_t column_bytes_per_thread = std::size_t(4) << 20;
  // Weight matrices (per group) up to this many elements get their gradient transposed (transposed_dw).
  static constexpr std::size_t transposed_dw_max_weights = std::size_t(1) << 16;

  explicit ConvolutionLayer(const LayerParameter& p)
      : Base(p),
        cp_(ConvolutionParam::from_message(p.sub("convolution_param"), p.describe() + " convolution_param")) {}
  ConvolutionLayer(const LayerParameter& p, ConvolutionParam cp) : Base(p), cp_(std::move(cp)) {}

  [[nodiscard]] std::string_view type() const override { return "Convolution"; }
  [[nodiscard]] int min_num_bottom() const override { return 1; }
  [[nodiscard]] int min_num_top() const override { return 1; }
  [[nodiscard]] bool equal_num_bottom_top() const override { return true; }
  [[nodiscard]] const ConvolutionParam& convolution_param() const { return cp_; }

  /// Samples per im2col + GEMM batch: 0 chooses from the shapes (the default); 1 is Caffe's
  /// one-sample-at-a-time order. Results agree up to float rounding either way.
  void set_batch_samples(int n) {
    this->check(n >= 0, "batch samples must be >= 0, got ", n);
    forced_batch_ = n;
  }
  /// Samples per im2col + GEMM batch in the last pass (after setup: for the default thread count).
  [[nodiscard]] int batch_samples() const { return batch_; }

  /// How a pass spreads over threads. gemm: one batch of samples after another, each GEMM
  /// threaded by BLAS (the only scheme off the CPU). samples: each thread takes a contiguous
  /// share of the samples with its own column buffer and single-threaded BLAS, and its own
  /// parameter-gradient sums, added in thread order (results depend on the thread count, not on
  /// the run). automatic: samples wherever the shares come out (nearly) even.
  enum class Parallel { automatic, gemm, samples };
  void set_parallel(Parallel p) { forced_scheme_ = p; }
  /// The scheme of the last pass (after setup: for the default thread count).
  [[nodiscard]] Parallel parallel() const { return scheme_; }

  /// How the CPU computes the output and the gradients (the bias gradient is always a GEMV).
  /// gemm: im2col + GEMM. winograd: Winograd's minimal filtering (math/winograd.hpp) for the
  /// output and both gradients wherever it applies (stride 1, no dilation, square 3x3 or 5x5
  /// kernel, pad < kernel), GEMM elsewhere. automatic: Winograd where it applies and was measured
  /// faster: float, at least winograd_min_channels input and output channels per group, and for
  /// the input gradient also channel counts per group that are multiples of 16 (Winograd pads
  /// them to 16; LeNet's conv2, 20 -> 50, ran its forward 1.45x and its weight gradient ~1.2x
  /// faster that way, but its input gradient slower than by GEMM (backward 8.1 ms against 6.2
  /// with only the input gradient on Winograd, 5.2 with only the weight gradient), while
  /// CIFAR-10 quick's and AlexNet's layers, all multiples of 16, gained in every pass).
  /// direct: the output and the weight and bias gradients by direct loops over a padded copy of
  /// each image (math/direct_conv.hpp; float, one group, stride 1, no dilation), the input
  /// gradient by GEMM; automatic takes it where the CPU has AVX-512, for at most
  /// direct_max_channels input channels (column matrices too short for BLAS to be fast) and
  /// shapes that fill its registers: output widths and channel counts that are multiples of 16
  /// and 8. CIFAR-10 quick's conv1 (3 -> 32, 5x5, 32x32) ran its
  /// forward 1.52x and its weight and bias gradients ~1.3x faster than by GEMM; LeNet's conv1
  /// (1 -> 20, 24 columns: a quarter of the second register and of the last block idle) came
  /// out even.
  /// The default is automatic, or the value of POSEIDON_CONV_ALGO (gemm, winograd, direct or
  /// auto) when that is set.
  /// Winograd's and the direct loops' results differ from GEMM's by float rounding (about 1e-6
  /// of the terms' magnitude).
  enum class Algorithm { automatic, gemm, winograd, direct };
  void set_algorithm(Algorithm a) { forced_algorithm_ = a; }
  /// The algorithm of the last pass (after setup: what the next pass will take).
  [[nodiscard]] Algorithm algorithm() const { return algorithm_; }
  /// The algorithm of the last backward pass's input gradient (GEMM after direct).
  [[nodiscard]] Algorithm input_gradient_algorithm() const {
    if (algorithm_ == Algorithm::winograd) return winograd_input_gradient() ? Algorithm::winograd : Algorithm::gemm;
    return algorithm_ == Algorithm::direct ? Algorithm::gemm : algorithm_;
  }
  /// The algorithm of the last backward pass's weight gradient (the forward pass's).
  [[nodiscard]] Algorithm weight_gradient_algorithm() const { return algorithm_; }
  /// Input and output channels per group from which automatic takes Winograd.
  static constexpr int winograd_min_channels = 16;
  /// Input channels up to which automatic takes the direct loops.
  static constexpr int direct_max_channels = 4;

  /// POSEIDON_CONV_ALGO's algorithm; automatic when unset or empty.
  static Algorithm algorithm_from_env() {
    const char* v = std::getenv("POSEIDON_CONV_ALGO");
    if (!v || !*v) return Algorithm::automatic;
    const std::string_view s(v);
    if (s == "gemm") return Algorithm::gemm;
    if (s == "winograd") return Algorithm::winograd;
    if (s == "direct") return Algorithm::direct;
    POSEIDON_CHECK(s == "auto", "POSEIDON_CONV_ALGO='", s, "' must be gemm, winograd, direct or auto");
    return Algorithm::automatic;
  }

  void reshape(const Vec& bottom, const Vec& top) override {
    const auto& b0 = *bottom[0];
    this->check_axes(b0, 0, 4, 4);
    for (std::size_t i = 1; i < bottom.size(); ++i)
      this->check(bottom[i]->shape() == b0.shape(), "bottom ", i, " ('", this->name_of_bottom(i), "') has shape ",
                  bottom[i]->shape().str(), " but bottom 0 has ", b0.shape().str(), "; all bottoms must match");
    this->check(b0.shape(1) == channels_, "bottom '", this->name_of_bottom(0), "' of shape ", b0.shape().str(),
                " has ", b0.shape(1), " channels; the weights expect ", channels_);
    num_ = b0.shape(0);
    geom_.channels = channels_;
    geom_.height = b0.shape(2);
    geom_.width = b0.shape(3);
    const int ext_h = cp_.dilation_h * (cp_.kernel_h - 1) + 1;
    const int ext_w = cp_.dilation_w * (cp_.kernel_w - 1) + 1;
    this->check(ext_h <= geom_.height + 2 * cp_.pad_h && ext_w <= geom_.width + 2 * cp_.pad_w, "kernel ",
                cp_.kernel_h, "x", cp_.kernel_w, " (dilated extent ", ext_h, "x", ext_w,
                ") is larger than the padded input ", geom_.height + 2 * cp_.pad_h, "x", geom_.width + 2 * cp_.pad_w,
                " of bottom '", this->name_of_bottom(0), "' ", b0.shape().str());
    out_h_ = geom_.out_h();
    out_w_ = geom_.out_w();
    plane_ = static_cast<std::size_t>(out_h_) * static_cast<std::size_t>(out_w_);
    for (auto* t : top) t->reshape(Shape{num_, cp_.num_output, out_h_, out_w_});

    // A 1x1 kernel without padding or stride reads the input itself as its column matrix.
    direct_ = cp_.kernel_h == 1 && cp_.kernel_w == 1 && cp_.pad_h == 0 && cp_.pad_w == 0 && cp_.stride_h == 1 &&
              cp_.stride_w == 1;
    algorithm_ = choose_algorithm();
    prepare_batch(omp_get_max_threads());
  }

 protected:
  void layer_setup(Context& ctx, const Vec& bottom, const Vec&) override {
    this->check(cp_.num_output > 0, "num_output must be positive, got ", cp_.num_output);
    this->check(cp_.kernel_h > 0 && cp_.kernel_w > 0, "kernel_size must be positive, got ", cp_.kernel_h, "x",
                cp_.kernel_w);
    this->check(cp_.stride_h > 0 && cp_.stride_w > 0, "stride must be positive, got ", cp_.stride_h, "x",
                cp_.stride_w);
    this->check(cp_.pad_h >= 0 && cp_.pad_w >= 0, "pad must be non-negative, got ", cp_.pad_h, "x", cp_.pad_w);
    this->check(cp_.dilation_h > 0 && cp_.dilation_w > 0, "dilation must be positive, got ", cp_.dilation_h, "x",
                cp_.dilation_w);
    this->check(!cp_.force_nd_im2col, "force_nd_im2col is not supported: only 2-d convolution is implemented");
    this->check_axes(*bottom[0], 0, 4, 4);
    const int axis = bottom[0]->canonical_axis(cp_.axis);
    this->check(axis == 1, "axis ", cp_.axis, " is not supported: the channel axis must be 1 (N, C, H, W)");
    this->check(cp_.group > 0, "group must be positive, got ", cp_.group);
    channels_ = bottom[0]->shape(1);
    this->check(channels_ % cp_.group == 0, "group ", cp_.group, " does not divide the ", channels_,
                " input channels of bottom '", this->name_of_bottom(0), "'");
    this->check(cp_.num_output % cp_.group == 0, "group ", cp_.group, " does not divide num_output ",
                cp_.num_output);
    const Shape wshape{cp_.num_output, channels_ / cp_.group, cp_.kernel_h, cp_.kernel_w};
    if (this->blobs_.empty()) {
      auto w = std::make_shared<Tensor<D, T>>(wshape);
      fill(cp_.weight_filler, *w, ctx.rng());
      this->blobs_.push_back(w);
      if (cp_.bias_term) {
        auto b = std::make_shared<Tensor<D, T>>(Shape{cp_.num_output});
        fill(cp_.bias_filler, *b, ctx.rng());
        this->blobs_.push_back(b);
      }
    } else {
      this->check(this->blobs_.size() == (cp_.bias_term ? 2u : 1u), "has ", this->blobs_.size(),
                  " preset parameter blobs; expected ", cp_.bias_term ? 2 : 1);
      this->check(this->blobs_[0]->shape() == wshape, "preset weight of shape ", this->blobs_[0]->shape().str(),
                  " does not match ", wshape.str());
      if (cp_.bias_term)
        this->check(this->blobs_[1]->count() == static_cast<std::size_t>(cp_.num_output), "preset bias of shape ",
                    this->blobs_[1]->shape().str(), " does not match (", cp_.num_output, ")");
    }
    geom_.kernel_h = cp_.kernel_h;
    geom_.kernel_w = cp_.kernel_w;
    geom_.pad_h = cp_.pad_h;
    geom_.pad_w = cp_.pad_w;
    geom_.stride_h = cp_.stride_h;
    geom_.stride_w = cp_.stride_w;
    geom_.dilation_h = cp_.dilation_h;
    geom_.dilation_w = cp_.dilation_w;
  }

  void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) override {
    algorithm_ = choose_algorithm();
    prepare_batch(ctx.threads());
    for (std::size_t i = 0; i < bottom.size(); ++i) {
      const T* x = bottom[i]->data();
      T* y = top[i]->data();
      if constexpr (std::is_same_v<D, CPU> && std::is_same_v<T, float>) {
        if (algorithm_ == Algorithm::direct) {
          dconv_.forward(ctx, direct_shape(), this->blobs_[0]->data(),
                         cp_.bias_term ? this->blobs_[1]->data() : nullptr, x, num_, y);
          continue;
        }
      }
      if constexpr (std::is_same_v<D, CPU>) {
        if (algorithm_ == Algorithm::winograd) {
          wino_.forward(ctx, winograd_shape(), this->blobs_[0]->data(), cp_.bias_term ? this->blobs_[1]->data() : nullptr,
                        x, num_, y);
          continue;
        }
        if (scheme_ == Parallel::samples) {
#pragma omp parallel num_threads(ctx.threads())
          {
            const auto [lo, hi] = share(omp_get_thread_num(), omp_get_num_threads());
            Scratch& sc = scratch_[static_cast<std::size_t>(omp_get_thread_num())];
            for (int n0 = lo; n0 < hi; n0 += batch_)
              forward_run(ctx, x, y, n0, std::min(batch_, hi - n0), sc.col.data(), sc.wide.data(), false);
          }
          continue;
        }
      }
      for (int n0 = 0; n0 < num_; n0 += batch_)
        forward_run(ctx, x, y, n0, std::min(batch_, num_ - n0), col_.data(), wide_.data(), true);
    }
  }

  void backward_impl(Context& ctx, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    algorithm_ = choose_algorithm();
    prepare_batch(ctx.threads());
    const bool dw = this->param_propagate_down(0);
    const bool db = cp_.bias_term && this->param_propagate_down(1);
    const std::size_t wcount = this->blobs_[0]->count();
    const std::size_t bcount = static_cast<std::size_t>(cp_.num_output);
    for (std::size_t i = 0; i < bottom.size(); ++i) {
      bool dx = propagate_down[i], dwi = dw, dbi = db;
      if constexpr (std::is_same_v<D, CPU> && std::is_same_v<T, float>) {
        if (algorithm_ == Algorithm::direct && dwi) {
          // The bias gradient in the same sweep (a tap over a plane of ones).
          dconv_.backward_filter(ctx, direct_shape(), bottom[i]->data(), top[i]->diff(), num_,
                                 this->blobs_[0]->diff(), dbi ? this->blobs_[1]->diff() : nullptr);
          dwi = dbi = false;
        }
      }
      if constexpr (std::is_same_v<D, CPU>) {
        // Winograd's gradients here; the rest (the bias's always) by the GEMM path below.
        if (algorithm_ == Algorithm::winograd && winograd_input_gradient() && dx) {
          wino_.backward_data(ctx, winograd_shape(), this->blobs_[0]->data(), top[i]->diff(), num_, bottom[i]->diff());
          dx = false;
        }
        if (algorithm_ == Algorithm::winograd && dwi) {
          wino_.backward_filter(ctx, winograd_shape(), bottom[i]->data(), top[i]->diff(), num_, this->blobs_[0]->diff());
          dwi = false;
        }
      }
      if (!dwi && !dbi && !dx) continue;
      Grads gr{bottom[i]->data(), top[i]->diff(), dx ? bottom[i]->diff() : nullptr, dwi, dbi};
      if constexpr (std::is_same_v<D, CPU>) {
        if (scheme_ == Parallel::samples) {
          const int threads = ctx.threads();
#pragma omp parallel num_threads(threads)
          {
            const int t = omp_get_thread_num(), nt = omp_get_num_threads();
            const auto [lo, hi] = share(t, nt);
            Scratch& sc = scratch_[static_cast<std::size_t>(t)];
            // Each thread sums its own samples' parameter gradients (overwriting on its first
            // run); the shares are then added in thread order, so a fixed thread count gives the
            // same bits on every run.
            for (int n0 = lo; n0 < hi; n0 += batch_)
              backward_run(ctx, gr, n0, std::min(batch_, hi - n0), sc.col.data(), sc.wide.data(), sc.dw.data(),
                           sc.db.data(), sc.dwt.data(), n0 == lo ? T(0) : T(1), false);
#pragma omp barrier
            auto reduce = [&](std::size_t count, T* acc, std::vector<T> Scratch::*part) {
              const std::size_t e0 = count * static_cast<std::size_t>(t) / static_cast<std::size_t>(nt);
              const std::size_t e1 = count * static_cast<std::size_t>(t + 1) / static_cast<std::size_t>(nt);
              for (std::size_t e = e0; e < e1; ++e) {
                T sum = T(0);
                for (int u = 0; u < nt; ++u)
                  if (const auto [ulo, uhi] = share(u, nt); ulo < uhi) sum += (scratch_[static_cast<std::size_t>(u)].*part)[e];
                acc[e] += sum;
              }
            };
            if (dwi) reduce(wcount, this->blobs_[0]->diff(), &Scratch::dw);
            if (dbi) reduce(bcount, this->blobs_[1]->diff(), &Scratch::db);
          }
          continue;
        }
      }
      for (int n0 = 0; n0 < num_; n0 += batch_)
        backward_run(ctx, gr, n0, std::min(batch_, num_ - n0), col_.data(), wide_.data(),
                     dwi ? this->blobs_[0]->diff() : nullptr, dbi ? this->blobs_[1]->diff() : nullptr, dwt_.data(), T(1),
                     true);
    }
  }

 private:
  struct Grads {
    const T* x;      // bottom data
    const T* dy;     // top diff
    T* dx;           // bottom diff, or null when not propagated
    bool dw, db;
  };
  // A thread's buffers on the samples scheme.
  struct Scratch {
    std::vector<T> col, wide, dw, db, dwt;
  };

  // Samples [lo, hi) of thread t of nt: contiguous shares differing by at most one.
  [[nodiscard]] std::pair<int, int> share(int t, int nt) const {
    const auto n = static_cast<long long>(num_);
    return {static_cast<int>(n * t / nt), static_cast<int>(n * (t + 1) / nt)};
  }

  // Samples [n0, n0 + s) of x into y: y = W * im2col(x) + bias, through `wide` when s > 1.
  // `parallel` false: the caller already runs one of several threads, so every step (BLAS
  // included: OpenBLAS's OpenMP build runs serially inside a parallel region) stays on it.
  void forward_run(Context& ctx, const T* x, T* y, int n0, int s, T* col, T* wide, bool parallel) {
    const int G = cp_.group;
    const int m = cp_.num_output / G;                        // output channels per group
    const int k = static_cast<int>(geom_.col_rows()) / G;    // column rows per group
    const std::size_t mg = static_cast<std::size_t>(m), kg = static_cast<std::size_t>(k);
    const int ncols = static_cast<int>(plane_) * s;
    const std::size_t nc = static_cast<std::size_t>(ncols);
    const T* xs = x + static_cast<std::size_t>(n0) * in_sample();
    T* ys = y + static_cast<std::size_t>(n0) * out_sample();
    const T* c = xs;
    if (!(direct_ && s == 1)) {
      Kernel::im2col(ctx, geom_, s, xs, col, parallel);
      c = col;
    }
    T* out = s == 1 ? ys : wide;
    T beta = T(0);
    if (cp_.bias_term) {
      Kernel::fill_rows(ctx, cp_.num_output, nc, this->blobs_[1]->data(), out);
      beta = T(1);
    }
    const T* w = this->blobs_[0]->data();
    for (int g = 0; g < G; ++g) {
      const auto gi = static_cast<std::size_t>(g);
      math::gemm(ctx, math::Trans::no, math::Trans::no, m, ncols, k, T(1), w + gi * mg * kg, c + gi * kg * nc, beta,
                 out + gi * mg * nc);
    }
    if (s > 1) Kernel::to_nchw(ctx, s, cp_.num_output, plane_, wide, ys, parallel);
  }

  // The gradients of samples [n0, n0 + s): dw = pbeta * dw + dY * col^T, db likewise, and the
  // samples' input gradient (overwritten). `dwt`: scratch for one group's transposed weight
  // gradient where transposed_dw().
  void backward_run(Context& ctx, const Grads& gr, int n0, int s, T* col, T* wide, T* dw, T* db, T* dwt, T pbeta,
                    bool parallel) {
    const int G = cp_.group;
    const int m = cp_.num_output / G;
    const int k = static_cast<int>(geom_.col_rows()) / G;
    const std::size_t mg = static_cast<std::size_t>(m), kg = static_cast<std::size_t>(k);
    const int ncols = static_cast<int>(plane_) * s;
    const std::size_t nc = static_cast<std::size_t>(ncols);
    const T* dy = gr.dy + static_cast<std::size_t>(n0) * out_sample();
    if (s > 1) {
      Kernel::from_nchw(ctx, s, cp_.num_output, plane_, dy, wide, parallel);
      dy = wide;
    }
    if (gr.db) math::gemv(ctx, math::Trans::no, cp_.num_output, ncols, T(1), dy, ones_.data(), pbeta, db);
    if (gr.dw) {
      const T* xs = gr.x + static_cast<std::size_t>(n0) * in_sample();
      const T* c = xs;
      if (!(direct_ && s == 1)) {
        Kernel::im2col(ctx, geom_, s, xs, col, parallel);
        c = col;
      }
      for (int g = 0; g < G; ++g) {
        const auto gi = static_cast<std::size_t>(g);
        if constexpr (std::is_same_v<D, CPU>) {
          if (transposed_dw()) {
            // dw^T = col * dY^T, then added back transposed (see transposed_dw).
            math::gemm(ctx, math::Trans::no, math::Trans::yes, k, m, ncols, T(1), c + gi * kg * nc, dy + gi * mg * nc,
                       T(0), dwt);
            T* d = dw + gi * mg * kg;
            for (std::size_t i = 0; i < mg; ++i)
              for (std::size_t j = 0; j < kg; ++j)
                d[i * kg + j] = (pbeta == T(0) ? T(0) : d[i * kg + j]) + dwt[j * mg + i];
            continue;
          }
        }
        math::gemm(ctx, math::Trans::no, math::Trans::yes, m, k, ncols, T(1), dy + gi * mg * nc, c + gi * kg * nc,
                   pbeta, dw + gi * mg * kg);
      }
    }
    if (gr.dx) {
      T* xd = gr.dx + static_cast<std::size_t>(n0) * in_sample();
      // The direct path writes the input gradient in place of the column gradient.
      T* dcol = (direct_ && s == 1) ? xd : col;
      const T* w = this->blobs_[0]->data();
      for (int g = 0; g < G; ++g) {
        const auto gi = static_cast<std::size_t>(g);
        math::gemm(ctx, math::Trans::yes, math::Trans::no, k, ncols, m, T(1), w + gi * mg * kg, dy + gi * mg * nc,
                   T(0), dcol + gi * kg * nc);
      }
      if (!(direct_ && s == 1)) Kernel::col2im(ctx, geom_, s, dcol, xd, parallel);
    }
  }

  // The algorithm of this pass (see Algorithm): GEMM off the CPU and wherever the forced one
  // does not apply.
  [[nodiscard]] Algorithm choose_algorithm() const {
    if constexpr (!std::is_same_v<D, CPU>) return Algorithm::gemm;
    if (forced_algorithm_ == Algorithm::gemm || num_ == 0) return Algorithm::gemm;
    const bool direct_ok = std::is_same_v<T, float> && cp_.group == 1 &&
                           math::DirectConvolution::applies(cp_.stride_h, cp_.stride_w, cp_.dilation_h, cp_.dilation_w,
                                                            cp_.pad_h, cp_.pad_w, cp_.kernel_h, cp_.kernel_w) &&
                           math::DirectConvolution::fits(direct_shape());
    if (forced_algorithm_ == Algorithm::direct) return direct_ok ? Algorithm::direct : Algorithm::gemm;
    const bool wino_ok = math::WinogradConvolution<T>::applies(cp_.kernel_h, cp_.kernel_w, cp_.stride_h, cp_.stride_w,
                                                               cp_.dilation_h, cp_.dilation_w, cp_.pad_h, cp_.pad_w);
    if (forced_algorithm_ == Algorithm::winograd) return wino_ok ? Algorithm::winograd : Algorithm::gemm;
    if (wino_ok && std::is_same_v<T, float> && channels_ / cp_.group >= winograd_min_channels &&
        cp_.num_output / cp_.group >= winograd_min_channels)
      return Algorithm::winograd;
    if (direct_ok && channels_ <= direct_max_channels && out_w_ % 16 == 0 && cp_.num_output % 8 == 0 &&
        math::DirectConvolution::fast())
      return Algorithm::direct;
    return Algorithm::gemm;
  }
  // Whether the input gradient follows the forward pass onto Winograd (see Algorithm).
  [[nodiscard]] bool winograd_input_gradient() const {
    if (forced_algorithm_ == Algorithm::winograd) return true;
    return (channels_ / cp_.group) % 16 == 0 && (cp_.num_output / cp_.group) % 16 == 0;
  }
  [[nodiscard]] math::DirectConvShape direct_shape() const {
    math::DirectConvShape s;
    s.channels = channels_;
    s.outputs = cp_.num_output;
    s.height = geom_.height;
    s.width = geom_.width;
    s.kernel_h = cp_.kernel_h;
    s.kernel_w = cp_.kernel_w;
    s.pad_h = cp_.pad_h;
    s.pad_w = cp_.pad_w;
    return s;
  }
  [[nodiscard]] math::WinogradShape winograd_shape() const {
    math::WinogradShape s;
    s.channels = channels_;
    s.outputs = cp_.num_output;
    s.height = geom_.height;
    s.width = geom_.width;
    s.kernel = cp_.kernel_h;
    s.pad_h = cp_.pad_h;
    s.pad_w = cp_.pad_w;
    s.group = cp_.group;
    return s;
  }

  [[nodiscard]] std::size_t in_sample() const {
    return static_cast<std::size_t>(channels_) * static_cast<std::size_t>(geom_.height) *
           static_cast<std::size_t>(geom_.width);
  }
  [[nodiscard]] std::size_t out_sample() const { return static_cast<std::size_t>(cp_.num_output) * plane_; }

  [[nodiscard]] Parallel choose_scheme(int threads) const {
    if constexpr (!std::is_same_v<D, CPU>) return Parallel::gemm;
    if (forced_scheme_ != Parallel::automatic) return forced_scheme_;
    if (threads <= 1 || num_ < threads) return Parallel::gemm;
    // An uneven share idles threads: only where the remainder is small against the share.
    if (num_ % threads != 0 && num_ < 4 * threads) return Parallel::gemm;
    return Parallel::samples;
  }

  [[nodiscard]] int choose_batch(int threads) const {
    if (num_ <= 1 || plane_ == 0) return 1;
    if (forced_batch_ > 0) return std::min(forced_batch_, num_);
    if (plane_ > small_plane) return 1;
    // On the samples scheme each GEMM is one thread's.
    const auto t = static_cast<std::size_t>(scheme_ == Parallel::samples ? 1 : std::max(threads, 1));
    std::size_t s = (columns_per_thread * t + plane_ - 1) / plane_;
    const std::size_t per_sample = geom_.col_rows() * plane_ * sizeof(T);
    s = std::min(s, std::max<std::size_t>(1, column_bytes_per_thread * t / std::max<std::size_t>(per_sample, 1)));
    return static_cast<int>(std::min<std::size_t>(s, static_cast<std::size_t>(num_)));
  }

  // One group's weights: (num_output / group) x (column rows / group).
  [[nodiscard]] std::size_t group_weights() const {
    return static_cast<std::size_t>(cp_.num_output / cp_.group) * (geom_.col_rows() / static_cast<std::size_t>(cp_.group));
  }
  // Whether the weight gradient is computed transposed, dw^T = col * dY^T, and added back: for
  // few weights OpenBLAS 0.3.21 runs that product 10-25% faster than dY * col^T (CIFAR-10 quick's
  // conv1-conv3, LeNet's conv2), and the transposed add is cheap next to the product. Large weight
  // matrices (AlexNet) gain nothing and would pay for the transposition.
  [[nodiscard]] bool transposed_dw() const {
    return std::is_same_v<D, CPU> && group_weights() <= transposed_dw_max_weights;
  }

  // Sizes the buffers for the scheme and batch chosen for this thread count; they only grow, so
  // after the first pass this allocates nothing.
  void prepare_batch(int threads) {
    scheme_ = choose_scheme(threads);
    batch_ = choose_batch(threads);
    const std::size_t cols = plane_ * static_cast<std::size_t>(batch_);
    const bool need_col = !(direct_ && batch_ == 1);
    if (scheme_ == Parallel::samples) {
      if (scratch_.size() < static_cast<std::size_t>(threads)) scratch_.resize(static_cast<std::size_t>(threads));
      for (auto& sc : scratch_) {
        auto grow = [](std::vector<T>& v, std::size_t n) {
          if (v.size() < n) v.resize(n);
        };
        if (need_col) grow(sc.col, geom_.col_rows() * cols);
        if (batch_ > 1) grow(sc.wide, static_cast<std::size_t>(cp_.num_output) * cols);
        grow(sc.dw, this->blobs_.empty() ? 0 : this->blobs_[0]->count());
        grow(sc.db, static_cast<std::size_t>(cp_.num_output));
        if (transposed_dw()) grow(sc.dwt, group_weights());
      }
    } else {
      if (need_col) col_.reshape(Shape{static_cast<int>(geom_.col_rows()), static_cast<int>(cols)});
      if (batch_ > 1) wide_.reshape(Shape{cp_.num_output, static_cast<int>(cols)});
      if (transposed_dw() && dwt_.size() < group_weights()) dwt_.resize(group_weights());
    }
    if (cp_.bias_term && ones_.count() < cols) {
      ones_.reshape(Shape{static_cast<int>(cols)});
      std::vector<T> v(cols, T(1));
      ones_.copy_data_from_host(v);
    }
  }

  ConvolutionParam cp_;
  math::ConvGeometry geom_;
  int channels_ = 0, num_ = 0, out_h_ = 0, out_w_ = 0;
  std::size_t plane_ = 0;
  bool direct_ = false;
  int batch_ = 1, forced_batch_ = 0;
  Parallel scheme_ = Parallel::gemm, forced_scheme_ = Parallel::automatic;
  std::vector<Scratch> scratch_;  // per thread, on the samples scheme
  Tensor<D, T> col_;   // (C*KH*KW) x (batch * OH*OW)
  Tensor<D, T> wide_;  // num_output x (batch * OH*OW): a batch's output or output gradient
  Tensor<D, T> ones_;  // the bias multiplier
  std::vector<T> dwt_;  // one group's transposed weight gradient (transposed_dw, gemm scheme)
  Algorithm forced_algorithm_ = algorithm_from_env();
  Algorithm algorithm_ = Algorithm::gemm;  // this pass's (see choose_algorithm)
  math::WinogradConvolution<T> wino_;  // Winograd's transformed filters and scratch
  math::DirectConvolution dconv_;      // the direct loops' packed weights and scratch
};

POSEIDON_REGISTER_LAYER("Convolution", ConvolutionLayer)

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/layers/cuda/convolution.cuh>
#endif
