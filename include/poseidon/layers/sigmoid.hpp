// Sigmoid: top = 1 / (1 + exp(-x)), computed as 0.5 * tanh(0.5 x) + 0.5 so it never overflows.
// Runs in place: backward needs only the top (dx = dy * y * (1 - y)).
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

struct SigmoidParam {
  static SigmoidParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"engine"}, context);
    (void)m.get_enum("engine", {"DEFAULT", "CAFFE", "CUDNN"}, 0);  // validated, then ignored
    return {};
  }
};

namespace detail {
template <class D, class T>
struct SigmoidKernel {
  POSEIDON_NO_KERNEL(D, "Sigmoid");
};

template <class T>
struct SigmoidKernel<CPU, T> {
  static void forward(std::size_t n, const T* x, T* y) {
#pragma omp parallel for if (n > math::detail::omp_min_elements)
    for (std::size_t i = 0; i < n; ++i) y[i] = T(0.5) * std::tanh(T(0.5) * x[i]) + T(0.5);
  }
  static void backward(std::size_t n, const T* y, const T* dy, T* dx) {
#pragma omp parallel for if (n > math::detail::omp_min_elements)
    for (std::size_t i = 0; i < n; ++i) dx[i] = dy[i] * y[i] * (T(1) - y[i]);
  }
};
}  // namespace detail

template <class D, class T = float>
class SigmoidLayer final : public Layer<D, T> {
  using Base = Layer<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit SigmoidLayer(const LayerParameter& p)
      : Base(p), sp_(SigmoidParam::from_message(p.sub("sigmoid_param"), p.describe() + " sigmoid_param")) {}
  SigmoidLayer(const LayerParameter& p, SigmoidParam sp) : Base(p), sp_(sp) {}

  [[nodiscard]] std::string_view type() const override { return "Sigmoid"; }
  [[nodiscard]] int exact_num_bottom() const override { return 1; }
  [[nodiscard]] int exact_num_top() const override { return 1; }
  [[nodiscard]] bool supports_in_place() const override { return true; }

  void reshape(const Vec& bottom, const Vec& top) override {
    if (top[0] != bottom[0]) top[0]->reshape(bottom[0]->shape());
  }

 protected:
  void forward_impl(Context&, const Vec& bottom, const Vec& top) override {
    detail::SigmoidKernel<D, T>::forward(bottom[0]->count(), bottom[0]->data(), top[0]->data());
  }

  void backward_impl(Context&, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    if (!propagate_down[0]) return;
    detail::SigmoidKernel<D, T>::backward(top[0]->count(), top[0]->data(), top[0]->diff(), bottom[0]->diff());
  }

 private:
  SigmoidParam sp_;
};

POSEIDON_REGISTER_LAYER("Sigmoid", SigmoidLayer)

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/layers/cuda/sigmoid.cuh>
#endif
