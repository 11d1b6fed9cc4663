// Concat: joins any number of bottoms along one axis (concat_param axis, or the deprecated
// concat_dim); every other dimension must agree. A single bottom is passed through without a copy.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/math/blas.hpp>

#include <cstddef>
#include <limits>
#include <string_view>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct ConcatParam {
  int axis = 1;
  bool has_axis = false;
  bool has_concat_dim = false;  // the deprecated field wins when set, as in Caffe

  static ConcatParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"axis", "concat_dim"}, context);
    ConcatParam p;
    p.has_axis = m.has("axis");
    p.has_concat_dim = m.has("concat_dim");
    if (p.has_axis && p.has_concat_dim)
      detail::raise(context, ": either axis or concat_dim should be specified, not both");
    if (p.has_concat_dim) {
      // concat_dim is unsigned in Caffe: a negative value is an error, not an axis from the end.
      const auto d = m.get<long long>("concat_dim", 1);
      if (d < 0 || d >= Shape::max_axes) detail::raise(context, ": concat_dim ", d, " is out of range");
      p.axis = static_cast<int>(d);
    } else {
      p.axis = m.get("axis", 1);
    }
    return p;
  }
};

template <class D, class T = float>
class ConcatLayer final : public Layer<D, T> {
  using Base = Layer<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit ConcatLayer(const LayerParameter& p)
      : Base(p), cp_(ConcatParam::from_message(p.sub("concat_param"), p.describe() + " concat_param")) {}
  ConcatLayer(const LayerParameter& p, ConcatParam cp) : Base(p), cp_(cp) {}

  [[nodiscard]] std::string_view type() const override { return "Concat"; }
  [[nodiscard]] int min_num_bottom() const override { return 1; }
  [[nodiscard]] int exact_num_top() const override { return 1; }
  [[nodiscard]] const ConcatParam& concat_param() const { return cp_; }
  /// The canonical concatenation axis (valid after setup).
  [[nodiscard]] int axis() const { return axis_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    const auto& b0 = *bottom[0];
    const int n = b0.num_axes();
    const char* field = cp_.has_concat_dim ? "concat_dim" : "axis";
    this->check(cp_.axis >= -n && cp_.axis < n, "concat_param ", field, " ", cp_.axis,
                " is out of range for bottom 0 ('", this->name_of_bottom(0), "') of shape ", b0.shape().str());
    axis_ = cp_.axis < 0 ? cp_.axis + n : cp_.axis;
    std::vector<int> dims = b0.shape().dims();
    long long axis_total = b0.shape(axis_);
    for (std::size_t i = 1; i < bottom.size(); ++i) {
      const auto& b = *bottom[i];
      bool ok = b.num_axes() == n;
      for (int j = 0; ok && j < n; ++j) ok = (j == axis_) || b.shape(j) == b0.shape(j);
      this->check(ok, "bottom ", i, " ('", this->name_of_bottom(i), "') of shape ", b.shape().str(),
                  " does not match bottom 0 ('", this->name_of_bottom(0), "') of shape ", b0.shape().str(),
                  " outside concat axis ", axis_);
      axis_total += b.shape(axis_);
      this->check(axis_total * static_cast<long long>(b0.count(0, axis_) * b0.count(axis_ + 1)) <=
                      std::numeric_limits<int>::max(),
                  "the concatenated top has more than INT_MAX elements");
    }
    dims[static_cast<std::size_t>(axis_)] = static_cast<int>(axis_total);
    top[0]->reshape(Shape(dims));
    outer_ = b0.count(0, axis_);
    inner_ = b0.count(axis_ + 1);
    if (bottom.size() == 1) {
      top[0]->share_data(b0);
      top[0]->share_diff(b0);
    }
  }

 protected:
  void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) override {
    if (bottom.size() == 1) return;  // shared
    const std::size_t top_axis = static_cast<std::size_t>(top[0]->shape(axis_));
    std::size_t offset = 0;
    for (const auto* b : bottom) {
      const std::size_t len = static_cast<std::size_t>(b->shape(axis_)) * inner_;
      for (std::size_t o = 0; o < outer_; ++o)
        math::copy(ctx, len, b->data() + o * len, top[0]->data() + (o * top_axis + offset) * inner_);
      offset += static_cast<std::size_t>(b->shape(axis_));
    }
  }

  void backward_impl(Context& ctx, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    if (bottom.size() == 1) return;  // shared
    const std::size_t top_axis = static_cast<std::size_t>(top[0]->shape(axis_));
    std::size_t offset = 0;
    for (std::size_t i = 0; i < bottom.size(); ++i) {
      auto* b = bottom[i];
      const std::size_t len = static_cast<std::size_t>(b->shape(axis_)) * inner_;
      if (propagate_down[i])
        for (std::size_t o = 0; o < outer_; ++o)
          math::copy(ctx, len, top[0]->diff() + (o * top_axis + offset) * inner_, b->diff() + o * len);
      offset += static_cast<std::size_t>(b->shape(axis_));
    }
  }

 private:
  ConcatParam cp_;
  int axis_ = 1;
  std::size_t outer_ = 0, inner_ = 0;
};

POSEIDON_REGISTER_LAYER("Concat", ConcatLayer)

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/layers/cuda/concat.cuh>
#endif
