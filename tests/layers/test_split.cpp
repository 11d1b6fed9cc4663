#include <doctest/doctest.h>
#include <poseidon/layers/registry.hpp>
#include <poseidon/layers/split.hpp>

#include <vector>

#include "support/layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {
LayerParameter split_param(int tops) {
  LayerParameter p("split", "Split");
  p.bottom = {"x"};
  for (int i = 0; i < tops; ++i) p.top.push_back("x_" + std::to_string(i));
  return p;
}
}  // namespace

TEST_CASE_TEMPLATE("Split tops share the bottom's data and backward sums their diffs", T, float, double) {
  auto x = tensor_of<T>({2, 2}, {1, 2, 3, 4});
  Tensor<CPU, T> t0, t1, t2;
  SplitLayer<CPU, T> layer(split_param(3));
  Ctx ctx;
  layer.setup(ctx, {&x}, {&t0, &t1, &t2});
  layer.forward(ctx, {&x}, {&t0, &t1, &t2});
  for (auto* t : {&t0, &t1, &t2}) {
    CHECK(t->shape() == x.shape());
    CHECK(t->data() == x.data());  // no copy
    CHECK(t->diff() != x.diff());  // each consumer writes its own gradient
  }
  CHECK(t2.data_to_host() == std::vector<T>{1, 2, 3, 4});
  t0.copy_diff_from_host(std::vector<T>{1, 2, 3, 4});
  t1.copy_diff_from_host(std::vector<T>{10, 20, 30, 40});
  t2.copy_diff_from_host(std::vector<T>{100, 200, 300, 400});
  layer.backward(ctx, {&t0, &t1, &t2}, {true}, {&x});
  CHECK(x.diff_to_host() == std::vector<T>{111, 222, 333, 444});

  SUBCASE("one top copies its diff") {
    SplitLayer<CPU, T> one(split_param(1));
    one.setup(ctx, {&x}, {&t0});
    one.backward(ctx, {&t0}, {true}, {&x});
    CHECK(x.diff_to_host() == std::vector<T>{1, 2, 3, 4});
  }
  SUBCASE("the tops follow a bottom that grows") {
    x.reshape({3, 4});
    for (std::size_t i = 0; i < x.count(); ++i) x.data()[i] = static_cast<T>(i);
    layer.forward(ctx, {&x}, {&t0, &t1, &t2});
    CHECK(t1.shape() == Shape{3, 4});
    CHECK(t1.data() == x.data());
    CHECK(t1.data()[11] == T(11));
  }
}

TEST_CASE_TEMPLATE("Split gradients", T, float, double) {
  for (int tops : {1, 2, 3}) {
    CAPTURE(tops);
    auto x = random_tensor<T>({2, 3, 2});
    std::vector<Tensor<CPU, T>> t(static_cast<std::size_t>(tops));
    std::vector<Tensor<CPU, T>*> tp;
    for (auto& ti : t) tp.push_back(&ti);
    SplitLayer<CPU, T> layer(split_param(tops));
    expect_gradients(layer, {&x}, tp);
  }
}

TEST_CASE("Split rejects in-place use and bad blob counts") {
  Ctx ctx;
  auto x = random_tensor<float>({2, 3});
  Tensor<CPU, float> t;
  SplitLayer<CPU, float> layer(split_param(2));
  CHECK_THROWS_WITH_AS(layer.setup(ctx, {&x}, {&t, &x}), doctest::Contains("layer 'split' (Split): top 'x_1' is also a bottom"),
                       Error);
  CHECK_THROWS_WITH_AS(layer.setup(ctx, {&x}, {}), doctest::Contains("at least tops: 1"), Error);
  CHECK_THROWS_WITH_AS(layer.setup(ctx, {&x, &x}, {&t}), doctest::Contains("exactly bottoms: 1"), Error);
}

TEST_CASE("Split is created by the registry") { CHECK(make_layer<CPU, float>(split_param(2))->type() == "Split"); }
