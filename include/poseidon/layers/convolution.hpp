// Convolution: Caffe's 2-d convolution (pad, stride, dilation, groups, optional bias) lowered to
// im2col + GEMM, with several samples batched into one wide GEMM when the output planes are small.
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
#include <poseidon/math/im2col.hpp>

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
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
  static void im2col(Ctx&, const math::ConvGeometry& g, int samples, const T* data, T* col) {
    const int oh = g.out_h(), ow = g.out_w();
    const std::size_t plane = static_cast<std::size_t>(oh) * static_cast<std::size_t>(ow);
    const std::size_t ld = plane * static_cast<std::size_t>(samples);
    const std::size_t img = static_cast<std::size_t>(g.height) * static_cast<std::size_t>(g.width);
    const int jobs = samples * g.channels * g.kernel_h;
    const bool par = g.col_rows() * ld > (1u << 15);
#pragma omp parallel for schedule(static) if (par)
    for (int job = 0; job < jobs; ++job) {
      const int kh = job % g.kernel_h;
      const int c = (job / g.kernel_h) % g.channels;
      const int s = job / (g.kernel_h * g.channels);
      const T* src_plane = data + (static_cast<std::size_t>(s) * static_cast<std::size_t>(g.channels) +
                                   static_cast<std::size_t>(c)) * img;
      int ylo, yhi;
      math::detail::valid_range(oh, g.height, g.pad_h, g.stride_h, kh * g.dilation_h, ylo, yhi);
      for (int kw = 0; kw < g.kernel_w; ++kw) {
        int xlo, xhi;
        math::detail::valid_range(ow, g.width, g.pad_w, g.stride_w, kw * g.dilation_w, xlo, xhi);
        const std::size_t r = (static_cast<std::size_t>(c) * static_cast<std::size_t>(g.kernel_h) +
                               static_cast<std::size_t>(kh)) * static_cast<std::size_t>(g.kernel_w) +
                              static_cast<std::size_t>(kw);
        T* out = col + r * ld + static_cast<std::size_t>(s) * plane;
        const int ix0 = kw * g.dilation_w - g.pad_w;
        for (int y = 0; y < oh; ++y) {
          T* row = out + static_cast<std::size_t>(y) * static_cast<std::size_t>(ow);
          if (y < ylo || y >= yhi) {
            std::memset(row, 0, static_cast<std::size_t>(ow) * sizeof(T));
            continue;
          }
          const int iy = y * g.stride_h - g.pad_h + kh * g.dilation_h;
          const T* src = src_plane + static_cast<std::size_t>(iy) * static_cast<std::size_t>(g.width);
          for (int x = 0; x < xlo; ++x) row[x] = T(0);
          if (g.stride_w == 1) {
            if (xhi > xlo) std::memcpy(row + xlo, src + xlo + ix0, static_cast<std::size_t>(xhi - xlo) * sizeof(T));
          } else {
            const int sw = g.stride_w;
            for (int x = xlo; x < xhi; ++x) row[x] = src[x * sw + ix0];
          }
          for (int x = xhi; x < ow; ++x) row[x] = T(0);
        }
      }
    }
  }

  /// The adjoint of im2col: OVERWRITES the `samples` images with the summed column entries.
  static void col2im(Ctx&, const math::ConvGeometry& g, int samples, const T* col, T* data) {
    const int oh = g.out_h(), ow = g.out_w();
    const std::size_t plane = static_cast<std::size_t>(oh) * static_cast<std::size_t>(ow);
    const std::size_t ld = plane * static_cast<std::size_t>(samples);
    const std::size_t img = static_cast<std::size_t>(g.height) * static_cast<std::size_t>(g.width);
    const bool par = g.col_rows() * ld > (1u << 15);
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
        for (int kw = 0; kw < g.kernel_w; ++kw) {
          int xlo, xhi;
          math::detail::valid_range(ow, g.width, g.pad_w, g.stride_w, kw * g.dilation_w, xlo, xhi);
          const std::size_t r = (static_cast<std::size_t>(c) * static_cast<std::size_t>(g.kernel_h) +
                                 static_cast<std::size_t>(kh)) * static_cast<std::size_t>(g.kernel_w) +
                                static_cast<std::size_t>(kw);
          const T* in = col + r * ld + static_cast<std::size_t>(s) * plane;
          const int ix0 = kw * g.dilation_w - g.pad_w;
          const int sw = g.stride_w;
          for (int y = ylo; y < yhi; ++y) {
            const int iy = y * g.stride_h + base;
            T* dst = dst_plane + static_cast<std::size_t>(iy) * static_cast<std::size_t>(g.width) + ix0;
            const T* row = in + static_cast<std::size_t>(y) * static_cast<std::size_t>(ow);
            if (sw == 1)
              for (int x = xlo; x < xhi; ++x) dst[x] += row[x];
            else
              for (int x = xlo; x < xhi; ++x) dst[x * sw] += row[x];
          }
        }
      }
    }
  }

  /// A (rows x samples*plane) batch matrix -> `samples` NCHW blocks of rows x plane.
  static void to_nchw(Ctx&, int samples, int rows, std::size_t plane, const T* wide, T* nchw) {
    relayout(samples, rows, plane, [&](std::size_t job, std::size_t off) {
      std::memcpy(nchw + job * plane, wide + off, plane * sizeof(T));
    });
  }
  /// The inverse of to_nchw.
  static void from_nchw(Ctx&, int samples, int rows, std::size_t plane, const T* nchw, T* wide) {
    relayout(samples, rows, plane, [&](std::size_t job, std::size_t off) {
      std::memcpy(wide + off, nchw + job * plane, plane * sizeof(T));
    });
  }

 private:
  // Rounds towards +infinity for any sign of a (b > 0).
  static int ceil_div(int a, int b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

  template <class F>
  static void relayout(int samples, int rows, std::size_t plane, F copy) {
    const int jobs = samples * rows;
    const std::size_t ld = plane * static_cast<std::size_t>(samples);
#pragma omp parallel for schedule(static) if (static_cast<std::size_t>(jobs) * plane > math::detail::omp_min_elements)
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
  // thread, with at most column_bytes_per_thread of column buffer per thread. With one thread a
  // few samples suffice (13x13: 2-4; wider loses once the buffer leaves the cache); with two,
  // wider GEMMs split better (AlexNet conv3-5: +15-30% from 1 to 8-16 samples).
  static constexpr std::size_t small_plane = 256;
  static constexpr std::size_t columns_per_thread = 512;
  static constexpr std::size_t column_bytes_per_thread = std::size_t(8) << 20;

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
    prepare_batch(ctx.threads());
    const int G = cp_.group;
    const int m = cp_.num_output / G;                        // output channels per group
    const int k = static_cast<int>(geom_.col_rows()) / G;    // column rows per group
    const std::size_t in_sample = static_cast<std::size_t>(channels_) * static_cast<std::size_t>(geom_.height) *
                                  static_cast<std::size_t>(geom_.width);
    const std::size_t out_sample = static_cast<std::size_t>(cp_.num_output) * plane_;
    const T* w = this->blobs_[0]->data();
    for (std::size_t i = 0; i < bottom.size(); ++i) {
      const T* x = bottom[i]->data();
      T* y = top[i]->data();
      for (int n0 = 0; n0 < num_; n0 += batch_) {
        const int s = std::min(batch_, num_ - n0);
        const int ncols = static_cast<int>(plane_) * s;
        const T* col = col_for(ctx, x + static_cast<std::size_t>(n0) * in_sample, s);
        T* out = s == 1 ? y + static_cast<std::size_t>(n0) * out_sample : wide_.data();
        for (int g = 0; g < G; ++g)
          math::gemm(ctx, math::Trans::no, math::Trans::no, m, ncols, k, T(1),
                     w + static_cast<std::size_t>(g) * static_cast<std::size_t>(m) * static_cast<std::size_t>(k),
                     col + static_cast<std::size_t>(g) * static_cast<std::size_t>(k) * static_cast<std::size_t>(ncols),
                     T(0), out + static_cast<std::size_t>(g) * static_cast<std::size_t>(m) * static_cast<std::size_t>(ncols));
        if (cp_.bias_term)
          math::gemm(ctx, math::Trans::no, math::Trans::no, cp_.num_output, ncols, 1, T(1), this->blobs_[1]->data(),
                     ones_.data(), T(1), out);
        if (s > 1)
          Kernel::to_nchw(ctx, s, cp_.num_output, plane_, wide_.data(), y + static_cast<std::size_t>(n0) * out_sample);
      }
    }
  }

  void backward_impl(Context& ctx, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    prepare_batch(ctx.threads());
    const int G = cp_.group;
    const int m = cp_.num_output / G;
    const int k = static_cast<int>(geom_.col_rows()) / G;
    const std::size_t in_sample = static_cast<std::size_t>(channels_) * static_cast<std::size_t>(geom_.height) *
                                  static_cast<std::size_t>(geom_.width);
    const std::size_t out_sample = static_cast<std::size_t>(cp_.num_output) * plane_;
    const bool dw = this->param_propagate_down(0);
    const bool db = cp_.bias_term && this->param_propagate_down(1);
    const T* w = this->blobs_[0]->data();
    for (std::size_t i = 0; i < bottom.size(); ++i) {
      const bool dx = propagate_down[i];
      if (!dw && !db && !dx) continue;
      const T* x = bottom[i]->data();
      const T* dy_all = top[i]->diff();
      T* dx_all = bottom[i]->diff();
      for (int n0 = 0; n0 < num_; n0 += batch_) {
        const int s = std::min(batch_, num_ - n0);
        const int ncols = static_cast<int>(plane_) * s;
        const T* dy = dy_all + static_cast<std::size_t>(n0) * out_sample;
        if (s > 1) {
          Kernel::from_nchw(ctx, s, cp_.num_output, plane_, dy, wide_.data());
          dy = wide_.data();
        }
        if (db)
          math::gemv(ctx, math::Trans::no, cp_.num_output, ncols, T(1), dy, ones_.data(), T(1),
                     this->blobs_[1]->diff());
        if (dw) {
          const T* col = col_for(ctx, x + static_cast<std::size_t>(n0) * in_sample, s);
          T* wd = this->blobs_[0]->diff();
          for (int g = 0; g < G; ++g)
            math::gemm(ctx, math::Trans::no, math::Trans::yes, m, k, ncols, T(1),
                       dy + static_cast<std::size_t>(g) * static_cast<std::size_t>(m) * static_cast<std::size_t>(ncols),
                       col + static_cast<std::size_t>(g) * static_cast<std::size_t>(k) * static_cast<std::size_t>(ncols),
                       T(1), wd + static_cast<std::size_t>(g) * static_cast<std::size_t>(m) * static_cast<std::size_t>(k));
        }
        if (dx) {
          T* xd = dx_all + static_cast<std::size_t>(n0) * in_sample;
          // The direct path writes the input gradient in place of the column gradient.
          T* dcol = (direct_ && s == 1) ? xd : col_.data();
          for (int g = 0; g < G; ++g)
            math::gemm(ctx, math::Trans::yes, math::Trans::no, k, ncols, m, T(1),
                       w + static_cast<std::size_t>(g) * static_cast<std::size_t>(m) * static_cast<std::size_t>(k),
                       dy + static_cast<std::size_t>(g) * static_cast<std::size_t>(m) * static_cast<std::size_t>(ncols),
                       T(0), dcol + static_cast<std::size_t>(g) * static_cast<std::size_t>(k) * static_cast<std::size_t>(ncols));
          if (!(direct_ && s == 1)) Kernel::col2im(ctx, geom_, s, dcol, xd);
        }
      }
    }
  }

 private:
  // The column matrix of samples [x, x + s): the input itself on the direct 1x1 path.
  const T* col_for(Context& ctx, const T* x, int s) {
    if (direct_ && s == 1) return x;
    Kernel::im2col(ctx, geom_, s, x, col_.data());
    return col_.data();
  }

  [[nodiscard]] int choose_batch(int threads) const {
    if (num_ <= 1 || plane_ == 0) return 1;
    if (forced_batch_ > 0) return std::min(forced_batch_, num_);
    if (plane_ > small_plane) return 1;
    const auto t = static_cast<std::size_t>(std::max(threads, 1));
    std::size_t s = (columns_per_thread * t + plane_ - 1) / plane_;
    const std::size_t per_sample = geom_.col_rows() * plane_ * sizeof(T);
    s = std::min(s, std::max<std::size_t>(1, column_bytes_per_thread * t / std::max<std::size_t>(per_sample, 1)));
    return static_cast<int>(std::min<std::size_t>(s, static_cast<std::size_t>(num_)));
  }

  // Sizes the buffers for the batch chosen for this thread count; they only grow, so after the
  // first pass this allocates nothing.
  void prepare_batch(int threads) {
    batch_ = choose_batch(threads);
    const std::size_t cols = plane_ * static_cast<std::size_t>(batch_);
    if (!(direct_ && batch_ == 1)) col_.reshape(Shape{static_cast<int>(geom_.col_rows()), static_cast<int>(cols)});
    if (batch_ > 1) wide_.reshape(Shape{cp_.num_output, static_cast<int>(cols)});
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
  Tensor<D, T> col_;   // (C*KH*KW) x (batch * OH*OW)
  Tensor<D, T> wide_;  // num_output x (batch * OH*OW): a batch's output or output gradient
  Tensor<D, T> ones_;  // the bias multiplier
};

POSEIDON_REGISTER_LAYER("Convolution", ConvolutionLayer)

POSEIDON_NAMESPACE_END
