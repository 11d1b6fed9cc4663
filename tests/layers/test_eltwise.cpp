#include <doctest/doctest.h>
#include <poseidon/layers/eltwise.hpp>
#include <poseidon/layers/registry.hpp>

#include <optional>
#include <string>
#include <vector>

#include "support/layer_params.hpp"
#include "support/layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {
template <class T>
void check_values(const std::vector<T>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO("index ", i);
    CHECK(double(got[i]) == doctest::Approx(want[i]));
  }
}

/// Three bottoms whose values at every element are at least 0.3 apart, in a varying order,
/// so that a finite-difference step never changes which one is the maximum.
template <class T>
std::vector<Tensor<CPU, T>> separated(const Shape& s) {
  std::vector<Tensor<CPU, T>> b;
  for (int k = 0; k < 3; ++k) b.emplace_back(s);  // not vector(3, t): copies of a Tensor share memory
  Rng r(5);
  for (std::size_t i = 0; i < b[0].count(); ++i) {
    const int order = static_cast<int>(r.uniform<double>(0, 6)) % 6;
    static const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    const double base = r.uniform<double>(-1, 1);
    for (int k = 0; k < 3; ++k)
      b[static_cast<std::size_t>(k)].data()[i] = static_cast<T>(base + 0.3 * perms[order][k] + r.uniform<double>(0, 0.05));
  }
  return b;
}
}  // namespace

TEST_CASE_TEMPLATE("Eltwise SUM, PROD and MAX match a hand computation", T, float, double) {
  auto a = tensor_of<T>({2, 2}, {1, -2, 3, 0});
  auto b = tensor_of<T>({2, 2}, {4, 5, -6, 0});
  auto c = tensor_of<T>({2, 2}, {2, 6, 3, -1});
  Tensor<CPU, T> y;
  Ctx ctx;
  auto run = [&](const LayerParameter& p, std::vector<Tensor<CPU, T>*> bottom, std::vector<bool> down) {
    EltwiseLayer<CPU, T> layer(p);
    layer.setup(ctx, bottom, {&y});
    layer.forward(ctx, bottom, {&y});
    y.copy_diff_from_host(std::vector<T>{1, 2, 3, 4});
    for (auto* t : bottom) t->zero_diff();
    layer.backward(ctx, {&y}, down, bottom);
  };
  SUBCASE("SUM (default operation)") {
    LayerParameter p("elt", "Eltwise");
    run(p, {&a, &b}, {true, true});
    check_values(y.data_to_host(), {5, 3, -3, 0});
    check_values(a.diff_to_host(), {1, 2, 3, 4});
    check_values(b.diff_to_host(), {1, 2, 3, 4});
  }
  SUBCASE("SUM with coeff") {
    run(eltwise_param("SUM", {1, -1, 0.5}, 3), {&a, &b, &c}, {true, false, true});
    check_values(y.data_to_host(), {-2, -4, 10.5, -0.5});
    check_values(a.diff_to_host(), {1, 2, 3, 4});
    check_values(b.diff_to_host(), {0, 0, 0, 0});  // not propagated
    check_values(c.diff_to_host(), {0.5, 1, 1.5, 2});
  }
  SUBCASE("PROD, stable gradient exact at zeros") {
    run(eltwise_param("PROD", {}, 3), {&a, &b, &c}, {true, true, true});
    check_values(y.data_to_host(), {8, -60, -54, 0});
    check_values(a.diff_to_host(), {8, 60, -54, 0});    // dy * b * c
    check_values(b.diff_to_host(), {2, -24, 27, 0});    // dy * a * c
    check_values(c.diff_to_host(), {4, -20, -54, 0});   // dy * a * b
  }
  SUBCASE("PROD, unstable gradient divides the top") {
    auto a2 = tensor_of<T>({2, 2}, {1, -2, 3, 0.5});
    run(eltwise_param("PROD", {}, 2, false), {&a2, &c}, {true, true});
    check_values(y.data_to_host(), {2, -12, 9, -0.5});
    check_values(a2.diff_to_host(), {2, 12, 9, -4});
    check_values(c.diff_to_host(), {1, -4, 9, 2});
  }
  SUBCASE("MAX routes each gradient to the winner; ties as in Caffe") {
    auto t0 = tensor_of<T>({2, 2}, {1, 5, 3, 2});
    auto t1 = tensor_of<T>({2, 2}, {1, 4, 3, 7});  // ties with t0 at 0 and 2: bottom 1 wins
    auto t2 = tensor_of<T>({2, 2}, {1, 6, 0, 7});  // ties with the max at 0 and 3: the earlier keeps it
    run(eltwise_param("MAX", {}, 3), {&t0, &t1, &t2}, {true, true, true});
    check_values(y.data_to_host(), {1, 6, 3, 7});
    check_values(t0.diff_to_host(), {0, 0, 0, 0});
    check_values(t1.diff_to_host(), {1, 0, 3, 4});
    check_values(t2.diff_to_host(), {0, 2, 0, 0});
  }
}

TEST_CASE_TEMPLATE("Eltwise gradients", T, float, double) {
  SUBCASE("SUM") {
    auto a = random_tensor<T>({2, 3, 2}, -1, 1, 1);
    auto b = random_tensor<T>({2, 3, 2}, -1, 1, 2);
    Tensor<CPU, T> y;
    EltwiseLayer<CPU, T> layer(eltwise_param("SUM"));
    expect_gradients(layer, {&a, &b}, {&y});
  }
  SUBCASE("SUM with coeff, three bottoms") {
    auto a = random_tensor<T>({2, 3}, -1, 1, 1);
    auto b = random_tensor<T>({2, 3}, -1, 1, 2);
    auto c = random_tensor<T>({2, 3}, -1, 1, 3);
    Tensor<CPU, T> y;
    EltwiseLayer<CPU, T> layer(eltwise_param("SUM", {2, -0.5, 1}, 3));
    expect_gradients(layer, {&a, &b, &c}, {&y});
  }
  SUBCASE("PROD, stable and dividing gradients") {
    for (bool stable : {true, false}) {
      CAPTURE(stable);
      auto a = random_tensor<T>({2, 3}, 0.5, 1.5, 4);  // away from 0 for the dividing gradient
      auto b = random_tensor<T>({2, 3}, -1.5, -0.5, 5);
      auto c = random_tensor<T>({2, 3}, 0.5, 1.5, 6);
      Tensor<CPU, T> y;
      EltwiseLayer<CPU, T> layer(eltwise_param("PROD", {}, 3, stable));
      expect_gradients(layer, {&a, &b, &c}, {&y});
    }
  }
  SUBCASE("MAX with well-separated inputs") {
    auto b = separated<T>({3, 4});
    Tensor<CPU, T> y;
    EltwiseLayer<CPU, T> layer(eltwise_param("MAX", {}, 3));
    expect_gradients(layer, {&b[0], &b[1], &b[2]}, {&y});
  }
}

TEST_CASE("Eltwise rejects bad parameters and shapes") {
  Ctx ctx;
  auto a = random_tensor<float>({2, 3});
  auto b = random_tensor<float>({2, 3});
  Tensor<CPU, float> y;
  SUBCASE("coeff count differs from the bottom count") {
    EltwiseLayer<CPU, float> layer(eltwise_param("SUM", {1, 2, 3}));
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&a, &b}, {&y}),
                         doctest::Contains("layer 'elt' (Eltwise): eltwise_param has 3 coeff values for 2 bottoms"),
                         Error);
  }
  SUBCASE("coeff with PROD") {
    EltwiseLayer<CPU, float> layer(eltwise_param("PROD", {1, 2}));
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&a, &b}, {&y}), doctest::Contains("coeff is only for SUM, not PROD"), Error);
  }
  SUBCASE("shapes differ: both are named") {
    auto c = random_tensor<float>({3, 2});
    EltwiseLayer<CPU, float> layer(eltwise_param("MAX"));
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&a, &c}, {&y}),
                         doctest::Contains("bottom 1 ('b1') has shape (3,2) but bottom 0 ('b0') has shape (2,3)"), Error);
  }
  SUBCASE("one bottom") {
    EltwiseLayer<CPU, float> layer(eltwise_param("SUM", {}, 1));
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&a}, {&y}), doctest::Contains("at least bottoms: 2"), Error);
  }
  SUBCASE("unknown operation") {
    CHECK_THROWS_WITH_AS((EltwiseLayer<CPU, float>{eltwise_param("MIN")}), doctest::Contains("'operation' has value 'MIN'"),
                         Error);
  }
}

TEST_CASE("Eltwise is created by the registry") { CHECK(make_layer<CPU, float>(eltwise_param("MAX"))->type() == "Eltwise"); }
