#include <doctest/doctest.h>
#include <poseidon/layers/registry.hpp>
#include <poseidon/layers/relu.hpp>
#include <poseidon/layers/sigmoid.hpp>
#include <poseidon/layers/tanh.hpp>

#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "support/layer_params.hpp"
#include "support/layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {
/// Forward + backward out of place, then in place on a copy of the same bottom with the same top
/// diff: the top data and the bottom diff must be identical.
template <class T>
void expect_in_place_matches(const LayerParameter& p, const Shape& shape) {
  auto x = random_tensor<T>(shape, -2, 2, 5);
  auto dy = random_tensor<T>(shape, -1, 1, 6);
  Tensor<CPU, T> y;
  auto out = make_layer<CPU, T>(p);
  Ctx ctx;
  out->setup(ctx, {&x}, {&y});
  out->forward(ctx, {&x}, {&y});
  y.copy_diff_from_host(dy.data_span());
  out->backward(ctx, {&y}, {true}, {&x});

  auto xi = random_tensor<T>(shape, -2, 2, 5);
  auto in = make_layer<CPU, T>(p);
  in->setup(ctx, {&xi}, {&xi});
  in->forward(ctx, {&xi}, {&xi});
  CHECK(xi.data_to_host() == y.data_to_host());
  xi.copy_diff_from_host(dy.data_span());
  in->backward(ctx, {&xi}, {true}, {&xi});
  CHECK(xi.diff_to_host() == x.diff_to_host());
}

/// Runs one forward and one backward (top diff = 1) and returns {top data, bottom diff}.
template <class T>
std::pair<std::vector<T>, std::vector<T>> run_once(const LayerParameter& p, Tensor<CPU, T>& x) {
  Tensor<CPU, T> y;
  auto layer = make_layer<CPU, T>(p);
  Ctx ctx;
  layer->setup(ctx, {&x}, {&y});
  layer->forward(ctx, {&x}, {&y});
  REQUIRE(y.shape() == x.shape());
  std::vector<T> ones(y.count(), T(1));
  y.copy_diff_from_host(ones);
  layer->backward(ctx, {&y}, {true}, {&x});
  return {y.data_to_host(), x.diff_to_host()};
}

template <class T>
void check_values(const std::vector<T>& got, const std::vector<double>& want, double eps = 1e-6) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO("index ", i);
    CHECK(static_cast<double>(got[i]) == doctest::Approx(want[i]).epsilon(eps).scale(1.0));
  }
}
}  // namespace

// ---- ReLU -------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("ReLU forward and backward match hand-computed values", T, float, double) {
  SUBCASE("plain") {
    auto x = tensor_of<T>({1, 5}, {-2, -0.5, 0, 0.5, 3});
    auto [y, dx] = run_once(relu_param(0), x);
    check_values(y, {0, 0, 0, 0.5, 3});
    check_values(dx, {0, 0, 0, 1, 1});
  }
  SUBCASE("leaky") {
    auto x = tensor_of<T>({5}, {-2, -0.5, 0, 0.5, 3});
    auto [y, dx] = run_once(relu_param(0.1), x);
    check_values(y, {-0.2, -0.05, 0, 0.5, 3});
    check_values(dx, {0.1, 0.1, 0.1, 1, 1});  // Caffe: the slope applies at 0
  }
  SUBCASE("default parameters") {
    auto x = tensor_of<T>({2, 2}, {-1, 1, -3, 2});
    auto [y, dx] = run_once(act_param("ReLU"), x);
    check_values(y, {0, 1, 0, 2});
    check_values(dx, {0, 1, 0, 1});
  }
}

TEST_CASE_TEMPLATE("ReLU gradients", T, float, double) {
  for (double slope : {0.0, 0.3, -0.5}) {
    CAPTURE(slope);
    auto x = random_tensor<T>({2, 3, 2, 3});
    Tensor<CPU, T> y;
    ReLULayer<CPU, T> relu(relu_param(slope));
    expect_gradients_with(relu, {&x}, {&y}, [](auto& o) {
      o.kink = 0;
      o.kink_range = 2 * o.step;  // the finite difference straddles the kink only this close to 0
    });
  }
}

TEST_CASE_TEMPLATE("ReLU in place matches out of place", T, float, double) {
  for (double slope : {0.0, 0.2, -0.5}) {
    CAPTURE(slope);
    expect_in_place_matches<T>(relu_param(slope), Shape{3, 4, 5});
  }
}

// ---- Sigmoid ----------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("Sigmoid forward and backward match hand-computed values", T, float, double) {
  auto x = tensor_of<T>({5}, {0, 2, -2, 40, -40});
  auto [y, dx] = run_once(act_param("Sigmoid"), x);
  check_values(y, {0.5, 0.8807970779778823, 0.11920292202211755, 1, 0});
  check_values(dx, {0.25, 0.10499358540350652, 0.10499358540350652, 0, 0});
  for (auto v : y) CHECK(std::isfinite(v));
}

TEST_CASE_TEMPLATE("Sigmoid gradients", T, float, double) {
  auto x = random_tensor<T>({2, 3, 4}, -3, 3);
  Tensor<CPU, T> y;
  SigmoidLayer<CPU, T> sig(act_param("Sigmoid"));
  expect_gradients(sig, {&x}, {&y});
}

TEST_CASE_TEMPLATE("Sigmoid in place matches out of place", T, float, double) {
  expect_in_place_matches<T>(act_param("Sigmoid"), Shape{2, 7, 3});
}

// ---- TanH -------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("TanH forward and backward match hand-computed values", T, float, double) {
  auto x = tensor_of<T>({2, 2}, {0, 0.5, -1, 30});
  auto [y, dx] = run_once(act_param("TanH"), x);
  check_values(y, {0, 0.46211715726000974, -0.7615941559557649, 1});
  check_values(dx, {1, 0.7864477329659274, 0.41997434161402614, 0});
}

TEST_CASE_TEMPLATE("TanH gradients", T, float, double) {
  auto x = random_tensor<T>({3, 2, 5}, -2, 2);
  Tensor<CPU, T> y;
  TanHLayer<CPU, T> tanh_layer(act_param("TanH"));
  expect_gradients(tanh_layer, {&x}, {&y});
}

TEST_CASE_TEMPLATE("TanH in place matches out of place", T, float, double) {
  expect_in_place_matches<T>(act_param("TanH"), Shape{4, 9});
}

// ---- shared behaviour ------------------------------------------------------------------------

TEST_CASE("Activations are created by the registry and accept their engine field") {
  for (const char* type : {"ReLU", "Sigmoid", "TanH"}) {
    auto layer = make_layer<CPU, double>(act_param(type));
    CHECK(layer->type() == type);
    CHECK(layer->supports_in_place());
  }
  Message cudnn;
  cudnn.set_enum("engine", "CUDNN");
  CHECK_NOTHROW((void)make_layer<CPU, float>(act_param("ReLU", "relu_param", cudnn)));
  CHECK_NOTHROW((void)make_layer<CPU, float>(act_param("Sigmoid", "sigmoid_param", cudnn)));
  CHECK_NOTHROW((void)make_layer<CPU, float>(act_param("TanH", "tanh_param", cudnn)));
}

TEST_CASE("Activations reject bad configuration") {
  Ctx ctx;
  auto x = random_tensor<float>({2, 3});
  Tensor<CPU, float> y, z;
  SUBCASE("non-finite negative_slope names the layer and the parameter") {
    ReLULayer<CPU, float> relu(relu_param(std::numeric_limits<double>::quiet_NaN()));
    CHECK_THROWS_WITH_AS(relu.setup(ctx, {&x}, {&y}), doctest::Contains("layer 'act' (ReLU): relu_param negative_slope"),
                         Error);
  }
  SUBCASE("unknown relu_param field") {
    auto p = act_param("ReLU", "relu_param", Message().set("negative_slop", 0.1));
    CHECK_THROWS_WITH_AS((ReLULayer<CPU, float>{p}), doctest::Contains("unknown field 'negative_slop'"), Error);
  }
  SUBCASE("bad engine") {
    Message m;
    m.set_enum("engine", "FAST");
    CHECK_THROWS_WITH_AS((SigmoidLayer<CPU, float>{act_param("Sigmoid", "sigmoid_param", m)}),
                         doctest::Contains("'engine'"), Error);
    CHECK_THROWS_WITH_AS((TanHLayer<CPU, float>{act_param("TanH", "tanh_param", m)}), doctest::Contains("'engine'"),
                         Error);
  }
  SUBCASE("unknown tanh_param field") {
    auto p = act_param("TanH", "tanh_param", Message().set("slope", 1));
    CHECK_THROWS_WITH_AS((TanHLayer<CPU, float>{p}), doctest::Contains("unknown field 'slope' in layer 'act' (TanH)"),
                         Error);
  }
  SUBCASE("wrong blob counts") {
    for (const char* type : {"ReLU", "Sigmoid", "TanH"}) {
      auto layer = make_layer<CPU, float>(act_param(type));
      CHECK_THROWS_WITH_AS(layer->setup(ctx, {&x, &z}, {&y}), doctest::Contains("exactly bottoms: 1"), Error);
      CHECK_THROWS_WITH_AS(layer->setup(ctx, {&x}, {&y, &z}), doctest::Contains("exactly tops: 1"), Error);
    }
  }
}

TEST_CASE("Activations follow a bottom that changes shape") {
  Ctx ctx;
  auto x = random_tensor<float>({2, 3});
  Tensor<CPU, float> y;
  SigmoidLayer<CPU, float> sig(act_param("Sigmoid"));
  sig.setup(ctx, {&x}, {&y});
  auto x2 = random_tensor<float>({4, 5, 6});
  sig.forward(ctx, {&x2}, {&y});
  CHECK(y.shape() == Shape{4, 5, 6});
  CHECK(y.data()[119] == doctest::Approx(0.5f * std::tanh(0.5f * x2.data()[119]) + 0.5f));
}
