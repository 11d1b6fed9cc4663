// Split: hands one bottom to several consumers. The tops share the bottom's data (no copy);
// each has its own diff, and backward sums them into the bottom's diff. Nets insert it automatically.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/math/blas.hpp>

#include <cstddef>
#include <string_view>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

template <class D, class T = float>
class SplitLayer final : public Layer<D, T> {
  using Base = Layer<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit SplitLayer(const LayerParameter& p) : Base(p) {}

  [[nodiscard]] std::string_view type() const override { return "Split"; }
  [[nodiscard]] int exact_num_bottom() const override { return 1; }
  [[nodiscard]] int min_num_top() const override { return 1; }

  void reshape(const Vec& bottom, const Vec& top) override {
    for (auto* t : top) {
      t->reshape(bottom[0]->shape());
      t->share_data(*bottom[0]);
    }
  }

 protected:
  void forward_impl(Context&, const Vec&, const Vec&) override {}  // the tops share the bottom's data

  void backward_impl(Context& ctx, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    if (!propagate_down[0]) return;
    const std::size_t n = bottom[0]->count();
    T* dx = bottom[0]->diff();
    if (top.size() == 1) {
      math::copy(ctx, n, top[0]->diff(), dx);
      return;
    }
    math::add(ctx, n, top[0]->diff(), top[1]->diff(), dx);
    for (std::size_t i = 2; i < top.size(); ++i) math::axpy(ctx, n, T(1), top[i]->diff(), dx);
  }
};

POSEIDON_REGISTER_LAYER("Split", SplitLayer)

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/layers/cuda/split.cuh>
#endif
