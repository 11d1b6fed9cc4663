// Scale: top = bottom * scale (+ bias), the scale broadcast over the bottom's axes [axis, axis + its axes).
// The scale is a learned blob (one bottom) or the second bottom; BatchNorm + Scale is Caffe's batch norm.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/filler.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/math/blas.hpp>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct ScaleParam {
  int axis = 1;
  int num_axes = 1;  // -1: every axis from `axis` on; 0: a scalar
  FillerParameter filler = constant(1.0);
  bool bias_term = false;
  FillerParameter bias_filler;  // constant 0

  static ScaleParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"axis", "num_axes", "filler", "bias_term", "bias_filler"}, context);
    ScaleParam p;
    p.axis = m.get("axis", 1);
    p.num_axes = m.get("num_axes", 1);
    // Caffe: an absent filler means scale 1 (the identity), not FillerParameter's constant 0.
    if (m.has("filler"))
      p.filler = FillerParameter::from_message(m.child("filler"), detail::concat(context, " filler"));
    p.bias_term = m.get("bias_term", false);
    p.bias_filler = FillerParameter::from_message(m.child("bias_filler"), detail::concat(context, " bias_filler"));
    return p;
  }

 private:
  static FillerParameter constant(double v) {
    FillerParameter f;
    f.value = v;
    return f;
  }
};

namespace detail {
template <class D, class T>
struct ScaleKernel {
  POSEIDON_NO_KERNEL(D, "Scale");
};

/// The bottom seen as outer x dim x inner; scale[d] (and bias[d]) apply to one contiguous run of inner.
template <class T>
struct ScaleKernel<CPU, T> {
  /// y = x * scale (+ bias); x may alias y.
  static void forward(std::size_t outer, std::size_t dim, std::size_t inner, const T* x, const T* scale,
                      const T* bias, T* y) {
    const std::size_t blocks = outer * dim;
#pragma omp parallel for if (blocks * inner > math::detail::omp_min_elements)
    for (std::size_t b = 0; b < blocks; ++b) {
      const std::size_t d = b % dim;
      const T s = scale[d], t = bias ? bias[d] : T(0);
      const T* xp = x + b * inner;
      T* yp = y + b * inner;
      for (std::size_t k = 0; k < inner; ++k) yp[k] = xp[k] * s + t;
    }
  }
  /// g[d] (+)= sum over outer and inner of dy * x (x null: of dy alone, the bias gradient).
  static void reduce(std::size_t outer, std::size_t dim, std::size_t inner, const T* dy, const T* x, bool accumulate,
                     T* g) {
#pragma omp parallel for if (outer * dim * inner > math::detail::omp_min_elements)
    for (std::size_t d = 0; d < dim; ++d) {
      double s = 0;
      for (std::size_t n = 0; n < outer; ++n) {
        const std::size_t o = (n * dim + d) * inner;
        if (x)
          for (std::size_t k = 0; k < inner; ++k) s += static_cast<double>(dy[o + k]) * static_cast<double>(x[o + k]);
        else
          for (std::size_t k = 0; k < inner; ++k) s += static_cast<double>(dy[o + k]);
      }
      g[d] = accumulate ? static_cast<T>(static_cast<double>(g[d]) + s) : static_cast<T>(s);
    }
  }
};
}  // namespace detail

template <class D, class T = float>
class ScaleLayer final : public Layer<D, T> {
  using Base = Layer<D, T>;
  using Kernel = detail::ScaleKernel<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit ScaleLayer(const LayerParameter& p)
      : Base(p), sp_(ScaleParam::from_message(p.sub("scale_param"), p.describe() + " scale_param")) {}
  ScaleLayer(const LayerParameter& p, ScaleParam sp) : Base(p), sp_(std::move(sp)) {}

  [[nodiscard]] std::string_view type() const override { return "Scale"; }
  [[nodiscard]] int min_num_bottom() const override { return 1; }
  [[nodiscard]] int max_num_bottom() const override { return 2; }
  [[nodiscard]] int exact_num_top() const override { return 1; }
  [[nodiscard]] bool supports_in_place() const override { return true; }
  [[nodiscard]] const ScaleParam& scale_param() const { return sp_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    const auto& b = *bottom[0];
    const auto& s = scale_tensor(bottom);
    const int k = s.num_axes();
    // A scalar scale broadcasts the same from any axis; axis 0 makes outer 1.
    axis_ = k == 0 ? 0 : canonical_axis(b);
    this->check(axis_ + k <= b.num_axes(), scale_name(bottom), " of shape ", s.shape().str(),
                " does not fit bottom '", this->name_of_bottom(0), "' of shape ", b.shape().str(), " from axis ",
                axis_);
    for (int i = 0; i < k; ++i)
      this->check(b.shape(axis_ + i) == s.shape(i), scale_name(bottom), " of shape ", s.shape().str(),
                  " does not match bottom '", this->name_of_bottom(0), "' of shape ", b.shape().str(),
                  " at axis ", axis_ + i, " (", s.shape(i), " vs ", b.shape(axis_ + i), ")");
    outer_ = b.count(0, axis_);
    dim_ = s.count();
    inner_ = b.count(axis_ + k);
    if (bias_index_ >= 0) {
      const auto& bias = *this->blobs_[static_cast<std::size_t>(bias_index_)];
      this->check(bias.count() == dim_, "bias of shape ", bias.shape().str(), " does not match ", scale_name(bottom),
                  " of shape ", s.shape().str());
    }
    if (!in_place(bottom, top))
      top[0]->reshape(b.shape());
    else if (needs_scale_gradient(bottom))
      bottom_copy_.reshape(b.shape());
  }

 protected:
  void layer_setup(Context& ctx, const Vec& bottom, const Vec& top) override {
    const auto& b = *bottom[0];
    this->check(sp_.num_axes >= -1, "scale_param num_axes must be -1 (to the end) or non-negative, got ",
                sp_.num_axes);
    this->check(bottom.size() < 2 || top[0] != bottom[1], "top '", this->name_of_top(0),
                "' cannot be the scale bottom '", this->name_of_bottom(1), "'");
    const bool learned = bottom.size() == 1;
    const std::size_t expected = (learned ? 1u : 0u) + (sp_.bias_term ? 1u : 0u);
    if (this->blobs_.empty()) {
      if (learned) {
        auto scale = std::make_shared<Tensor<D, T>>(param_shape(b, sp_.num_axes));
        fill(sp_.filler, *scale, ctx.rng());
        this->blobs_.push_back(scale);
      }
      if (sp_.bias_term) {
        // Caffe's bias spans the same axes as the scale: the scale bottom's axes when there are two.
        auto bias = std::make_shared<Tensor<D, T>>(param_shape(b, learned ? sp_.num_axes : bottom[1]->num_axes()));
        fill(sp_.bias_filler, *bias, ctx.rng());
        this->blobs_.push_back(bias);
      }
    } else {
      this->check(this->blobs_.size() == expected, "expects ", expected, " preset blobs, got ",
                  this->blobs_.size());
    }
    bias_index_ = sp_.bias_term ? (learned ? 1 : 0) : -1;
  }

  void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) override {
    const T* x = bottom[0]->data();
    // In place, the bottom is overwritten but the scale gradient needs it: keep a copy (as Caffe).
    if (in_place(bottom, top) && needs_scale_gradient(bottom))
      math::copy(ctx, bottom[0]->count(), x, bottom_copy_.data());
    const T* bias = bias_index_ >= 0 ? this->blobs_[static_cast<std::size_t>(bias_index_)]->data() : nullptr;
    Kernel::forward(outer_, dim_, inner_, x, scale_tensor(bottom).data(), bias, top[0]->data());
  }

  void backward_impl(Context&, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    const T* dy = top[0]->diff();
    // Parameter and scale gradients first: in place, bottom diff is top diff and is overwritten last.
    if (bias_index_ >= 0 && this->param_propagate_down(static_cast<std::size_t>(bias_index_)))
      Kernel::reduce(outer_, dim_, inner_, dy, nullptr, true,
                     this->blobs_[static_cast<std::size_t>(bias_index_)]->diff());
    const bool learned = bottom.size() == 1;
    if ((learned && this->param_propagate_down(0)) || (!learned && propagate_down[1])) {
      const T* x = in_place(bottom, top) ? bottom_copy_.data() : bottom[0]->data();
      T* g = learned ? this->blobs_[0]->diff() : bottom[1]->diff();
      Kernel::reduce(outer_, dim_, inner_, dy, x, learned, g);
    }
    if (propagate_down[0])
      Kernel::forward(outer_, dim_, inner_, dy, scale_tensor(bottom).data(), nullptr, bottom[0]->diff());
  }

 private:
  [[nodiscard]] const Tensor<D, T>& scale_tensor(const Vec& bottom) const {
    return bottom.size() > 1 ? *bottom[1] : *this->blobs_[0];
  }
  [[nodiscard]] std::string scale_name(const Vec& bottom) const {
    return bottom.size() > 1 ? detail::concat("scale bottom '", this->name_of_bottom(1), "'")
                             : std::string("scale blob");
  }
  [[nodiscard]] bool needs_scale_gradient(const Vec& bottom) const {
    return bottom.size() > 1 || this->param_propagate_down(0);
  }
  [[nodiscard]] static bool in_place(const Vec& bottom, const Vec& top) {
    return top[0] == bottom[0] || top[0]->shares_data_with(*bottom[0]);
  }
  [[nodiscard]] int canonical_axis(const Tensor<D, T>& b) const {
    const int n = b.num_axes();
    this->check(sp_.axis >= -n && sp_.axis < n, "scale_param axis ", sp_.axis, " is out of range for bottom '",
                this->name_of_bottom(0), "' of shape ", b.shape().str());
    return sp_.axis < 0 ? sp_.axis + n : sp_.axis;
  }
  /// The bottom's dims [axis, axis + num_axes) (num_axes -1: to the end; 0: a scalar).
  [[nodiscard]] Shape param_shape(const Tensor<D, T>& b, int num_axes) const {
    const int axis = canonical_axis(b);  // checked even for a scalar, as Caffe does
    if (num_axes == 0) return Shape{};
    const int end = num_axes < 0 ? b.num_axes() : axis + num_axes;
    this->check(end <= b.num_axes(), "scale_param axis ", axis, " + num_axes ", num_axes, " exceeds the ",
                b.num_axes(), " axes of bottom '", this->name_of_bottom(0), "' of shape ", b.shape().str());
    return Shape(std::vector<int>(b.shape().dims().begin() + axis, b.shape().dims().begin() + end));
  }

  ScaleParam sp_;
  int axis_ = 0;
  int bias_index_ = -1;
  std::size_t outer_ = 0, dim_ = 0, inner_ = 0;
  Tensor<D, T> bottom_copy_;
};

POSEIDON_REGISTER_LAYER("Scale", ScaleLayer)

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/layers/cuda/scale.cuh>
#endif
