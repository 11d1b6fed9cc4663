// LRN: Caffe's local response normalisation, top = x * (k + alpha/n * sum of x^2 over a local
// region)^-beta, across neighbouring channels or within a square window of each channel.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/math/blas.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string_view>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

POSEIDON_NAMESPACE_BEGIN

struct LRNParam {
  enum class NormRegion { across_channels, within_channel };

  int local_size = 5;
  double alpha = 1;
  double beta = 0.75;
  double k = 1;
  NormRegion norm_region = NormRegion::across_channels;

  static LRNParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"local_size", "alpha", "beta", "norm_region", "k", "engine"}, context);
    LRNParam p;
    p.local_size = m.get("local_size", 5);
    p.alpha = m.get("alpha", 1.0);
    p.beta = m.get("beta", 0.75);
    p.k = m.get("k", 1.0);
    p.norm_region = static_cast<NormRegion>(m.get_enum("norm_region", {"ACROSS_CHANNELS", "WITHIN_CHANNEL"}, 0));
    (void)m.get_enum("engine", {"DEFAULT", "CAFFE", "CUDNN"}, 0);  // one engine on the CPU
    return p;
  }
};

namespace detail {

/// The region: `size` neighbours along channels, or size x size within a plane, zero padded.
struct LRNGeometry {
  int num = 0, channels = 0, height = 0, width = 0, size = 5;
  bool across = true;
  [[nodiscard]] std::size_t plane() const { return static_cast<std::size_t>(height) * static_cast<std::size_t>(width); }
};

template <class D, class T>
struct LRNKernel {
  POSEIDON_NO_KERNEL(D, "LRN");
};

template <class T>
struct LRNKernel<CPU, T> {
  using Geometry = LRNGeometry;

  // p[j] = s[j]^-beta for n values. AlexNet's beta = 3/4 is two square roots rather than a pow(),
  // done four (two) at a time with SSE2: a scalar std::sqrt keeps its errno branch and does not
  // vectorise, and this loop is most of the layer's time.
  static void neg_pow(std::size_t n, const T* s, T beta, T* p) {
    std::size_t j = 0;
    if (beta == T(0.75)) {
#if defined(__SSE2__)
      if constexpr (std::is_same_v<T, float>) {
        const __m128 one = _mm_set1_ps(1.0f);
        for (; j + 4 <= n; j += 4) {
          const __m128 r = _mm_sqrt_ps(_mm_loadu_ps(s + j));
          _mm_storeu_ps(p + j, _mm_div_ps(one, _mm_mul_ps(r, _mm_sqrt_ps(r))));
        }
      } else if constexpr (std::is_same_v<T, double>) {
        const __m128d one = _mm_set1_pd(1.0);
        for (; j + 2 <= n; j += 2) {
          const __m128d r = _mm_sqrt_pd(_mm_loadu_pd(s + j));
          _mm_storeu_pd(p + j, _mm_div_pd(one, _mm_mul_pd(r, _mm_sqrt_pd(r))));
        }
      }
#endif
      for (; j < n; ++j) {
        const T r = std::sqrt(s[j]);
        p[j] = T(1) / (r * std::sqrt(r));
      }
      return;
    }
    for (; j < n; ++j) p[j] = std::pow(s[j], -beta);
  }

  // out = sum of `in` over each element's region (its own region: the windows are symmetric, so
  // this is also the sum over the elements whose region contains it). One sample at a time.
  static void region_sum(const Geometry& g, const T* in, T* out, T* tmp) {
    const int half = (g.size - 1) / 2;
    const std::size_t plane = g.plane();
    if (g.across) {
      for (int c = 0; c < g.channels; ++c) {
        T* o = out + static_cast<std::size_t>(c) * plane;
        std::fill(o, o + plane, T(0));
        const int lo = std::max(c - half, 0), hi = std::min(c + half, g.channels - 1);
        for (int cc = lo; cc <= hi; ++cc) {
          const T* i = in + static_cast<std::size_t>(cc) * plane;
          for (std::size_t j = 0; j < plane; ++j) o[j] += i[j];
        }
      }
      return;
    }
    // A separable box sum: rows into tmp, then columns into out.
    for (int c = 0; c < g.channels; ++c) {
      const T* i = in + static_cast<std::size_t>(c) * plane;
      T* o = out + static_cast<std::size_t>(c) * plane;
      for (int h = 0; h < g.height; ++h)
        for (int w = 0; w < g.width; ++w) {
          T s = T(0);
          const int lo = std::max(w - half, 0), hi = std::min(w + half, g.width - 1);
          for (int ww = lo; ww <= hi; ++ww) s += i[h * g.width + ww];
          tmp[h * g.width + w] = s;
        }
      for (int h = 0; h < g.height; ++h) {
        const int lo = std::max(h - half, 0), hi = std::min(h + half, g.height - 1);
        for (int w = 0; w < g.width; ++w) {
          T s = T(0);
          for (int hh = lo; hh <= hi; ++hh) s += tmp[hh * g.width + w];
          o[h * g.width + w] = s;
        }
      }
    }
  }

  // scale = k + alpha/n * region_sum(x^2), top = x * scale^-beta; n = size (across) or size^2
  // (within: Caffe's AVE pooling divisor, the full window, as padding counts).
  static void forward(const Geometry& g, T alpha, T beta, T k, const T* x, T* scale, T* y, T* work) {
    const std::size_t sample = static_cast<std::size_t>(g.channels) * g.plane();
    const T coeff = alpha / static_cast<T>(g.across ? g.size : g.size * g.size);
#pragma omp parallel for schedule(static) if (static_cast<std::size_t>(g.num) * sample > math::detail::omp_min_elements)
    for (int n = 0; n < g.num; ++n) {
      const std::size_t off = static_cast<std::size_t>(n) * sample;
      // work: one sample (x^2, then scale^-beta) and one plane of box-sum temporaries per sample.
      T* sq = work + static_cast<std::size_t>(n) * (sample + g.plane());
      T* tmp = sq + sample;
      for (std::size_t j = 0; j < sample; ++j) sq[j] = x[off + j] * x[off + j];
      region_sum(g, sq, scale + off, tmp);
      for (std::size_t j = 0; j < sample; ++j) scale[off + j] = k + coeff * scale[off + j];
      neg_pow(sample, scale + off, beta, sq);
      for (std::size_t j = 0; j < sample; ++j) y[off + j] = x[off + j] * sq[j];
    }
  }

  // dx = dy * scale^-beta - 2 alpha beta / n * x * region_sum(dy * y / scale)
  static void backward(const Geometry& g, T alpha, T beta, const T* x, const T* y, const T* scale, const T* dy,
                       T* dx, T* work) {
    const std::size_t sample = static_cast<std::size_t>(g.channels) * g.plane();
    const T coeff = T(2) * alpha * beta / static_cast<T>(g.across ? g.size : g.size * g.size);
#pragma omp parallel for schedule(static) if (static_cast<std::size_t>(g.num) * sample > math::detail::omp_min_elements)
    for (int n = 0; n < g.num; ++n) {
      const std::size_t off = static_cast<std::size_t>(n) * sample;
      T* ratio = work + static_cast<std::size_t>(n) * (sample + g.plane());
      T* tmp = ratio + sample;
      for (std::size_t j = 0; j < sample; ++j) ratio[j] = dy[off + j] * y[off + j] / scale[off + j];
      region_sum(g, ratio, dx + off, tmp);
      neg_pow(sample, scale + off, beta, ratio);
      for (std::size_t j = 0; j < sample; ++j)
        dx[off + j] = dy[off + j] * ratio[j] - coeff * x[off + j] * dx[off + j];
    }
  }
};

}  // namespace detail

template <class D, class T = float>
class LRNLayer final : public Layer<D, T> {
  using Base = Layer<D, T>;
  using Kernel = detail::LRNKernel<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit LRNLayer(const LayerParameter& p)
      : Base(p), lp_(LRNParam::from_message(p.sub("lrn_param"), p.describe() + " lrn_param")) {}
  LRNLayer(const LayerParameter& p, LRNParam lp) : Base(p), lp_(lp) {}

  [[nodiscard]] std::string_view type() const override { return "LRN"; }
  [[nodiscard]] int exact_num_bottom() const override { return 1; }
  [[nodiscard]] int exact_num_top() const override { return 1; }
  [[nodiscard]] const LRNParam& lrn_param() const { return lp_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    const auto& b = *bottom[0];
    this->check_axes(b, 0, 4, 4);
    geom_.num = b.shape(0);
    geom_.channels = b.shape(1);
    geom_.height = b.shape(2);
    geom_.width = b.shape(3);
    top[0]->reshape(b.shape());
    scale_.reshape(b.shape());
    // Per sample: one sample of squares or ratios, plus one plane for the separable box sum.
    work_.reshape(Shape{geom_.num, static_cast<int>(b.count(1) + geom_.plane())});
  }

 protected:
  void layer_setup(Context&, const Vec& bottom, const Vec&) override {
    this->check(lp_.local_size > 0, "local_size must be positive, got ", lp_.local_size);
    this->check(lp_.local_size % 2 == 1, "local_size must be odd, got ", lp_.local_size);
    this->check(std::isfinite(lp_.alpha) && std::isfinite(lp_.beta) && std::isfinite(lp_.k),
                "alpha, beta and k must be finite, got ", lp_.alpha, ", ", lp_.beta, ", ", lp_.k);
    this->check_axes(*bottom[0], 0, 4, 4);
    geom_.size = lp_.local_size;
    geom_.across = lp_.norm_region == LRNParam::NormRegion::across_channels;
  }

  void forward_impl(Context&, const Vec& bottom, const Vec& top) override {
    Kernel::forward(geom_, static_cast<T>(lp_.alpha), static_cast<T>(lp_.beta), static_cast<T>(lp_.k),
                    bottom[0]->data(), scale_.data(), top[0]->data(), work_.data());
  }

  void backward_impl(Context&, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    if (!propagate_down[0]) return;
    Kernel::backward(geom_, static_cast<T>(lp_.alpha), static_cast<T>(lp_.beta), bottom[0]->data(), top[0]->data(),
                     scale_.data(), top[0]->diff(), bottom[0]->diff(), work_.data());
  }

 private:
  LRNParam lp_;
  detail::LRNGeometry geom_;
  Tensor<D, T> scale_;  // k + alpha/n * region sum of squares, kept for backward
  Tensor<D, T> work_;
};

POSEIDON_REGISTER_LAYER("LRN", LRNLayer)

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/layers/cuda/lrn.cuh>
#endif
