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

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <string_view>
#include <vector>

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
};

template <class D, class T>
struct PoolKernel {
  POSEIDON_NO_KERNEL(D, "Pooling");
};

template <class T>
struct PoolKernel<CPU, T> {
  // Planes (n, c) are independent: every loop is parallel over them. `argmax` holds, per output,
  // the flat index h * width + w of its maximum in the plane, or -1 for an empty window.
  static void max_forward(const PoolGeometry& g, int planes, const T* x, T* y, int* argmax, T* mask) {
    const std::size_t in_plane = static_cast<std::size_t>(g.height) * static_cast<std::size_t>(g.width);
    const std::size_t out_plane = static_cast<std::size_t>(g.out_h) * static_cast<std::size_t>(g.out_w);
#pragma omp parallel for schedule(static) if (static_cast<std::size_t>(planes) * out_plane * \
                                                      static_cast<std::size_t>(g.kernel_h * g.kernel_w) > \
                                                  math::detail::omp_min_elements)
    for (int pl = 0; pl < planes; ++pl) {
      const T* xp = x + static_cast<std::size_t>(pl) * in_plane;
      T* yp = y + static_cast<std::size_t>(pl) * out_plane;
      int* ap = argmax + static_cast<std::size_t>(pl) * out_plane;
      for (int ph = 0; ph < g.out_h; ++ph) {
        const int hs = std::max(ph * g.stride_h - g.pad_h, 0);
        const int he = std::min(ph * g.stride_h - g.pad_h + g.kernel_h, g.height);
        for (int pw = 0; pw < g.out_w; ++pw) {
          const int ws = std::max(pw * g.stride_w - g.pad_w, 0);
          const int we = std::min(pw * g.stride_w - g.pad_w + g.kernel_w, g.width);
          int best = -1;
          T v = T(0);
          if (hs < he && ws < we) {
            // Start from the window's first element: strict > then keeps the first maximum.
            best = hs * g.width + ws;
            v = xp[best];
            for (int h = hs; h < he; ++h) {
              const T* row = xp + h * g.width;
              for (int w = ws; w < we; ++w)
                if (row[w] > v) {
                  v = row[w];
                  best = h * g.width + w;
                }
            }
          }
          const std::size_t o = static_cast<std::size_t>(ph) * static_cast<std::size_t>(g.out_w) +
                                static_cast<std::size_t>(pw);
          yp[o] = v;
          ap[o] = best;
        }
      }
      if (mask)
        for (std::size_t o = 0; o < out_plane; ++o)
          mask[static_cast<std::size_t>(pl) * out_plane + o] = static_cast<T>(ap[o]);
    }
  }

  static void max_backward(const PoolGeometry& g, int planes, const T* dy, const int* argmax, T* dx) {
    const std::size_t in_plane = static_cast<std::size_t>(g.height) * static_cast<std::size_t>(g.width);
    const std::size_t out_plane = static_cast<std::size_t>(g.out_h) * static_cast<std::size_t>(g.out_w);
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
  static int ave_window(const PoolGeometry& g, int ph, int pw, int& hs, int& he, int& ws, int& we) {
    hs = ph * g.stride_h - g.pad_h;
    ws = pw * g.stride_w - g.pad_w;
    he = std::min(hs + g.kernel_h, g.height + g.pad_h);
    we = std::min(ws + g.kernel_w, g.width + g.pad_w);
    const int size = (he - hs) * (we - ws);
    hs = std::max(hs, 0);
    ws = std::max(ws, 0);
    he = std::min(he, g.height);
    we = std::min(we, g.width);
    return (he > hs && we > ws) ? size : 0;
  }

  static void ave_forward(const PoolGeometry& g, int planes, const T* x, T* y) {
    const std::size_t in_plane = static_cast<std::size_t>(g.height) * static_cast<std::size_t>(g.width);
    const std::size_t out_plane = static_cast<std::size_t>(g.out_h) * static_cast<std::size_t>(g.out_w);
#pragma omp parallel for schedule(static) if (static_cast<std::size_t>(planes) * out_plane * \
                                                      static_cast<std::size_t>(g.kernel_h * g.kernel_w) > \
                                                  math::detail::omp_min_elements)
    for (int pl = 0; pl < planes; ++pl) {
      const T* xp = x + static_cast<std::size_t>(pl) * in_plane;
      T* yp = y + static_cast<std::size_t>(pl) * out_plane;
      for (int ph = 0; ph < g.out_h; ++ph)
        for (int pw = 0; pw < g.out_w; ++pw) {
          int hs, he, ws, we;
          const int size = ave_window(g, ph, pw, hs, he, ws, we);
          T sum = T(0);
          for (int h = hs; h < he; ++h)
            for (int w = ws; w < we; ++w) sum += xp[h * g.width + w];
          yp[static_cast<std::size_t>(ph) * static_cast<std::size_t>(g.out_w) + static_cast<std::size_t>(pw)] =
              size > 0 ? sum / static_cast<T>(size) : T(0);
        }
    }
  }

  static void ave_backward(const PoolGeometry& g, int planes, const T* dy, T* dx) {
    const std::size_t in_plane = static_cast<std::size_t>(g.height) * static_cast<std::size_t>(g.width);
    const std::size_t out_plane = static_cast<std::size_t>(g.out_h) * static_cast<std::size_t>(g.out_w);
#pragma omp parallel for schedule(static) if (static_cast<std::size_t>(planes) * in_plane > math::detail::omp_min_elements)
    for (int pl = 0; pl < planes; ++pl) {
      T* dxp = dx + static_cast<std::size_t>(pl) * in_plane;
      const T* dyp = dy + static_cast<std::size_t>(pl) * out_plane;
      std::memset(dxp, 0, in_plane * sizeof(T));
      for (int ph = 0; ph < g.out_h; ++ph)
        for (int pw = 0; pw < g.out_w; ++pw) {
          int hs, he, ws, we;
          const int size = ave_window(g, ph, pw, hs, he, ws, we);
          if (size <= 0) continue;
          const T d = dyp[static_cast<std::size_t>(ph) * static_cast<std::size_t>(g.out_w) +
                          static_cast<std::size_t>(pw)] / static_cast<T>(size);
          for (int h = hs; h < he; ++h)
            for (int w = ws; w < we; ++w) dxp[h * g.width + w] += d;
        }
    }
  }
};

}  // namespace detail

template <class D, class T = float>
class PoolingLayer final : public Layer<D, T> {
  using Base = Layer<D, T>;
  using Kernel = detail::PoolKernel<D, T>;
  using Method = PoolingParam::Method;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit PoolingLayer(const LayerParameter& p)
      : Base(p), pp_(PoolingParam::from_message(p.sub("pooling_param"), p.describe() + " pooling_param")) {}
  PoolingLayer(const LayerParameter& p, PoolingParam pp) : Base(p), pp_(pp) {}

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

  void forward_impl(Context&, const Vec& bottom, const Vec& top) override {
    const int planes = bottom[0]->shape(0) * bottom[0]->shape(1);
    if (pp_.pool == Method::max)
      Kernel::max_forward(g_, planes, bottom[0]->data(), top[0]->data(), argmax_.data(),
                          top.size() > 1 ? top[1]->data() : nullptr);
    else
      Kernel::ave_forward(g_, planes, bottom[0]->data(), top[0]->data());
  }

  void backward_impl(Context&, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    if (!propagate_down[0]) return;
    const int planes = bottom[0]->shape(0) * bottom[0]->shape(1);
    if (pp_.pool == Method::max)
      Kernel::max_backward(g_, planes, top[0]->diff(), argmax_.data(), bottom[0]->diff());
    else
      Kernel::ave_backward(g_, planes, top[0]->diff(), bottom[0]->diff());
  }

 private:
  // Caffe's rule: ceil (or floor) of the window count, and with padding the last window must
  // start inside the image (or its left padding), else it is dropped.
  [[nodiscard]] int out_size(int in, int kernel, int pad, int stride) const {
    const int span = in + 2 * pad - kernel;  // >= 0, checked above
    int out = (pp_.round_mode == PoolingParam::RoundMode::ceil ? (span + stride - 1) / stride : span / stride) + 1;
    if ((g_.pad_h || g_.pad_w) && (out - 1) * stride >= in + pad) --out;
    return out;
  }

  PoolingParam pp_;
  detail::PoolGeometry g_;
  Tensor<D, int> argmax_;
};

POSEIDON_REGISTER_LAYER("Pooling", PoolingLayer)

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/layers/cuda/pooling.cuh>
#endif
