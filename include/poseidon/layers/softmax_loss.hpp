// SoftmaxWithLoss: the multinomial logistic loss of a softmax over one axis, computed in one layer
// so that the gradient is the numerically stable (prob - onehot), with Caffe's ignore_label and normalization.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/memory.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/layers/softmax.hpp>
#include <poseidon/math/blas.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <string_view>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

/// Caffe's LossParameter: what the loss layers share.
struct LossParam {
  /// Caffe's NormalizationMode, in its enum order.
  enum class Normalization { full, valid, batch_size, none };

  std::optional<int> ignore_label;
  Normalization normalization = Normalization::valid;

  static LossParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"ignore_label", "normalization", "normalize"}, context);
    LossParam p;
    if (m.has("ignore_label")) p.ignore_label = m.get("ignore_label", 0);
    if (m.has("normalization"))
      p.normalization =
          static_cast<Normalization>(m.get_enum("normalization", {"FULL", "VALID", "BATCH_SIZE", "NONE"}, 1));
    else if (m.has("normalize"))  // deprecated: only read when normalization is absent, as Caffe does
      p.normalization = m.get("normalize", true) ? Normalization::valid : Normalization::batch_size;
    return p;
  }
};

inline const char* normalization_name(LossParam::Normalization n) {
  switch (n) {
    case LossParam::Normalization::full: return "FULL";
    case LossParam::Normalization::valid: return "VALID";
    case LossParam::Normalization::batch_size: return "BATCH_SIZE";
    case LossParam::Normalization::none: return "NONE";
  }
  return "?";
}

namespace detail {

/// A label that is neither the ignore label nor an integer class index; found == false when all are good.
struct BadLabel {
  bool found = false;
  std::size_t index = 0;
  double value = 0;
};

template <class D, class T>
struct SoftmaxLossKernel {
  POSEIDON_NO_KERNEL(D, "SoftmaxWithLoss");
};

/// The prediction seen as outer x channels x inner; labels are outer x inner.
template <class T>
struct SoftmaxLossKernel<CPU, T> {
  /// prob = softmax(x) over the channels: the Softmax layer's kernel.
  static void softmax(std::size_t outer, std::size_t channels, std::size_t inner, const T* x, T* prob, T* scratch) {
    SoftmaxKernel<CPU, T>::forward(outer, channels, inner, x, prob, scratch);
  }

  // Validated before any label is used as an index, so a corrupt label never reads out of bounds.
  static BadLabel find_bad_label(std::size_t n, const T* label, std::size_t channels, const std::optional<int>& ignore) {
    for (std::size_t i = 0; i < n; ++i) {
      const double v = static_cast<double>(label[i]);
      if (ignore && v == static_cast<double>(*ignore)) continue;
      if (!(v >= 0 && v < static_cast<double>(channels)) || v != std::floor(v)) return {true, i, v};
    }
    return {};
  }

  /// Sum of -log(prob[label]) over the labels that count, and how many counted.
  static double loss(std::size_t outer, std::size_t channels, std::size_t inner, const T* prob, const T* label,
                     const std::optional<int>& ignore, std::size_t& valid) {
    double sum = 0;
    valid = 0;
    for (std::size_t n = 0; n < outer; ++n)
      for (std::size_t k = 0; k < inner; ++k) {
        const T l = label[n * inner + k];
        if (ignore && static_cast<double>(l) == static_cast<double>(*ignore)) continue;
        const auto c = static_cast<std::size_t>(l);
        const T p = prob[(n * channels + c) * inner + k];
        // FLT_MIN for both types, as Caffe: a certain wrong prediction costs a bounded ~87.3.
        sum -= std::log(std::max(static_cast<double>(p), static_cast<double>(std::numeric_limits<float>::min())));
        ++valid;
      }
    return sum;
  }

  /// dx = scale * (prob - onehot(label)), zero at ignored positions; dx may not alias prob.
  static void backward(std::size_t outer, std::size_t channels, std::size_t inner, const T* prob, const T* label,
                       const std::optional<int>& ignore, T scale, T* dx) {
    const std::size_t dim = channels * inner;
#pragma omp parallel for if (outer * dim > math::detail::omp_min_elements)
    for (std::size_t n = 0; n < outer; ++n) {
      const T* pp = prob + n * dim;
      T* dp = dx + n * dim;
      for (std::size_t i = 0; i < dim; ++i) dp[i] = scale * pp[i];
      for (std::size_t k = 0; k < inner; ++k) {
        const T l = label[n * inner + k];
        if (ignore && static_cast<double>(l) == static_cast<double>(*ignore)) {
          for (std::size_t c = 0; c < channels; ++c) dp[c * inner + k] = T(0);
        } else {
          dp[static_cast<std::size_t>(l) * inner + k] -= scale;
        }
      }
    }
  }
};
}  // namespace detail

namespace detail {
/// What the CPU and CUDA SoftmaxWithLoss share: parameters, bottom checks, label checks,
/// normalisation, the loss and the gradient. A device supplies the softmax (softmax_forward).
template <class D, class T>
class SoftmaxWithLossBase : public Layer<D, T> {
  using Base = Layer<D, T>;
  using Kernel = SoftmaxLossKernel<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit SoftmaxWithLossBase(const LayerParameter& p)
      : Base(p),
        softmax_axis_param_(read_axis(p)),
        lp_(LossParam::from_message(p.sub("loss_param"), p.describe() + " loss_param")) {}
  SoftmaxWithLossBase(const LayerParameter& p, int softmax_axis, LossParam lp)
      : Base(p), softmax_axis_param_(softmax_axis), lp_(lp) {}

  [[nodiscard]] std::string_view type() const override { return "SoftmaxWithLoss"; }
  [[nodiscard]] int exact_num_bottom() const override { return 2; }
  [[nodiscard]] int min_num_top() const override { return 1; }
  [[nodiscard]] int max_num_top() const override { return 2; }
  [[nodiscard]] bool is_loss() const override { return true; }
  [[nodiscard]] bool allow_backward_to(int bottom_index) const override { return bottom_index == 0; }
  [[nodiscard]] const LossParam& loss_param() const { return lp_; }
  /// The canonical softmax axis for the current bottom (valid after setup).
  [[nodiscard]] int axis() const { return axis_; }
  /// The softmax of the last forward (what the optional second top shows).
  [[nodiscard]] const Tensor<D, T>& prob() const { return prob_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    const auto& x = *bottom[0];
    const auto& label = *bottom[1];
    const int n = x.num_axes();
    this->check(softmax_axis_param_ >= -n && softmax_axis_param_ < n, "softmax_param axis ", softmax_axis_param_,
                " is out of range for bottom 0 ('", this->name_of_bottom(0), "') of shape ", x.shape().str());
    axis_ = softmax_axis_param_ < 0 ? softmax_axis_param_ + n : softmax_axis_param_;
    outer_ = x.count(0, axis_);
    channels_ = static_cast<std::size_t>(x.shape(axis_));
    inner_ = x.count(axis_ + 1);
    this->check(channels_ > 0, "bottom 0 ('", this->name_of_bottom(0), "') of shape ", x.shape().str(),
                " has no classes along softmax axis ", axis_);
    this->check(label.count() == outer_ * inner_, "bottom 1 ('", this->name_of_bottom(1), "') of shape ",
                label.shape().str(), " has ", label.count(), " labels; bottom 0 ('", this->name_of_bottom(0),
                "') of shape ", x.shape().str(), " needs one per position outside softmax axis ", axis_, ": ",
                outer_ * inner_);
    top[0]->reshape(Shape());
    prob_.reshape(x.shape());
    if (top.size() > 1) {
      top[1]->reshape(x.shape());
      top[1]->share_data(prob_);
    }
  }

 protected:
  /// prob = softmax(x) over the axis (outer_ x channels_ x inner_); prob is the layer's own
  /// tensor, never the bottom.
  virtual void softmax_forward(Context& ctx, const T* x, T* prob) = 0;

  void layer_setup(Context&, const Vec&, const Vec& top) override {
    const auto& w = this->param().loss_weight;
    // Caffe never backpropagates through the probabilities, so a loss on them would be silently wrong.
    this->check(!(top.size() > 1 && w.size() > 1 && w[1] != 0.0f), "the probability top '", this->name_of_top(1),
                "' cannot carry a loss_weight (got ", w.size() > 1 ? w[1] : 0.0f, ")");
  }

  void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) override {
    check_labels(*bottom[1]);
    softmax_forward(ctx, bottom[0]->data(), prob_.data());
    std::size_t valid = 0;
    const double sum = Kernel::loss(outer_, channels_, inner_, prob_.data(), bottom[1]->data(), lp_.ignore_label, valid);
    math::set(ctx, 1, static_cast<T>(sum / normalizer(valid)), top[0]->data());
    valid_ = valid;
  }

  void backward_impl(Context&, const Vec& top, const std::vector<bool>& propagate_down, const Vec& bottom) override {
    if (!propagate_down[0]) return;
    check_labels(*bottom[1]);  // the labels may have been replaced since forward
    // The top diff holds the loss weight (Caffe's SetLossWeights), or what a caller put there.
    T top_diff{};
    copy_bytes<CPU, D>(&top_diff, top[0]->diff(), sizeof(T));
    const T scale = static_cast<T>(static_cast<double>(top_diff) / normalizer(valid_));
    Kernel::backward(outer_, channels_, inner_, prob_.data(), bottom[1]->data(), lp_.ignore_label, scale,
                     bottom[0]->diff());
  }

  int axis_ = 1;
  std::size_t outer_ = 0, channels_ = 0, inner_ = 0;

 private:
  static int read_axis(const LayerParameter& p) {
    const Message& m = p.sub("softmax_param");
    m.check_fields({"engine", "axis"}, p.describe() + " softmax_param");
    (void)m.get_enum("engine", {"DEFAULT", "CAFFE", "CUDNN"}, 0);  // validated, then ignored
    return m.get("axis", 1);
  }

  void check_labels(const Tensor<D, T>& label) const {
    const BadLabel bad = Kernel::find_bad_label(label.count(), label.data(), channels_, lp_.ignore_label);
    if (bad.found)
      this->fail("label ", bad.value, " at index ", bad.index, " (sample ", bad.index / inner_, ", position ",
                 bad.index % inner_, ") of bottom 1 ('", this->name_of_bottom(1), "') is not a class in [0, ",
                 channels_, ")", lp_.ignore_label ? concat(" nor the ignore_label ", *lp_.ignore_label) : "");
  }

  // Caffe's get_normalizer, clamped to at least 1 so that an all-ignored batch gives loss 0, not NaN.
  [[nodiscard]] double normalizer(std::size_t valid) const {
    double n = 1;
    switch (lp_.normalization) {
      case LossParam::Normalization::full: n = static_cast<double>(outer_ * inner_); break;
      case LossParam::Normalization::valid: n = static_cast<double>(valid); break;
      case LossParam::Normalization::batch_size: n = static_cast<double>(outer_); break;
      case LossParam::Normalization::none: n = 1; break;
    }
    return std::max(1.0, n);
  }

  int softmax_axis_param_ = 1;
  LossParam lp_;
  std::size_t valid_ = 0;  // labels counted by the last forward (the VALID normalizer)
  Tensor<D, T> prob_;
};
}  // namespace detail

template <class D, class T = float>
class SoftmaxWithLossLayer final : public detail::SoftmaxWithLossBase<D, T> {
  using Base = detail::SoftmaxWithLossBase<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;
  using Base::Base;

  void reshape(const Vec& bottom, const Vec& top) override {
    Base::reshape(bottom, top);
    scratch_.reshape(Shape{static_cast<int>(this->outer_ * this->inner_)});
  }

 protected:
  void softmax_forward(Context&, const T* x, T* prob) override {
    detail::SoftmaxLossKernel<D, T>::softmax(this->outer_, this->channels_, this->inner_, x, prob, scratch_.data());
  }

 private:
  Tensor<D, T> scratch_;
};

POSEIDON_REGISTER_LAYER("SoftmaxWithLoss", SoftmaxWithLossLayer)

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/layers/cuda/softmax_loss.cuh>
#endif
