#include <doctest/doctest.h>
#include <poseidon/layers/dropout.hpp>
#include <poseidon/layers/registry.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "support/layer_params.hpp"
#include "support/layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {
template <class T>
std::vector<T> forward_once(const LayerParameter& p, Tensor<CPU, T>& x, std::uint64_t seed) {
  Tensor<CPU, T> y;
  DropoutLayer<CPU, T> drop(p);
  Ctx ctx(0, seed);
  drop.setup(ctx, {&x}, {&y});
  drop.forward(ctx, {&x}, {&y});
  return y.data_to_host();
}
}  // namespace

TEST_CASE_TEMPLATE("Dropout in TRAIN keeps about 1 - ratio of the units, scaled by 1 / (1 - ratio)", T, float,
                   double) {
  for (double ratio : {0.5, 0.3, 0.9}) {
    CAPTURE(ratio);
    // 2^20 units: the kept fraction has a standard deviation below 5e-4, so a 5e-3 band is
    // ten sigma wide yet still tells 0.3 from 0.31.
    const int n = 1 << 20;
    auto x = random_tensor<T>({n / 64, 64}, 0.5, 1.5, 11);
    Tensor<CPU, T> y;
    DropoutLayer<CPU, T> drop(dropout_param(ratio));
    Ctx ctx(0, 99);
    drop.setup(ctx, {&x}, {&y});
    drop.forward(ctx, {&x}, {&y});
    const T scale = static_cast<T>(1.0 / (1.0 - ratio));
    std::size_t kept = 0, bad = 0;
    for (int i = 0; i < n; ++i) {
      if (y.data()[i] == T(0)) continue;
      ++kept;
      bad += y.data()[i] != x.data()[i] * scale;
    }
    CHECK(bad == 0);
    CHECK(std::abs(static_cast<double>(kept) / n - (1.0 - ratio)) < 5e-3);
  }
}

TEST_CASE_TEMPLATE("Dropout backward passes the gradient through the kept units only", T, float, double) {
  auto x = random_tensor<T>({4, 50}, 0.5, 1.5, 3);
  auto dy = random_tensor<T>({4, 50}, -1, 1, 4);
  Tensor<CPU, T> y;
  DropoutLayer<CPU, T> drop(dropout_param(0.25));
  Ctx ctx(0, 5);
  drop.setup(ctx, {&x}, {&y});
  drop.forward(ctx, {&x}, {&y});
  y.copy_diff_from_host(dy.data_span());
  drop.backward(ctx, {&y}, {true}, {&x});
  std::size_t kept = 0;
  for (std::size_t i = 0; i < x.count(); ++i) {
    const bool k = y.data()[i] != T(0);
    kept += k;
    CHECK(x.diff()[i] == (k ? dy.data()[i] * static_cast<T>(1 / 0.75) : T(0)));
  }
  CHECK(kept > 0);
  CHECK(kept < x.count());
}

TEST_CASE_TEMPLATE("Dropout in TEST is the identity", T, float, double) {
  auto x = random_tensor<T>({3, 7, 2});
  auto dy = random_tensor<T>({3, 7, 2}, -1, 1, 8);
  Tensor<CPU, T> y;
  DropoutLayer<CPU, T> drop(dropout_param(0.6, Phase::test));
  Ctx ctx;
  drop.setup(ctx, {&x}, {&y});
  drop.forward(ctx, {&x}, {&y});
  CHECK(y.data_to_host() == x.data_to_host());
  y.copy_diff_from_host(dy.data_span());
  drop.backward(ctx, {&y}, {true}, {&x});
  CHECK(x.diff_to_host() == dy.data_to_host());
}

TEST_CASE_TEMPLATE("Dropout with scale_train false scales in TEST instead", T, float, double) {
  auto x = tensor_of<T>({2, 3}, {1, 2, 3, -4, 5, -6});
  SUBCASE("TRAIN: kept units unscaled") {
    const auto y = forward_once(dropout_param(0.5, Phase::train, false), x, 17);
    std::size_t kept = 0;
    for (std::size_t i = 0; i < y.size(); ++i) {
      CHECK((y[i] == T(0) || y[i] == x.data()[i]));
      kept += y[i] != T(0);
    }
    CHECK(kept > 0);
  }
  SUBCASE("TEST: multiplied by 1 - ratio, forward and backward") {
    Tensor<CPU, T> y;
    DropoutLayer<CPU, T> drop(dropout_param(0.25, Phase::test, false));
    Ctx ctx;
    drop.setup(ctx, {&x}, {&y});
    drop.forward(ctx, {&x}, {&y});
    const std::vector<double> want{0.75, 1.5, 2.25, -3, 3.75, -4.5};
    for (std::size_t i = 0; i < want.size(); ++i) CHECK(double(y.data()[i]) == doctest::Approx(want[i]));
    std::vector<T> ones(6, T(1));
    y.copy_diff_from_host(ones);
    drop.backward(ctx, {&y}, {true}, {&x});
    for (std::size_t i = 0; i < 6; ++i) CHECK(double(x.diff()[i]) == doctest::Approx(0.75));
  }
}

TEST_CASE_TEMPLATE("Dropout masks are reproducible from the context seed", T, float, double) {
  auto x = random_tensor<T>({8, 64}, 0.5, 1.5);
  const auto a = forward_once(dropout_param(0.5), x, 123);
  const auto b = forward_once(dropout_param(0.5), x, 123);
  const auto c = forward_once(dropout_param(0.5), x, 124);
  CHECK(a == b);
  CHECK(a != c);
  // Successive forwards draw fresh masks.
  Tensor<CPU, T> y;
  DropoutLayer<CPU, T> drop(dropout_param(0.5));
  Ctx ctx(0, 123);
  drop.setup(ctx, {&x}, {&y});
  drop.forward(ctx, {&x}, {&y});
  CHECK(y.data_to_host() == a);
  drop.forward(ctx, {&x}, {&y});
  CHECK(y.data_to_host() != a);
}

TEST_CASE_TEMPLATE("Dropout with ratio 0 keeps everything", T, float, double) {
  auto x = random_tensor<T>({5, 9});
  CHECK(forward_once(dropout_param(0.0), x, 1) == x.data_to_host());
}

TEST_CASE_TEMPLATE("Dropout gradients", T, float, double) {
  SUBCASE("TRAIN") {
    auto x = random_tensor<T>({2, 3, 4, 2});
    Tensor<CPU, T> y;
    DropoutLayer<CPU, T> drop(dropout_param(0.4));
    expect_gradients(drop, {&x}, {&y});
  }
  SUBCASE("TRAIN without scaling") {
    auto x = random_tensor<T>({3, 10});
    Tensor<CPU, T> y;
    DropoutLayer<CPU, T> drop(dropout_param(0.7, Phase::train, false));
    expect_gradients(drop, {&x}, {&y});
  }
  SUBCASE("TEST without scaling") {
    auto x = random_tensor<T>({3, 10});
    Tensor<CPU, T> y;
    DropoutLayer<CPU, T> drop(dropout_param(0.7, Phase::test, false));
    expect_gradients(drop, {&x}, {&y});
  }
}

TEST_CASE_TEMPLATE("Dropout in place matches out of place", T, float, double) {
  const Shape s{6, 33};
  auto x = random_tensor<T>(s, -1, 1, 21);
  auto dy = random_tensor<T>(s, -1, 1, 22);
  Tensor<CPU, T> y;
  DropoutLayer<CPU, T> out(dropout_param(0.5));
  Ctx c1(0, 77);
  out.setup(c1, {&x}, {&y});
  out.forward(c1, {&x}, {&y});
  y.copy_diff_from_host(dy.data_span());
  out.backward(c1, {&y}, {true}, {&x});

  auto xi = random_tensor<T>(s, -1, 1, 21);
  DropoutLayer<CPU, T> in(dropout_param(0.5));
  Ctx c2(0, 77);
  in.setup(c2, {&xi}, {&xi});
  in.forward(c2, {&xi}, {&xi});
  CHECK(xi.data_to_host() == y.data_to_host());
  xi.copy_diff_from_host(dy.data_span());
  in.backward(c2, {&xi}, {true}, {&xi});
  CHECK(xi.diff_to_host() == x.diff_to_host());
}

TEST_CASE("Dropout rejects bad configuration") {
  Ctx ctx;
  auto x = random_tensor<float>({2, 3});
  Tensor<CPU, float> y;
  for (double ratio : {1.0, -0.1, 1.5}) {
    CAPTURE(ratio);
    DropoutLayer<CPU, float> drop(dropout_param(ratio));
    CHECK_THROWS_WITH_AS(drop.setup(ctx, {&x}, {&y}),
                         doctest::Contains("layer 'drop' (Dropout): dropout_param dropout_ratio must be in [0, 1)"),
                         Error);
  }
  SUBCASE("unknown field") {
    LayerParameter p("drop", "Dropout");
    p.with("dropout_param", Message().set("drop_ratio", 0.5));
    CHECK_THROWS_WITH_AS((DropoutLayer<CPU, float>{p}), doctest::Contains("unknown field 'drop_ratio'"), Error);
  }
  SUBCASE("ratio that is not a number") {
    LayerParameter p("drop", "Dropout");
    p.with("dropout_param", Message().set("dropout_ratio", "half"));
    CHECK_THROWS_WITH_AS((DropoutLayer<CPU, float>{p}), doctest::Contains("dropout_ratio"), Error);
  }
  SUBCASE("wrong blob counts") {
    DropoutLayer<CPU, float> drop(dropout_param(0.5));
    CHECK_THROWS_WITH_AS(drop.setup(ctx, {&x, &x}, {&y}), doctest::Contains("exactly bottoms: 1"), Error);
  }
  SUBCASE("registry") {
    auto layer = make_layer<CPU, double>(dropout_param(0.5));
    CHECK(layer->type() == "Dropout");
    CHECK(layer->supports_in_place());
  }
}
