#include <doctest/doctest.h>
#include <poseidon/layers/concat.hpp>
#include <poseidon/layers/registry.hpp>

#include <vector>

#include "support/layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {
LayerParameter concat_param(Message m, int bottoms = 2) {
  LayerParameter p("cat", "Concat");
  for (int i = 0; i < bottoms; ++i) p.bottom.push_back(std::string(1, static_cast<char>('a' + i)));
  p.top = {"cat"};
  return p.with("concat_param", std::move(m));
}
LayerParameter concat_axis(int axis, int bottoms = 2) { return concat_param(Message().set("axis", axis), bottoms); }

template <class T>
void check_values(const Tensor<CPU, T>& t, const std::vector<double>& want) {
  REQUIRE(t.count() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO("index ", i);
    CHECK(double(t.data()[i]) == doctest::Approx(want[i]));
  }
}
}  // namespace

TEST_CASE_TEMPLATE("Concat forward and backward match a hand computation", T, float, double) {
  auto a = tensor_of<T>({2, 1, 2}, {1, 2, 3, 4});
  auto b = tensor_of<T>({2, 2, 2}, {5, 6, 7, 8, 9, 10, 11, 12});
  Tensor<CPU, T> y;
  Ctx ctx;
  SUBCASE("axis 1 (the default)") {
    ConcatLayer<CPU, T> layer(concat_param(Message()));
    layer.setup(ctx, {&a, &b}, {&y});
    layer.forward(ctx, {&a, &b}, {&y});
    CHECK(y.shape() == Shape{2, 3, 2});
    check_values(y, {1, 2, 5, 6, 7, 8, 3, 4, 9, 10, 11, 12});
    for (std::size_t i = 0; i < y.count(); ++i) y.diff()[i] = static_cast<T>(100 + i);
    layer.backward(ctx, {&y}, {true, true}, {&a, &b});
    CHECK(a.diff_to_host() == std::vector<T>{100, 101, 106, 107});
    CHECK(b.diff_to_host() == std::vector<T>{102, 103, 104, 105, 108, 109, 110, 111});
  }
  SUBCASE("propagate_down false leaves that bottom alone") {
    ConcatLayer<CPU, T> layer(concat_axis(-2));
    layer.setup(ctx, {&a, &b}, {&y});
    layer.forward(ctx, {&a, &b}, {&y});
    a.zero_diff();
    for (auto& d : y.diff_span()) d = T(1);
    layer.backward(ctx, {&y}, {false, true}, {&a, &b});
    for (T d : a.diff_span()) CHECK(d == T(0));
    for (T d : b.diff_span()) CHECK(d == T(1));
  }
  SUBCASE("axis 0, three bottoms, deprecated concat_dim") {
    auto c = tensor_of<T>({1, 1, 2}, {-1, -2});
    auto a2 = tensor_of<T>({2, 1, 2}, {1, 2, 3, 4});
    ConcatLayer<CPU, T> layer(concat_param(Message().set("concat_dim", 0), 3));
    layer.setup(ctx, {&a2, &c, &a}, {&y});
    layer.forward(ctx, {&a2, &c, &a}, {&y});
    CHECK(y.shape() == Shape{5, 1, 2});
    check_values(y, {1, 2, 3, 4, -1, -2, 1, 2, 3, 4});
  }
  SUBCASE("the last axis") {
    auto c = tensor_of<T>({2, 1, 1}, {-1, -2});
    ConcatLayer<CPU, T> layer(concat_axis(2));
    layer.setup(ctx, {&a, &c}, {&y});
    layer.forward(ctx, {&a, &c}, {&y});
    CHECK(y.shape() == Shape{2, 1, 3});
    check_values(y, {1, 2, -1, 3, 4, -2});
  }
}

TEST_CASE_TEMPLATE("Concat of one bottom shares its memory", T, float, double) {
  auto a = random_tensor<T>({2, 3});
  Tensor<CPU, T> y;
  ConcatLayer<CPU, T> layer(concat_axis(1, 1));
  Ctx ctx;
  layer.setup(ctx, {&a}, {&y});
  layer.forward(ctx, {&a}, {&y});
  CHECK(y.data() == a.data());
  CHECK(y.diff() == a.diff());
  CHECK(y.shape() == a.shape());
}

TEST_CASE_TEMPLATE("Concat gradients", T, float, double) {
  SUBCASE("axis 1, three bottoms") {
    auto a = random_tensor<T>({2, 3, 2}, -1, 1, 1);
    auto b = random_tensor<T>({2, 1, 2}, -1, 1, 2);
    auto c = random_tensor<T>({2, 2, 2}, -1, 1, 3);
    Tensor<CPU, T> y;
    ConcatLayer<CPU, T> layer(concat_axis(1, 3));
    expect_gradients(layer, {&a, &b, &c}, {&y});
  }
  SUBCASE("axis 0") {
    auto a = random_tensor<T>({1, 3}, -1, 1, 4);
    auto b = random_tensor<T>({2, 3}, -1, 1, 5);
    Tensor<CPU, T> y;
    ConcatLayer<CPU, T> layer(concat_axis(0));
    expect_gradients(layer, {&a, &b}, {&y});
  }
}

TEST_CASE("Concat rejects mismatched bottoms and bad parameters") {
  Ctx ctx;
  Tensor<CPU, float> y;
  auto a = random_tensor<float>({2, 3, 4});
  SUBCASE("a dimension off the axis differs: names the bottom and the axis") {
    auto b = random_tensor<float>({2, 5, 3});
    ConcatLayer<CPU, float> layer(concat_axis(1));
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&a, &b}, {&y}),
                         doctest::Contains("bottom 1 ('b') of shape (2,5,3) does not match bottom 0 ('a') of shape "
                                           "(2,3,4) outside concat axis 1"),
                         Error);
  }
  SUBCASE("a different number of axes") {
    auto b = random_tensor<float>({2, 3});
    ConcatLayer<CPU, float> layer(concat_axis(1));
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&a, &b}, {&y}), doctest::Contains("bottom 1 ('b') of shape (2,3)"), Error);
  }
  SUBCASE("bottoms change after setup") {
    auto b = random_tensor<float>({2, 1, 4});
    ConcatLayer<CPU, float> layer(concat_axis(1));
    layer.setup(ctx, {&a, &b}, {&y});
    b.reshape({3, 1, 4});
    CHECK_THROWS_WITH_AS(layer.forward(ctx, {&a, &b}, {&y}), doctest::Contains("layer 'cat' (Concat): bottom 1"), Error);
  }
  SUBCASE("axis out of range") {
    ConcatLayer<CPU, float> layer(concat_axis(3));
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&a, &a}, {&y}), doctest::Contains("concat_param axis 3 is out of range"),
                         Error);
  }
  SUBCASE("both axis and concat_dim") {
    CHECK_THROWS_WITH_AS((ConcatLayer<CPU, float>{concat_param(Message().set("axis", 1).set("concat_dim", 1))}),
                         doctest::Contains("either axis or concat_dim"), Error);
  }
  SUBCASE("negative concat_dim") {
    CHECK_THROWS_WITH_AS((ConcatLayer<CPU, float>{concat_param(Message().set("concat_dim", -1))}),
                         doctest::Contains("layer 'cat' (Concat) concat_param: concat_dim -1 is out of range"), Error);
  }
  SUBCASE("no bottoms") {
    ConcatLayer<CPU, float> layer(concat_axis(1));
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {}, {&y}), doctest::Contains("at least bottoms: 1"), Error);
  }
  SUBCASE("in place") {
    ConcatLayer<CPU, float> layer(concat_axis(1));
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&a}, {&a}), doctest::Contains("cannot run in place"), Error);
  }
}

TEST_CASE("Concat is created by the registry") { CHECK(make_layer<CPU, float>(concat_axis(1))->type() == "Concat"); }
