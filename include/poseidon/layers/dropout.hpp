// Dropout: in TRAIN each unit is kept with probability 1 - dropout_ratio (mask drawn from ctx.rng());
// Caffe's inverted dropout scales kept units by 1 / (1 - ratio) so that TEST is the identity.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/core/rng.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/math/blas.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct DropoutParam {
  double dropout_ratio = 0.5;
  /// true: scale kept units by 1/(1-ratio) in TRAIN, identity in TEST; false: no scaling in
  /// TRAIN, multiply by (1-ratio) in TEST.
  bool scale_train = true;

  static DropoutParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"dropout_ratio", "scale_train"}, context);
    DropoutParam p;
    p.dropout_ratio = m.get("dropout_ratio", 0.5);
    p.scale_train = m.get("scale_train", true);
    return p;
  }
};

namespace detail {
template <class D, class T>
struct DropoutKernel {
  POSEIDON_NO_KERNEL(D, "Dropout");
};

template <class T>
struct DropoutKernel<CPU, T> {
  /// mask[i] = 1 with probability 1 - threshold / 2^32. Integer comparison instead of a
  /// bernoulli_distribution per element: the same draws, a fraction of the cost.
  static void draw_mask(Rng& rng, std::size_t n, std::uint64_t threshold, std::uint8_t* mask) {
    for (std::size_t i = 0; i < n; ++i) mask[i] = static_cast<std::uint8_t>(rng.next_u32() >= threshold);
  }
  /// y = x * mask * scale (x and y may alias: in-place forward and backward).
  static void apply(std::size_t n, const T* x, const std::uint8_t* mask, T scale, T* y) {
#pragma omp parallel for if (n > math::detail::omp_min_elements)
    for (std::size_t i = 0; i < n; ++i) y[i] = mask[i] ? x[i] * scale : T(0);
  }
};
}  // namespace detail

template <class D, class T = float>
class DropoutLayer final : public Layer<D, T> {
  using Base = Layer<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit DropoutLayer(const LayerParameter& p)
      : Base(p), dp_(DropoutParam::from_message(p.sub("dropout_param"), p.describe() + " dropout_param")) {}
  DropoutLayer(const LayerParameter& p, DropoutParam dp) : Base(p), dp_(dp) {}

  [[nodiscard]] std::string_view type() const override { return "Dropout"; }
  [[nodiscard]] int exact_num_bottom() const override { return 1; }
  [[nodiscard]] int exact_num_top() const override { return 1; }
  [[nodiscard]] bool supports_in_place() const override { return true; }
  [[nodiscard]] const DropoutParam& dropout_param() const { return dp_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    if (top[0] != bottom[0]) top[0]->reshape(bottom[0]->shape());
    if (training()) mask_.reshape(bottom[0]->shape());
  }

 protected:
  void layer_setup(Context&, const Vec&, const Vec&) override {
    const double r = dp_.dropout_ratio;
    this->check(r >= 0 && r < 1, "dropout_param dropout_ratio must be in [0, 1), got ", r);
    // floor(r * 2^32) < 2^32 for every double r < 1, so a kept unit always exists in the range.
    threshold_ = static_cast<std::uint64_t>(std::ldexp(r, 32));
    scale_ = static_cast<T>(1.0 / (1.0 - r));
  }

  void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) override {
    const std::size_t n = bottom[0]->count();
    if (training()) {
      detail::DropoutKernel<D, T>::draw_mask(ctx.rng(), n, threshold_, mask_.data());
      detail::DropoutKernel<D, T>::apply(n, bottom[0]->data(), mask_.data(), dp_.scale_train ? scale_ : T(1),
                                         top[0]->data());
    } else {
      math::copy(ctx, n, bottom[0]->data(), top[0]->data());
      if (!dp_.scale_train) math::scal(ctx, n, static_cast<T>(1.0 - dp_.dropout_ratio), top[0]->data());
    }
  }

  void backward_impl(Context& ctx, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    if (!propagate_down[0]) return;
    const std::size_t n = top[0]->count();
    if (training()) {
      detail::DropoutKernel<D, T>::apply(n, top[0]->diff(), mask_.data(), dp_.scale_train ? scale_ : T(1),
                                         bottom[0]->diff());
    } else {
      math::copy(ctx, n, top[0]->diff(), bottom[0]->diff());
      if (!dp_.scale_train) math::scal(ctx, n, static_cast<T>(1.0 - dp_.dropout_ratio), bottom[0]->diff());
    }
  }

 private:
  [[nodiscard]] bool training() const { return this->param_.phase == Phase::train; }

  DropoutParam dp_;
  std::uint64_t threshold_ = 0;
  T scale_ = T(1);
  Tensor<D, std::uint8_t> mask_;  // 1: kept; the draws of the last TRAIN forward, reused by backward
};

POSEIDON_REGISTER_LAYER("Dropout", DropoutLayer)

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/layers/cuda/dropout.cuh>
#endif
