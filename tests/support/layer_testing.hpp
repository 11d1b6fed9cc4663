// Shared helpers for layer tests: random tensors, tolerance per type, and a one-call
// gradient check with options tuned for float and double.
#pragma once

#include <doctest/doctest.h>
#include <poseidon/core/rng.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/gradient_checker.hpp>
#include <poseidon/layers/layer.hpp>

#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace poseidon::testing {

using Ctx = DeviceContext<CPU>;

template <class T>
Tensor<CPU, T> random_tensor(const Shape& s, double lo = -1, double hi = 1, std::uint64_t seed = 42) {
  Tensor<CPU, T> t(s);
  Rng r(seed);
  for (auto& x : t.data_span()) x = static_cast<T>(r.uniform<double>(lo, hi));
  return t;
}

template <class T>
Tensor<CPU, T> tensor_of(const Shape& s, std::vector<double> values) {
  Tensor<CPU, T> t(s);
  REQUIRE(values.size() == t.count());
  for (std::size_t i = 0; i < values.size(); ++i) t.data()[i] = static_cast<T>(values[i]);
  return t;
}

/// Step and threshold that suit the precision: double checks to ~1e-6, float to ~1e-2.
template <class T>
GradientCheckOptions default_check_options() {
  GradientCheckOptions o;
  if constexpr (std::is_same_v<T, double>) {
    o.step = 1e-5;
    o.threshold = 1e-5;
  } else {
    o.step = 1e-2;
    o.threshold = 2e-2;
  }
  return o;
}

/// Runs the shared gradient checker and fails the test case with its report.
template <class T>
void expect_gradients(Layer<CPU, T>& layer, const std::vector<Tensor<CPU, T>*>& bottom,
                      const std::vector<Tensor<CPU, T>*>& top, GradientCheckOptions o = default_check_options<T>()) {
  Ctx ctx(0, 7);
  const GradientCheckReport r = check_gradients(layer, ctx, bottom, top, o);
  const std::string report = layer.describe() + ": " + r.str();  // nvcc warns on nodiscard calls inside INFO
  INFO(report);
  CHECK(r.ok());
}

/// Like expect_gradients but with caller-adjusted options built from the defaults.
template <class T, class F>
void expect_gradients_with(Layer<CPU, T>& layer, const std::vector<Tensor<CPU, T>*>& bottom,
                           const std::vector<Tensor<CPU, T>*>& top, F&& adjust) {
  GradientCheckOptions o = default_check_options<T>();
  adjust(o);
  expect_gradients(layer, bottom, top, o);
}

template <class T>
double tolerance() {
  return std::is_same_v<T, double> ? 1e-10 : 1e-4;
}

}  // namespace poseidon::testing
