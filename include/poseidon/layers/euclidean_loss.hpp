// EuclideanLoss: 1/(2N) * sum ||a_n - b_n||^2 over the N samples of two same-sized bottoms
// (regression targets); both bottoms receive a gradient, the second with the sign flipped.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/memory.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/math/blas.hpp>

#include <string_view>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

template <class D, class T = float>
class EuclideanLossLayer final : public Layer<D, T> {
  using Base = Layer<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit EuclideanLossLayer(const LayerParameter& p) : Base(p) {}

  [[nodiscard]] std::string_view type() const override { return "EuclideanLoss"; }
  [[nodiscard]] int exact_num_bottom() const override { return 2; }
  [[nodiscard]] int exact_num_top() const override { return 1; }
  [[nodiscard]] bool is_loss() const override { return true; }

  void reshape(const Vec& bottom, const Vec& top) override {
    const auto& a = *bottom[0];
    const auto& b = *bottom[1];
    this->check(a.num_axes() >= 1, "bottom 0 ('", this->name_of_bottom(0), "') needs a batch axis; got shape ",
                a.shape().str());
    // Caffe compares the batch size and the per-sample count, so (N, 3) against (N, 3, 1, 1) is fine.
    this->check(b.num_axes() >= 1 && a.shape(0) == b.shape(0) && a.count(1) == b.count(1),
                "bottoms must have the same batch size and number of values per sample: bottom 0 ('",
                this->name_of_bottom(0), "') has shape ", a.shape().str(), ", bottom 1 ('", this->name_of_bottom(1),
                "') has shape ", b.shape().str());
    num_ = a.shape(0);
    diff_.reshape(a.shape());
    top[0]->reshape(Shape());
  }

 protected:
  void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) override {
    const std::size_t n = bottom[0]->count();
    math::sub(ctx, n, bottom[0]->data(), bottom[1]->data(), diff_.data());
    const T ss = math::dot(ctx, n, diff_.data(), diff_.data());
    // An empty batch has no loss (and no division by zero).
    math::set(ctx, 1, num_ > 0 ? static_cast<T>(ss / static_cast<T>(num_) / T(2)) : T(0), top[0]->data());
  }

  void backward_impl(Context& ctx, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    if (num_ == 0) return;
    T top_diff{};  // the loss weight, read as Caffe reads top[0]->cpu_diff()[0]
    copy_bytes<CPU, D>(&top_diff, top[0]->diff(), sizeof(T));
    const std::size_t n = bottom[0]->count();
    for (std::size_t i = 0; i < 2; ++i) {
      if (!propagate_down[i]) continue;
      const T alpha = (i == 0 ? T(1) : T(-1)) * top_diff / static_cast<T>(num_);
      math::scale(ctx, n, alpha, diff_.data(), bottom[i]->diff());
    }
  }

 private:
  int num_ = 0;
  Tensor<D, T> diff_;  // a - b, kept for backward
};

POSEIDON_REGISTER_LAYER("EuclideanLoss", EuclideanLossLayer)

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/layers/cuda/euclidean_loss.cuh>
#endif
