// ReLU: top = max(x, 0) + negative_slope * min(x, 0) (Caffe's leaky ReLU when the slope is non-zero).
// Runs in place, as Caffe nets usually use it; backward reads the bottom's sign.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/math/blas.hpp>

#include <cmath>
#include <cstddef>
#include <string_view>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct ReLUParam {
  double negative_slope = 0;

  static ReLUParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"negative_slope", "engine"}, context);
    ReLUParam p;
    p.negative_slope = m.get("negative_slope", 0.0);
    // Validated so that typos are caught, then ignored: the CPU has one engine.
    (void)m.get_enum("engine", {"DEFAULT", "CAFFE", "CUDNN"}, 0);
    return p;
  }
};

namespace detail {
template <class D, class T>
struct ReLUKernel {
  POSEIDON_NO_KERNEL(D, "ReLU");
};

template <class T>
struct ReLUKernel<CPU, T> {
  static void forward(std::size_t n, const T* x, T* y, T slope) {
#pragma omp parallel for if (n > math::detail::omp_min_elements)
    for (std::size_t i = 0; i < n; ++i) y[i] = x[i] > T(0) ? x[i] : slope * x[i];
  }
  // x may be the top data when run in place: for slope >= 0 its sign says what the bottom's did.
  static void backward(std::size_t n, const T* x, const T* dy, T* dx, T slope) {
#pragma omp parallel for if (n > math::detail::omp_min_elements)
    for (std::size_t i = 0; i < n; ++i) dx[i] = x[i] > T(0) ? dy[i] : slope * dy[i];
  }
};
}  // namespace detail

namespace detail {
/// What the CPU and CUDA ReLU share: the parameter, its check, the in-place rule and the passes
/// on ReLUKernel<D, T> (the CUDA layer's path for a negative slope).
template <class D, class T>
class ReLUBase : public Layer<D, T> {
  using Base = Layer<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit ReLUBase(const LayerParameter& p)
      : Base(p), rp_(ReLUParam::from_message(p.sub("relu_param"), p.describe() + " relu_param")) {}
  ReLUBase(const LayerParameter& p, ReLUParam rp) : Base(p), rp_(rp) {}

  [[nodiscard]] std::string_view type() const override { return "ReLU"; }
  [[nodiscard]] int exact_num_bottom() const override { return 1; }
  [[nodiscard]] int exact_num_top() const override { return 1; }
  [[nodiscard]] bool supports_in_place() const override { return true; }
  [[nodiscard]] const ReLUParam& relu_param() const { return rp_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    if (top[0] != bottom[0]) top[0]->reshape(bottom[0]->shape());
    if (keeps_bottom(bottom, top)) saved_bottom_.reshape(bottom[0]->shape());
  }

 protected:
  void layer_setup(Context&, const Vec&, const Vec&) override {
    this->check(std::isfinite(rp_.negative_slope), "relu_param negative_slope must be finite, got ",
                rp_.negative_slope);
  }

  void kernel_forward(Context& ctx, const Vec& bottom, const Vec& top) {
    const std::size_t n = bottom[0]->count();
    if (keeps_bottom(bottom, top)) math::copy(ctx, n, bottom[0]->data(), saved_bottom_.data());
    ReLUKernel<D, T>::forward(n, bottom[0]->data(), top[0]->data(), static_cast<T>(rp_.negative_slope));
  }

  void kernel_backward(const Vec& top, const Vec& bottom) {
    const T* x = keeps_bottom(bottom, top) ? saved_bottom_.data() : bottom[0]->data();
    ReLUKernel<D, T>::backward(bottom[0]->count(), x, top[0]->diff(), bottom[0]->diff(),
                               static_cast<T>(rp_.negative_slope));
  }

  ReLUParam rp_;

 private:
  // A negative slope flips the sign of negative inputs, so in place the top no longer tells
  // which side of 0 the bottom was on: keep a copy of the bottom for backward.
  [[nodiscard]] bool keeps_bottom(const Vec& bottom, const Vec& top) const {
    return rp_.negative_slope < 0 && (top[0] == bottom[0] || top[0]->shares_data_with(*bottom[0]));
  }

  Tensor<D, T> saved_bottom_;
};
}  // namespace detail

template <class D, class T = float>
class ReLULayer final : public detail::ReLUBase<D, T> {
  using Base = detail::ReLUBase<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;
  using Base::Base;

 protected:
  void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) override {
    this->kernel_forward(ctx, bottom, top);
  }

  void backward_impl(Context&, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    if (propagate_down[0]) this->kernel_backward(top, bottom);
  }
};

POSEIDON_REGISTER_LAYER("ReLU", ReLULayer)

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/layers/cuda/relu.cuh>
#endif
