// Dropout on CUDA: the GPU draws its own masks (counter-based, keyed by ctx.rng()), so TRAIN is
// checked by its properties and reproducibility, TEST against the CPU, gradients on the GPU.
#include <doctest/doctest.h>
#include <poseidon/layers/dropout.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "support/layer_params.hpp"
#include "support/cuda_layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {
template <class T>
std::vector<T> gpu_forward(const LayerParameter& p, const Tensor<CPU, T>& x, std::uint64_t seed, int passes = 1) {
  auto gx = to_gpu(x);
  Tensor<CUDA, T> gy;
  DropoutLayer<CUDA, T> drop(p);
  GpuCtx ctx(0, seed);
  drop.setup(ctx, {&gx}, {&gy});
  for (int i = 0; i < passes; ++i) drop.forward(ctx, {&gx}, {&gy});
  return gy.data_to_host();
}
}  // namespace

TEST_CASE_TEMPLATE("CUDA Dropout in TRAIN keeps about 1 - ratio of the units, scaled by 1 / (1 - ratio)", T, float,
                   double) {
  CHECK(LayerRegistry<CUDA, T>::has("Dropout"));
  for (double ratio : {0.5, 0.3, 0.9}) {
    for (bool scale_train : {true, false}) {
      CAPTURE(ratio);
      CAPTURE(scale_train);
      // 2^20 units: the kept fraction's standard deviation is below 5e-4; the band is ten of them.
      const int n = 1 << 20;
      auto x = random_tensor<T>({n / 64, 64}, 0.5, 1.5, 11);
      const auto y = gpu_forward<T>(dropout_param(ratio, Phase::train, scale_train), x, 99);
      const T scale = scale_train ? static_cast<T>(1.0 / (1.0 - ratio)) : T(1);
      std::size_t kept = 0, bad = 0;
      for (int i = 0; i < n; ++i) {
        if (y[i] == T(0)) continue;
        ++kept;
        bad += y[i] != x.data()[i] * scale;
      }
      CHECK(bad == 0);
      CHECK(std::abs(static_cast<double>(kept) / n - (1.0 - ratio)) < 5e-3);
    }
  }
}

TEST_CASE_TEMPLATE("CUDA Dropout masks follow the context's seed", T, float, double) {
  auto x = random_tensor<T>({32, 1000}, 0.5, 1.5, 12);
  const auto p = dropout_param(0.5);
  const auto a = gpu_forward<T>(p, x, 5), b = gpu_forward<T>(p, x, 5), c = gpu_forward<T>(p, x, 6);
  CHECK(a == b);  // a reseeded context reproduces the mask
  CHECK(a != c);
  // Successive forwards draw fresh masks.
  CHECK(gpu_forward<T>(p, x, 5, 2) != a);
}

TEST_CASE_TEMPLATE("CUDA Dropout backward passes the gradient through the kept units only", T, float, double) {
  for (bool in_place : {false, true}) {
    CAPTURE(in_place);
    auto x = random_tensor<T>({40, 50}, 0.5, 1.5, 3);
    auto dy = random_tensor<T>({40, 50}, -1, 1, 4);
    auto gx = to_gpu(x);
    Tensor<CUDA, T> gy_own;
    Tensor<CUDA, T>* gy = in_place ? &gx : &gy_own;
    DropoutLayer<CUDA, T> drop(dropout_param(0.25));
    GpuCtx ctx(0, 5);
    drop.setup(ctx, {&gx}, {gy});
    drop.forward(ctx, {&gx}, {gy});
    const auto y = gy->data_to_host();
    gy->copy_diff_from_host(dy.data_span());
    drop.backward(ctx, {gy}, {true}, {&gx});
    const auto dx = gx.diff_to_host();
    std::size_t kept = 0, bad = 0;
    for (std::size_t i = 0; i < x.count(); ++i) {
      const bool k = y[i] != T(0);
      kept += k;
      bad += dx[i] != (k ? dy.data()[i] * static_cast<T>(1 / 0.75) : T(0));
    }
    CHECK(bad == 0);
    CHECK(kept > 0);
    CHECK(kept < x.count());
  }
}

TEST_CASE_TEMPLATE("CUDA Dropout in TEST matches the CPU", T, float, double) {
  for (bool scale_train : {true, false}) {
    CAPTURE(scale_train);
    // A copy, or one scaling by (1 - ratio): the same single rounding on both devices.
    compare_with_cpu<T>(dropout_param(0.3, Phase::test, scale_train), {random_tensor<T>({6, 7, 8})}, 0.0);
    CompareOptions o;
    o.in_place = true;
    compare_with_cpu<T>(dropout_param(0.3, Phase::test, scale_train), {random_tensor<T>({6, 7, 8})}, 0.0, o);
  }
}

TEST_CASE("CUDA Dropout gradients (double, on the GPU)") {
  // The checker reseeds the context before every forward, so each sees the same mask.
  expect_gpu_gradients<double>(dropout_param(0.4), {random_tensor<double>({4, 25})});
  expect_gpu_gradients<double>(dropout_param(0.4, Phase::train, false), {random_tensor<double>({4, 25})});
}
