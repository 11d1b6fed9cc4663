// Softmax over one axis (softmax_param axis, default 1: the channels), independently for every
// outer and inner index; the maximum is subtracted first so large inputs never overflow.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/math/blas.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string_view>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct SoftmaxParam {
  int axis = 1;

  static SoftmaxParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"engine", "axis"}, context);
    SoftmaxParam p;
    (void)m.get_enum("engine", {"DEFAULT", "CAFFE", "CUDNN"}, 0);  // validated, then ignored
    p.axis = m.get("axis", 1);
    return p;
  }
};

namespace detail {
template <class D, class T>
struct SoftmaxKernel {
  POSEIDON_NO_KERNEL(D, "Softmax");
};

/// The tensor seen as outer x channels x inner; each (outer, inner) pair is one distribution.
/// Loops run over channels outside and inner inside so that memory is read contiguously;
/// `scratch` (outer x inner) holds the running max, then the sum, of each distribution.
template <class T>
struct SoftmaxKernel<CPU, T> {
  /// x may alias y. channels must be positive.
  static void forward(std::size_t outer, std::size_t channels, std::size_t inner, const T* x, T* y, T* scratch) {
#pragma omp parallel for if (outer * channels * inner > math::detail::omp_min_elements)
    for (std::size_t n = 0; n < outer; ++n) {
      const T* xp = x + n * channels * inner;
      T* yp = y + n * channels * inner;
      T* acc = scratch + n * inner;
      std::copy(xp, xp + inner, acc);
      for (std::size_t c = 1; c < channels; ++c)
        for (std::size_t k = 0; k < inner; ++k) acc[k] = std::max(acc[k], xp[c * inner + k]);
      for (std::size_t c = 0; c < channels; ++c)
        for (std::size_t k = 0; k < inner; ++k) yp[c * inner + k] = std::exp(xp[c * inner + k] - acc[k]);
      std::fill(acc, acc + inner, T(0));
      for (std::size_t c = 0; c < channels; ++c)
        for (std::size_t k = 0; k < inner; ++k) acc[k] += yp[c * inner + k];
      for (std::size_t c = 0; c < channels; ++c)
        for (std::size_t k = 0; k < inner; ++k) yp[c * inner + k] /= acc[k];
    }
  }
  /// dx = (dy - <dy, y>) * y per distribution; dy may alias dx (the dot is taken first).
  static void backward(std::size_t outer, std::size_t channels, std::size_t inner, const T* y, const T* dy, T* dx,
                       T* scratch) {
#pragma omp parallel for if (outer * channels * inner > math::detail::omp_min_elements)
    for (std::size_t n = 0; n < outer; ++n) {
      const std::size_t o = n * channels * inner;
      T* dot = scratch + n * inner;
      std::fill(dot, dot + inner, T(0));
      for (std::size_t c = 0; c < channels; ++c)
        for (std::size_t k = 0; k < inner; ++k) dot[k] += dy[o + c * inner + k] * y[o + c * inner + k];
      for (std::size_t c = 0; c < channels; ++c)
        for (std::size_t k = 0; k < inner; ++k) {
          const std::size_t i = o + c * inner + k;
          dx[i] = (dy[i] - dot[k]) * y[i];
        }
    }
  }
};
}  // namespace detail

namespace detail {
/// What the CPU and CUDA Softmax share: the parameter, the axis and the (outer, channels, inner)
/// view of the bottom. Backward reads only the top, so running in place is safe (Caffe allows it).
template <class D, class T>
class SoftmaxBase : public Layer<D, T> {
  using Base = Layer<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit SoftmaxBase(const LayerParameter& p)
      : Base(p), sp_(SoftmaxParam::from_message(p.sub("softmax_param"), p.describe() + " softmax_param")) {}
  SoftmaxBase(const LayerParameter& p, SoftmaxParam sp) : Base(p), sp_(sp) {}

  [[nodiscard]] std::string_view type() const override { return "Softmax"; }
  [[nodiscard]] int exact_num_bottom() const override { return 1; }
  [[nodiscard]] int exact_num_top() const override { return 1; }
  [[nodiscard]] bool supports_in_place() const override { return true; }
  [[nodiscard]] const SoftmaxParam& softmax_param() const { return sp_; }
  /// The canonical softmax axis for the current bottom (valid after setup).
  [[nodiscard]] int axis() const { return axis_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    const auto& b = *bottom[0];
    const int n = b.num_axes();
    this->check(sp_.axis >= -n && sp_.axis < n, "softmax_param axis ", sp_.axis, " is out of range for bottom '",
                this->name_of_bottom(0), "' of shape ", b.shape().str());
    axis_ = sp_.axis < 0 ? sp_.axis + n : sp_.axis;
    outer_ = b.count(0, axis_);
    channels_ = static_cast<std::size_t>(b.shape(axis_));
    inner_ = b.count(axis_ + 1);
    if (top[0] != bottom[0]) top[0]->reshape(b.shape());
  }

 protected:
  SoftmaxParam sp_;
  int axis_ = 0;
  std::size_t outer_ = 0, channels_ = 0, inner_ = 0;
};
}  // namespace detail

template <class D, class T = float>
class SoftmaxLayer final : public detail::SoftmaxBase<D, T> {
  using Base = detail::SoftmaxBase<D, T>;
  using Kernel = detail::SoftmaxKernel<D, T>;
  using Base::outer_;
  using Base::channels_;
  using Base::inner_;

 public:
  using typename Base::Context;
  using typename Base::Vec;
  using Base::Base;

  void reshape(const Vec& bottom, const Vec& top) override {
    Base::reshape(bottom, top);
    scratch_.reshape(Shape{static_cast<int>(outer_ * inner_)});
  }

 protected:
  void forward_impl(Context&, const Vec& bottom, const Vec& top) override {
    if (outer_ * channels_ * inner_ == 0) return;
    Kernel::forward(outer_, channels_, inner_, bottom[0]->data(), top[0]->data(), scratch_.data());
  }

  void backward_impl(Context&, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    if (!propagate_down[0] || outer_ * channels_ * inner_ == 0) return;
    Kernel::backward(outer_, channels_, inner_, top[0]->data(), top[0]->diff(), bottom[0]->diff(), scratch_.data());
  }

 private:
  Tensor<D, T> scratch_;  // outer x inner: per-distribution max, sum and dot
};

POSEIDON_REGISTER_LAYER("Softmax", SoftmaxLayer)

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/layers/cuda/softmax.cuh>
#endif
