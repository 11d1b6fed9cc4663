// Accuracy: the fraction of labels among the top_k scores of their position (Caffe semantics: a
// tie with the true class counts against it), with an optional per-class accuracy top. Not differentiable.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <optional>
#include <string_view>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct AccuracyParam {
  int top_k = 1;
  int axis = 1;
  std::optional<int> ignore_label;

  static AccuracyParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"top_k", "axis", "ignore_label"}, context);
    AccuracyParam p;
    p.top_k = m.get("top_k", 1);
    p.axis = m.get("axis", 1);
    if (m.has("ignore_label")) p.ignore_label = m.get("ignore_label", 0);
    return p;
  }
};

namespace detail {
template <class D, class T>
struct AccuracyKernel {
  POSEIDON_NO_KERNEL(D, "Accuracy");
};

/// Scores seen as outer x classes x inner, labels as outer x inner.
template <class T>
struct AccuracyKernel<CPU, T> {
  struct Bad {
    bool found = false;
    std::size_t index = 0;
    double value = 0;
  };

  static Bad find_bad_label(std::size_t n, const T* label, std::size_t classes, const std::optional<int>& ignore) {
    for (std::size_t i = 0; i < n; ++i) {
      const double v = static_cast<double>(label[i]);
      if (ignore && v == static_cast<double>(*ignore)) continue;
      if (!(v >= 0 && v < static_cast<double>(classes)) || v != std::floor(v)) return {true, i, v};
    }
    return {};
  }

  /// Writes the accuracy to *acc and, when per_class is not null, each class's accuracy to
  /// per_class (with seen, classes long, as scratch for the per-class label counts).
  static void forward(std::size_t outer, std::size_t classes, std::size_t inner, const T* x, const T* label,
                      const std::optional<int>& ignore, int top_k, T* acc, T* per_class, T* seen) {
    if (per_class) {
      std::fill(per_class, per_class + classes, T(0));
      std::fill(seen, seen + classes, T(0));
    }
    std::size_t hits = 0, counted = 0;
    for (std::size_t n = 0; n < outer; ++n)
      for (std::size_t k = 0; k < inner; ++k) {
        const T l = label[n * inner + k];
        if (ignore && static_cast<double>(l) == static_cast<double>(*ignore)) continue;
        const auto c = static_cast<std::size_t>(l);
        const T* xp = x + n * classes * inner + k;
        const T truth = xp[c * inner];
        // The true class counts itself, so ties with it are ranked ahead of it.
        int better = -1;
        for (std::size_t j = 0; j < classes && better < top_k; ++j) better += (xp[j * inner] >= truth);
        const bool hit = better < top_k;
        hits += hit;
        ++counted;
        if (per_class) {
          seen[c] += T(1);
          if (hit) per_class[c] += T(1);
        }
      }
    *acc = counted ? static_cast<T>(static_cast<double>(hits) / static_cast<double>(counted)) : T(0);
    if (per_class)
      for (std::size_t c = 0; c < classes; ++c) per_class[c] = seen[c] > T(0) ? per_class[c] / seen[c] : T(0);
  }
};
}  // namespace detail

template <class D, class T = float>
class AccuracyLayer final : public Layer<D, T> {
  using Base = Layer<D, T>;
  using Kernel = detail::AccuracyKernel<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit AccuracyLayer(const LayerParameter& p)
      : Base(p), ap_(AccuracyParam::from_message(p.sub("accuracy_param"), p.describe() + " accuracy_param")) {}
  AccuracyLayer(const LayerParameter& p, AccuracyParam ap) : Base(p), ap_(ap) {}

  [[nodiscard]] std::string_view type() const override { return "Accuracy"; }
  [[nodiscard]] int exact_num_bottom() const override { return 2; }
  [[nodiscard]] int min_num_top() const override { return 1; }
  [[nodiscard]] int max_num_top() const override { return 2; }
  // Counting hits has no gradient; the base class turns a request for one into an Error.
  [[nodiscard]] bool allow_backward_to(int) const override { return false; }
  [[nodiscard]] const AccuracyParam& accuracy_param() const { return ap_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    const auto& x = *bottom[0];
    const auto& label = *bottom[1];
    const int n = x.num_axes();
    this->check(ap_.axis >= -n && ap_.axis < n, "accuracy_param axis ", ap_.axis, " is out of range for bottom 0 ('",
                this->name_of_bottom(0), "') of shape ", x.shape().str());
    const int axis = ap_.axis < 0 ? ap_.axis + n : ap_.axis;
    outer_ = x.count(0, axis);
    classes_ = static_cast<std::size_t>(x.shape(axis));
    inner_ = x.count(axis + 1);
    this->check(static_cast<std::size_t>(ap_.top_k) <= classes_, "accuracy_param top_k ", ap_.top_k,
                " exceeds the number of classes ", classes_, " of bottom 0 ('", this->name_of_bottom(0), "') of shape ",
                x.shape().str(), " along axis ", axis);
    this->check(label.count() == outer_ * inner_, "bottom 1 ('", this->name_of_bottom(1), "') of shape ",
                label.shape().str(), " has ", label.count(), " labels; bottom 0 ('", this->name_of_bottom(0),
                "') of shape ", x.shape().str(), " needs one per position outside axis ", axis, ": ", outer_ * inner_);
    top[0]->reshape(Shape());
    if (top.size() > 1) {
      top[1]->reshape(Shape{static_cast<int>(classes_)});
      seen_.reshape(Shape{static_cast<int>(classes_)});
    }
  }

 protected:
  void layer_setup(Context&, const Vec&, const Vec&) override {
    this->check(ap_.top_k >= 1, "accuracy_param top_k must be at least 1, got ", ap_.top_k);
  }

  void forward_impl(Context&, const Vec& bottom, const Vec& top) override {
    const auto bad = Kernel::find_bad_label(bottom[1]->count(), bottom[1]->data(), classes_, ap_.ignore_label);
    if (bad.found)
      this->fail("label ", bad.value, " at index ", bad.index, " (sample ", bad.index / inner_, ", position ",
                 bad.index % inner_, ") of bottom 1 ('", this->name_of_bottom(1), "') is not a class in [0, ",
                 classes_, ")", ap_.ignore_label ? detail::concat(" nor the ignore_label ", *ap_.ignore_label) : "");
    Kernel::forward(outer_, classes_, inner_, bottom[0]->data(), bottom[1]->data(), ap_.ignore_label, ap_.top_k,
                    top[0]->data(), top.size() > 1 ? top[1]->data() : nullptr, seen_.data());
  }

  // Reached only with every propagate_down false (the base rejects the rest): nothing to do.
  void backward_impl(Context&, const Vec&, const std::vector<bool>&, const Vec&) override {}

 private:
  AccuracyParam ap_;
  std::size_t outer_ = 0, classes_ = 0, inner_ = 0;
  Tensor<D, T> seen_;  // per-class label counts for the second top
};

POSEIDON_REGISTER_LAYER("Accuracy", AccuracyLayer)

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/layers/cuda/accuracy.cuh>
#endif
