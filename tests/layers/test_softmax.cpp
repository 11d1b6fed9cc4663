#include <doctest/doctest.h>
#include <poseidon/layers/registry.hpp>
#include <poseidon/layers/softmax.hpp>

#include <cmath>
#include <vector>

#include "support/layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {
LayerParameter softmax_param(int axis = 1) {
  LayerParameter p("prob", "Softmax");
  p.bottom = {"x"};
  p.top = {"p"};
  return p.with("softmax_param", Message().set("axis", axis));
}

template <class T>
void check_close(const std::vector<T>& got, const std::vector<double>& want, double eps = 1e-5) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO("index ", i);
    CHECK(static_cast<double>(got[i]) == doctest::Approx(want[i]).epsilon(eps));
  }
}

constexpr double p0 = 0.09003057317038046, p1 = 0.24472847105479767, p2 = 0.6652409557748219;  // softmax(1, 2, 3)
}  // namespace

TEST_CASE_TEMPLATE("Softmax forward matches a hand computation and is stable for large inputs", T, float, double) {
  auto x = tensor_of<T>({3, 3}, {1, 2, 3, 1000, 1001, 1002, -1002, -1001, -1000});
  Tensor<CPU, T> y;
  SoftmaxLayer<CPU, T> sm(softmax_param());
  Ctx ctx;
  sm.setup(ctx, {&x}, {&y});
  sm.forward(ctx, {&x}, {&y});
  check_close(y.data_to_host(), {p0, p1, p2, p0, p1, p2, p0, p1, p2});
}

TEST_CASE_TEMPLATE("Softmax runs over the axis with the inner dimensions kept apart", T, float, double) {
  // (1, 2, 2): distribution k = 0 is (0, ln 3) -> (1/4, 3/4); k = 1 is (1, 1) -> (1/2, 1/2).
  auto x = tensor_of<T>({1, 2, 2}, {0, 1, std::log(3.0), 1});
  Tensor<CPU, T> y;
  SoftmaxLayer<CPU, T> sm(softmax_param(1));
  Ctx ctx;
  sm.setup(ctx, {&x}, {&y});
  sm.forward(ctx, {&x}, {&y});
  check_close(y.data_to_host(), {0.25, 0.5, 0.75, 0.5});

  SUBCASE("every axis sums to one along itself") {
    auto x4 = random_tensor<T>({2, 3, 4, 5}, -3, 3);
    for (int axis : {0, 1, 2, -1}) {
      CAPTURE(axis);
      Tensor<CPU, T> p;
      SoftmaxLayer<CPU, T> layer(softmax_param(axis));
      layer.setup(ctx, {&x4}, {&p});
      layer.forward(ctx, {&x4}, {&p});
      const int a = layer.axis();
      const auto& dims = x4.shape().dims();
      const std::size_t outer = x4.count(0, a), ch = static_cast<std::size_t>(dims[std::size_t(a)]),
                        inner = x4.count(a + 1);
      for (std::size_t n = 0; n < outer; ++n)
        for (std::size_t k = 0; k < inner; ++k) {
          double s = 0;
          for (std::size_t c = 0; c < ch; ++c) s += double(p.data()[(n * ch + c) * inner + k]);
          CHECK(s == doctest::Approx(1.0).epsilon(1e-5));
        }
    }
  }
}

TEST_CASE_TEMPLATE("Softmax backward matches a hand computation", T, float, double) {
  auto x = tensor_of<T>({1, 3}, {1, 2, 3});
  Tensor<CPU, T> y;
  SoftmaxLayer<CPU, T> sm(softmax_param());
  Ctx ctx;
  sm.setup(ctx, {&x}, {&y});
  sm.forward(ctx, {&x}, {&y});
  y.copy_diff_from_host(std::vector<T>{1, 0, 0});
  sm.backward(ctx, {&y}, {true}, {&x});
  // dx = (dy - <dy, y>) * y
  check_close(x.diff_to_host(), {(1 - p0) * p0, -p0 * p1, -p0 * p2});
}

TEST_CASE_TEMPLATE("Softmax gradients", T, float, double) {
  for (int axis : {1, -1, 0}) {
    CAPTURE(axis);
    auto x = random_tensor<T>({2, 3, 2, 2}, -2, 2);
    Tensor<CPU, T> y;
    SoftmaxLayer<CPU, T> sm(softmax_param(axis));
    expect_gradients(sm, {&x}, {&y});
  }
}

TEST_CASE_TEMPLATE("Softmax in place matches out of place", T, float, double) {
  const Shape s{3, 4, 5};
  auto x = random_tensor<T>(s, -2, 2, 5);
  auto dy = random_tensor<T>(s, -1, 1, 6);
  Tensor<CPU, T> y;
  Ctx ctx;
  SoftmaxLayer<CPU, T> out(softmax_param());
  out.setup(ctx, {&x}, {&y});
  out.forward(ctx, {&x}, {&y});
  y.copy_diff_from_host(dy.data_span());
  out.backward(ctx, {&y}, {true}, {&x});

  auto xi = random_tensor<T>(s, -2, 2, 5);
  SoftmaxLayer<CPU, T> in(softmax_param());
  in.setup(ctx, {&xi}, {&xi});
  in.forward(ctx, {&xi}, {&xi});
  CHECK(xi.data_to_host() == y.data_to_host());
  xi.copy_diff_from_host(dy.data_span());
  in.backward(ctx, {&xi}, {true}, {&xi});
  CHECK(xi.diff_to_host() == x.diff_to_host());
}

TEST_CASE("Softmax handles an empty softmax axis without touching memory") {
  Tensor<CPU, float> x{Shape{2, 0, 3}}, y;
  SoftmaxLayer<CPU, float> sm(softmax_param());
  Ctx ctx;
  sm.setup(ctx, {&x}, {&y});
  sm.forward(ctx, {&x}, {&y});
  sm.backward(ctx, {&y}, {true}, {&x});
  CHECK(y.count() == 0);
}

TEST_CASE("Softmax rejects bad configuration") {
  Ctx ctx;
  auto x = random_tensor<float>({2, 3, 4});
  Tensor<CPU, float> y;
  SUBCASE("axis out of range") {
    for (int axis : {3, -4}) {
      SoftmaxLayer<CPU, float> sm(softmax_param(axis));
      CHECK_THROWS_WITH_AS(sm.setup(ctx, {&x}, {&y}),
                           doctest::Contains("layer 'prob' (Softmax): softmax_param axis"), Error);
    }
  }
  SUBCASE("bottom loses axes after setup") {
    SoftmaxLayer<CPU, float> sm(softmax_param(2));
    sm.setup(ctx, {&x}, {&y});
    auto x2 = random_tensor<float>({6, 4});
    CHECK_THROWS_WITH_AS(sm.forward(ctx, {&x2}, {&y}), doctest::Contains("axis 2 is out of range for bottom 'x'"),
                         Error);
  }
  SUBCASE("unknown field") {
    LayerParameter p("prob", "Softmax");
    p.with("softmax_param", Message().set("dim", 1));
    CHECK_THROWS_WITH_AS((SoftmaxLayer<CPU, float>{p}), doctest::Contains("unknown field 'dim'"), Error);
  }
  SUBCASE("blob counts") {
    SoftmaxLayer<CPU, float> sm(softmax_param());
    CHECK_THROWS_WITH_AS(sm.setup(ctx, {&x}, {}), doctest::Contains("exactly tops: 1"), Error);
  }
  SUBCASE("registry") {
    auto layer = make_layer<CPU, double>(softmax_param());
    CHECK(layer->type() == "Softmax");
  }
}
