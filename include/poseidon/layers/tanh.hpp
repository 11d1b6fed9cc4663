// TanH: top = tanh(x), elementwise.
// Runs in place: backward needs only the top (dx = dy * (1 - y^2)).
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

struct TanHParam {
  static TanHParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"engine"}, context);
    (void)m.get_enum("engine", {"DEFAULT", "CAFFE", "CUDNN"}, 0);  // validated, then ignored
    return {};
  }
};

namespace detail {
template <class D, class T>
struct TanHKernel {
  POSEIDON_NO_KERNEL(D, "TanH");
};

template <class T>
struct TanHKernel<CPU, T> {
  static void forward(std::size_t n, const T* x, T* y) {
#pragma omp parallel for if (n > math::detail::omp_min_elements)
    for (std::size_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
  }
  static void backward(std::size_t n, const T* y, const T* dy, T* dx) {
#pragma omp parallel for if (n > math::detail::omp_min_elements)
    for (std::size_t i = 0; i < n; ++i) dx[i] = dy[i] * (T(1) - y[i] * y[i]);
  }
};
}  // namespace detail

template <class D, class T = float>
class TanHLayer final : public Layer<D, T> {
  using Base = Layer<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit TanHLayer(const LayerParameter& p)
      : Base(p), tp_(TanHParam::from_message(p.sub("tanh_param"), p.describe() + " tanh_param")) {}
  TanHLayer(const LayerParameter& p, TanHParam tp) : Base(p), tp_(tp) {}

  [[nodiscard]] std::string_view type() const override { return "TanH"; }
  [[nodiscard]] int exact_num_bottom() const override { return 1; }
  [[nodiscard]] int exact_num_top() const override { return 1; }
  [[nodiscard]] bool supports_in_place() const override { return true; }

  void reshape(const Vec& bottom, const Vec& top) override {
    if (top[0] != bottom[0]) top[0]->reshape(bottom[0]->shape());
  }

 protected:
  void forward_impl(Context&, const Vec& bottom, const Vec& top) override {
    detail::TanHKernel<D, T>::forward(bottom[0]->count(), bottom[0]->data(), top[0]->data());
  }

  void backward_impl(Context&, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    if (!propagate_down[0]) return;
    detail::TanHKernel<D, T>::backward(top[0]->count(), top[0]->data(), top[0]->diff(), bottom[0]->diff());
  }

 private:
  TanHParam tp_;
};

POSEIDON_REGISTER_LAYER("TanH", TanHLayer)

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/layers/cuda/tanh.cuh>
#endif
