// Eltwise: combines same-shaped bottoms element by element: SUM (optionally weighted by coeff),
// PROD, or MAX (which remembers the winning bottom of every element for backward).
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/math/blas.hpp>

#include <cstddef>
#include <string_view>
#include <utility>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct EltwiseParam {
  /// Caffe's EltwiseOp, in its enum order.
  enum class Op { prod, sum, max };

  Op operation = Op::sum;
  std::vector<double> coeff;  // empty: every coefficient is 1
  bool stable_prod_grad = true;

  static EltwiseParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"operation", "coeff", "stable_prod_grad"}, context);
    EltwiseParam p;
    p.operation = static_cast<Op>(m.get_enum("operation", {"PROD", "SUM", "MAX"}, 1));
    p.coeff = m.get_all<double>("coeff");
    p.stable_prod_grad = m.get("stable_prod_grad", true);
    return p;
  }
};

inline const char* eltwise_op_name(EltwiseParam::Op op) {
  switch (op) {
    case EltwiseParam::Op::prod: return "PROD";
    case EltwiseParam::Op::sum: return "SUM";
    case EltwiseParam::Op::max: return "MAX";
  }
  return "?";
}

namespace detail {
template <class D, class T>
struct EltwiseMaxKernel {
  POSEIDON_NO_KERNEL(D, "Eltwise MAX");
};

template <class T>
struct EltwiseMaxKernel<CPU, T> {
  /// y = max(a, b) with mask = the winner; exactly one bottom receives each gradient. Ties go
  /// as in Caffe: to bottom 1 between the first two, to the earlier bottom after that.
  static void first_two(std::size_t n, const T* a, const T* b, T* y, int* mask) {
#pragma omp parallel for if (n > math::detail::omp_min_elements)
    for (std::size_t i = 0; i < n; ++i) {
      const bool second = !(a[i] > b[i]);
      y[i] = second ? b[i] : a[i];
      mask[i] = second ? 1 : 0;
    }
  }
  static void next(std::size_t n, const T* x, int index, T* y, int* mask) {
#pragma omp parallel for if (n > math::detail::omp_min_elements)
    for (std::size_t i = 0; i < n; ++i)
      if (x[i] > y[i]) {
        y[i] = x[i];
        mask[i] = index;
      }
  }
  static void backward(std::size_t n, const T* dy, const int* mask, int index, T* dx) {
#pragma omp parallel for if (n > math::detail::omp_min_elements)
    for (std::size_t i = 0; i < n; ++i) dx[i] = mask[i] == index ? dy[i] : T(0);
  }
};
}  // namespace detail

template <class D, class T = float>
class EltwiseLayer final : public Layer<D, T> {
  using Base = Layer<D, T>;
  using Op = EltwiseParam::Op;
  using MaxKernel = detail::EltwiseMaxKernel<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit EltwiseLayer(const LayerParameter& p)
      : Base(p), ep_(EltwiseParam::from_message(p.sub("eltwise_param"), p.describe() + " eltwise_param")) {}
  EltwiseLayer(const LayerParameter& p, EltwiseParam ep) : Base(p), ep_(std::move(ep)) {}

  [[nodiscard]] std::string_view type() const override { return "Eltwise"; }
  [[nodiscard]] int min_num_bottom() const override { return 2; }
  [[nodiscard]] int exact_num_top() const override { return 1; }
  [[nodiscard]] const EltwiseParam& eltwise_param() const { return ep_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    for (std::size_t i = 1; i < bottom.size(); ++i)
      this->check(bottom[i]->shape() == bottom[0]->shape(), "bottom ", i, " ('", this->name_of_bottom(i),
                  "') has shape ", bottom[i]->shape().str(), " but bottom 0 ('", this->name_of_bottom(0),
                  "') has shape ", bottom[0]->shape().str(), "; ", eltwise_op_name(ep_.operation),
                  " needs equal shapes");
    top[0]->reshape(bottom[0]->shape());
    if (ep_.operation == Op::max) mask_.reshape(bottom[0]->shape());
  }

 protected:
  void layer_setup(Context&, const Vec& bottom, const Vec&) override {
    this->check(ep_.coeff.empty() || ep_.operation == Op::sum, "eltwise_param coeff is only for SUM, not ",
                eltwise_op_name(ep_.operation));
    this->check(ep_.coeff.empty() || ep_.coeff.size() == bottom.size(), "eltwise_param has ", ep_.coeff.size(),
                " coeff values for ", bottom.size(), " bottoms; give one per bottom");
    coeff_.assign(bottom.size(), T(1));
    for (std::size_t i = 0; i < ep_.coeff.size(); ++i) coeff_[i] = static_cast<T>(ep_.coeff[i]);
  }

  void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) override {
    const std::size_t n = top[0]->count();
    T* y = top[0]->data();
    switch (ep_.operation) {
      case Op::prod:
        math::mul(ctx, n, bottom[0]->data(), bottom[1]->data(), y);
        for (std::size_t i = 2; i < bottom.size(); ++i) math::mul(ctx, n, y, bottom[i]->data(), y);
        break;
      case Op::sum:
        math::scale(ctx, n, coeff_[0], bottom[0]->data(), y);
        for (std::size_t i = 1; i < bottom.size(); ++i) math::axpy(ctx, n, coeff_[i], bottom[i]->data(), y);
        break;
      case Op::max:
        MaxKernel::first_two(n, bottom[0]->data(), bottom[1]->data(), y, mask_.data());
        for (std::size_t i = 2; i < bottom.size(); ++i)
          MaxKernel::next(n, bottom[i]->data(), static_cast<int>(i), y, mask_.data());
        break;
    }
  }

  void backward_impl(Context& ctx, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    const std::size_t n = top[0]->count();
    const T* dy = top[0]->diff();
    for (std::size_t i = 0; i < bottom.size(); ++i) {
      if (!propagate_down[i]) continue;
      T* dx = bottom[i]->diff();
      switch (ep_.operation) {
        case Op::prod:
          if (ep_.stable_prod_grad) {
            // The product of the other bottoms, rather than top / bottom_i, stays exact at zeros.
            bool first = true;
            for (std::size_t j = 0; j < bottom.size(); ++j) {
              if (j == i) continue;
              if (first)
                math::copy(ctx, n, bottom[j]->data(), dx);
              else
                math::mul(ctx, n, dx, bottom[j]->data(), dx);
              first = false;
            }
          } else {
            math::div(ctx, n, top[0]->data(), bottom[i]->data(), dx);
          }
          math::mul(ctx, n, dx, dy, dx);
          break;
        case Op::sum:
          if (coeff_[i] == T(1))
            math::copy(ctx, n, dy, dx);
          else
            math::scale(ctx, n, coeff_[i], dy, dx);
          break;
        case Op::max:
          MaxKernel::backward(n, dy, mask_.data(), static_cast<int>(i), dx);
          break;
      }
    }
  }

 private:
  EltwiseParam ep_;
  std::vector<T> coeff_;
  Tensor<D, int> mask_;  // MAX: which bottom won each element
};

POSEIDON_REGISTER_LAYER("Eltwise", EltwiseLayer)

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/layers/cuda/eltwise.cuh>
#endif
