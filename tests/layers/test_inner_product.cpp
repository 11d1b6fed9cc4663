#include <doctest/doctest.h>
#include <poseidon/layers/inner_product.hpp>

#include "support/layer_params.hpp"
#include "support/layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

TEST_CASE_TEMPLATE("InnerProduct forward matches a hand computation", T, float, double) {
  auto x = tensor_of<T>({2, 3}, {1, 2, 3, -1, 0, 2});
  Tensor<CPU, T> y;
  InnerProductLayer<CPU, T> ip(ip_param(2));
  Ctx ctx;
  ip.setup(ctx, {&x}, {&y});
  // W = [[1, 0, -1], [2, 1, 0]], b = [0.5, -1]
  ip.blobs()[0]->copy_data_from_host(std::vector<T>{1, 0, -1, 2, 1, 0});
  ip.blobs()[1]->copy_data_from_host(std::vector<T>{0.5, -1});
  ip.forward(ctx, {&x}, {&y});
  REQUIRE(y.shape() == Shape{2, 2});
  CHECK(y.data()[0] == doctest::Approx(1 - 3 + 0.5));
  CHECK(y.data()[1] == doctest::Approx(2 + 2 - 1));
  CHECK(y.data()[2] == doctest::Approx(-1 - 2 + 0.5));
  CHECK(y.data()[3] == doctest::Approx(-2 + 0 - 1));
}

TEST_CASE_TEMPLATE("InnerProduct gradients", T, float, double) {
  SUBCASE("plain") {
    auto x = random_tensor<T>({3, 2, 2, 2});
    Tensor<CPU, T> y;
    InnerProductLayer<CPU, T> ip(ip_param(4));
    expect_gradients(ip, {&x}, {&y});
  }
  SUBCASE("transposed weights, no bias") {
    auto x = random_tensor<T>({3, 5});
    Tensor<CPU, T> y;
    InnerProductLayer<CPU, T> ip(ip_param(4, false, true));
    expect_gradients(ip, {&x}, {&y});
  }
  SUBCASE("axis 2") {
    auto x = random_tensor<T>({2, 3, 4});
    Tensor<CPU, T> y;
    InnerProductLayer<CPU, T> ip(ip_param(3, true, false, 2));
    Ctx ctx;
    expect_gradients(ip, {&x}, {&y});
    CHECK(y.shape() == Shape{2, 3, 3});
  }
}

TEST_CASE_TEMPLATE("InnerProduct sufficient factors rebuild the weight gradient", T, float, double) {
  for (bool transpose : {false, true}) {
    auto x = random_tensor<T>({5, 7}, -1, 1, 3);
    Tensor<CPU, T> y;
    InnerProductLayer<CPU, T> ip(ip_param(4, true, transpose));
    Ctx ctx;
    ip.setup(ctx, {&x}, {&y});
    ip.forward(ctx, {&x}, {&y});
    auto dy = random_tensor<T>({5, 4}, -1, 1, 9);
    y.copy_diff_from_host(dy.data_span());
    ip.blobs()[0]->zero_diff();
    ip.backward(ctx, {&y}, {false}, {&x});
    const auto expected = ip.blobs()[0]->diff_to_host();

    auto f = ip.sufficient_factors({&x}, {&y});
    CHECK(f.M == 5);
    CHECK(f.u == y.diff());  // pointers into the layer's tensors, not copies
    CHECK(f.v == x.data());
    std::vector<T> rebuilt(expected.size(), T(0));
    accumulate_weight_gradient(ctx, f, rebuilt.data());
    // An independent sum over samples: dW[n][k] = sum_m u[m][n] v[m][k].
    for (int n = 0; n < 4; ++n)
      for (int k = 0; k < 7; ++k) {
        double s = 0;
        for (int m = 0; m < 5; ++m) s += double(f.u[m * 4 + n]) * double(f.v[m * 7 + k]);
        const std::size_t idx = transpose ? std::size_t(k * 4 + n) : std::size_t(n * 7 + k);
        CHECK(double(rebuilt[idx]) == doctest::Approx(s).epsilon(1e-5));
        CHECK(double(expected[idx]) == doctest::Approx(s).epsilon(1e-5));
      }
  }
}

TEST_CASE("InnerProduct rejects bad configuration") {
  Ctx ctx;
  auto x = random_tensor<float>({2, 3});
  Tensor<CPU, float> y;
  SUBCASE("zero num_output") {
    InnerProductLayer<CPU, float> ip(ip_param(0));
    CHECK_THROWS_WITH_AS(ip.setup(ctx, {&x}, {&y}), doctest::Contains("num_output must be positive"), Error);
  }
  SUBCASE("missing num_output names the layer") {
    LayerParameter p("fc9", "InnerProduct");
    p.with("inner_product_param", Message());
    CHECK_THROWS_WITH_AS((InnerProductLayer<CPU, float>{p}), doctest::Contains("fc9"), Error);
  }
  SUBCASE("input size changes after setup") {
    InnerProductLayer<CPU, float> ip(ip_param(2));
    ip.setup(ctx, {&x}, {&y});
    auto x2 = random_tensor<float>({2, 4});
    CHECK_THROWS_WITH_AS(ip.forward(ctx, {&x2}, {&y}), doctest::Contains("the weights expect 3"), Error);
  }
  SUBCASE("wrong bottom count") {
    InnerProductLayer<CPU, float> ip(ip_param(2));
    CHECK_THROWS_WITH_AS(ip.setup(ctx, {&x, &x}, {&y}), doctest::Contains("exactly bottoms: 1"), Error);
  }
  SUBCASE("unknown field") {
    LayerParameter p = ip_param(2);
    Message m;
    m.set("num_output", 2).set("num_outputs", 3);
    p.message = Message();
    p.with("inner_product_param", m);
    CHECK_THROWS_WITH_AS((InnerProductLayer<CPU, float>{p}), doctest::Contains("unknown field 'num_outputs'"), Error);
  }
}

static_assert(layer<InnerProductLayer<CPU, float>>);
static_assert(layer<Layer<CPU, double>>);
static_assert(!layer<Tensor<CPU, float>>);

TEST_CASE("InnerProduct is created by the registry") {
  auto layer = make_layer<CPU, float>(ip_param(3));
  CHECK(layer->type() == "InnerProduct");
  LayerParameter bad("x", "NoSuchLayer");
  CHECK_THROWS_WITH_AS(((void)make_layer<CPU, float>(bad)), doctest::Contains("unknown layer type 'NoSuchLayer'"), Error);
}
