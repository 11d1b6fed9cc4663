#include <doctest/doctest.h>
#include <poseidon/layers/batch_norm.hpp>
#include <poseidon/layers/registry.hpp>

#include <cmath>
#include <optional>
#include <vector>

#include "support/layer_params.hpp"
#include "support/layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {
// (N, C, 1, S) = (2, 2, 1, 2): channel 0 holds 1, 2, 3, 6 (mean 3, variance 14/4),
// channel 1 holds 10, 20, 30, 40 (mean 25, variance 500/4).
template <class T>
Tensor<CPU, T> sample() {
  return tensor_of<T>({2, 2, 1, 2}, {1, 2, 10, 20, 3, 6, 30, 40});
}

template <class T>
void check_close(const std::vector<T>& got, const std::vector<double>& want, double eps = 1e-5) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO("index ", i);
    CHECK(static_cast<double>(got[i]) == doctest::Approx(want[i]).epsilon(eps));
  }
}

template <class T>
void set_stats(BatchNormLayer<CPU, T>& bn, std::vector<T> mean_sum, std::vector<T> var_sum, T factor) {
  bn.blobs()[0]->copy_data_from_host(mean_sum);
  bn.blobs()[1]->copy_data_from_host(var_sum);
  bn.blobs()[2]->copy_data_from_host(std::vector<T>{factor});
}
}  // namespace

TEST_CASE_TEMPLATE("BatchNorm TRAIN forward normalises each channel with the batch statistics", T, float, double) {
  auto x = sample<T>();
  Tensor<CPU, T> y;
  BatchNormLayer<CPU, T> bn(bn_param(Phase::train, std::nullopt, 0.9));
  Ctx ctx;
  bn.setup(ctx, {&x}, {&y});
  CHECK_FALSE(bn.use_global_stats());
  bn.forward(ctx, {&x}, {&y});
  const double s0 = std::sqrt(3.5 + 1e-5), s1 = std::sqrt(125 + 1e-5);
  check_close(y.data_to_host(), {-2 / s0, -1 / s0, -15 / s1, -5 / s1, 0 / s0, 3 / s0, 5 / s1, 15 / s1});

  // Running statistics, Caffe's way: sums weighted by the fraction, the variance unbiased (m = 4).
  check_close(bn.blobs()[0]->data_to_host(), {3, 25});
  check_close(bn.blobs()[1]->data_to_host(), {3.5 * 4 / 3, 125.0 * 4 / 3});
  check_close(bn.blobs()[2]->data_to_host(), {1});
  bn.forward(ctx, {&x}, {&y});
  check_close(bn.blobs()[0]->data_to_host(), {3 * 1.9, 25 * 1.9});
  check_close(bn.blobs()[1]->data_to_host(), {3.5 * 4 / 3 * 1.9, 125.0 * 4 / 3 * 1.9});
  check_close(bn.blobs()[2]->data_to_host(), {1.9});
}

TEST_CASE_TEMPLATE("BatchNorm with global statistics uses the stored sums divided by the factor", T, float, double) {
  auto x = sample<T>();
  Tensor<CPU, T> y;
  BatchNormLayer<CPU, T> bn(bn_param(Phase::test));  // TEST: global statistics by default
  Ctx ctx;
  bn.setup(ctx, {&x}, {&y});
  CHECK(bn.use_global_stats());
  // mean = (1, 20), variance = (4, 100) once divided by the factor 2.
  set_stats<T>(bn, {2, 40}, {8, 200}, T(2));
  bn.forward(ctx, {&x}, {&y});
  const double s0 = std::sqrt(4 + 1e-5), s1 = std::sqrt(100 + 1e-5);
  check_close(y.data_to_host(), {0, 1 / s0, -10 / s1, 0, 2 / s0, 5 / s0, 10 / s1, 20 / s1});
  // The stored statistics are not touched, and backward is the plain scaling by 1/std.
  check_close(bn.blobs()[2]->data_to_host(), {2});
  std::vector<T> ones(8, T(1));
  y.copy_diff_from_host(ones);
  bn.backward(ctx, {&y}, {true}, {&x});
  check_close(x.diff_to_host(), {1 / s0, 1 / s0, 1 / s1, 1 / s1, 1 / s0, 1 / s0, 1 / s1, 1 / s1});

  SUBCASE("a zero factor means no statistics yet: mean and variance 0") {
    set_stats<T>(bn, {5, 5}, {5, 5}, T(0));
    bn.forward(ctx, {&x}, {&y});
    CHECK(double(y.data()[7]) == doctest::Approx(40 / std::sqrt(1e-5)).epsilon(1e-5));
  }
}

TEST_CASE_TEMPLATE("BatchNorm statistics are state, not learnable parameters", T, float, double) {
  auto x = random_tensor<T>({3, 2, 2});
  Tensor<CPU, T> y;
  BatchNormLayer<CPU, T> bn(bn_param());
  Ctx ctx;
  bn.setup(ctx, {&x}, {&y});
  REQUIRE(bn.blobs().size() == 3);
  CHECK(bn.blobs()[0]->shape() == Shape{2});
  CHECK(bn.blobs()[1]->shape() == Shape{2});
  CHECK(bn.blobs()[2]->shape() == Shape{1});
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK_FALSE(bn.param_propagate_down(i));
    CHECK(bn.param_spec(i).lr_mult == 0.0f);
    std::vector<T> sentinel(bn.blobs()[i]->count(), T(7));
    bn.blobs()[i]->copy_diff_from_host(sentinel);
  }
  bn.forward(ctx, {&x}, {&y});
  std::vector<T> ones(y.count(), T(1));
  y.copy_diff_from_host(ones);
  bn.backward(ctx, {&y}, {true}, {&x});
  for (std::size_t i = 0; i < 3; ++i)
    for (T d : bn.blobs()[i]->diff_to_host()) CHECK(d == T(7));
}

TEST_CASE_TEMPLATE("BatchNorm use_global_stats follows the phase unless set", T, float, double) {
  auto x = random_tensor<T>({2, 3});
  Tensor<CPU, T> y;
  Ctx ctx;
  BatchNormLayer<CPU, T> test_default(bn_param(Phase::test));
  test_default.setup(ctx, {&x}, {&y});
  CHECK(test_default.use_global_stats());
  BatchNormLayer<CPU, T> test_batch(bn_param(Phase::test, false));
  test_batch.setup(ctx, {&x}, {&y});
  CHECK_FALSE(test_batch.use_global_stats());
  BatchNormLayer<CPU, T> train_global(bn_param(Phase::train, true));
  train_global.setup(ctx, {&x}, {&y});
  CHECK(train_global.use_global_stats());
}

TEST_CASE_TEMPLATE("BatchNorm gradients", T, float, double) {
  SUBCASE("batch statistics, 4-d") {
    auto x = random_tensor<T>({3, 2, 2, 3}, -2, 2);
    Tensor<CPU, T> y;
    BatchNormLayer<CPU, T> bn(bn_param(Phase::train, false));
    expect_gradients_with(bn, {&x}, {&y}, [](auto& o) { o.check_params = false; });
  }
  SUBCASE("batch statistics, 2-d") {
    auto x = random_tensor<T>({5, 3}, -1, 3);
    Tensor<CPU, T> y;
    BatchNormLayer<CPU, T> bn(bn_param(Phase::train, false));
    expect_gradients_with(bn, {&x}, {&y}, [](auto& o) { o.check_params = false; });
  }
  SUBCASE("global statistics") {
    auto x = random_tensor<T>({2, 3, 4}, -2, 2);
    Tensor<CPU, T> y;
    BatchNormLayer<CPU, T> bn(bn_param(Phase::train, true));
    Ctx ctx;
    bn.setup(ctx, {&x}, {&y});
    set_stats<T>(bn, {T(0.5), T(-1), T(2)}, {T(3), T(0.5), T(8)}, T(2));
    expect_gradients_with(bn, {&x}, {&y}, [](auto& o) { o.check_params = false; });
  }
}

TEST_CASE_TEMPLATE("BatchNorm in place matches out of place", T, float, double) {
  for (bool global : {false, true}) {
    CAPTURE(global);
    const Shape s{4, 3, 2, 2};
    auto x = random_tensor<T>(s, -2, 2, 5);
    auto dy = random_tensor<T>(s, -1, 1, 6);
    Tensor<CPU, T> y;
    Ctx ctx;
    BatchNormLayer<CPU, T> out(bn_param(Phase::train, global));
    out.setup(ctx, {&x}, {&y});
    set_stats<T>(out, {1, 2, 3}, {2, 2, 2}, T(1.5));
    out.forward(ctx, {&x}, {&y});
    y.copy_diff_from_host(dy.data_span());
    out.backward(ctx, {&y}, {true}, {&x});

    auto xi = random_tensor<T>(s, -2, 2, 5);
    BatchNormLayer<CPU, T> in(bn_param(Phase::train, global));
    in.setup(ctx, {&xi}, {&xi});
    set_stats<T>(in, {1, 2, 3}, {2, 2, 2}, T(1.5));
    in.forward(ctx, {&xi}, {&xi});
    CHECK(xi.data_to_host() == y.data_to_host());
    // A following in-place layer (Scale) overwrites the top data: backward must not depend on it.
    std::vector<T> junk(xi.count(), T(42));
    xi.copy_data_from_host(junk);
    xi.copy_diff_from_host(dy.data_span());
    in.backward(ctx, {&xi}, {true}, {&xi});
    CHECK(xi.diff_to_host() == x.diff_to_host());
    for (std::size_t i = 0; i < 3; ++i) CHECK(in.blobs()[i]->data_to_host() == out.blobs()[i]->data_to_host());
  }
}

TEST_CASE_TEMPLATE("BatchNorm on a 1-d bottom normalises over the batch", T, float, double) {
  auto x = tensor_of<T>({4}, {1, 2, 3, 6});
  Tensor<CPU, T> y;
  BatchNormLayer<CPU, T> bn(bn_param());
  Ctx ctx;
  bn.setup(ctx, {&x}, {&y});
  bn.forward(ctx, {&x}, {&y});
  const double s = std::sqrt(3.5 + 1e-5);
  check_close(y.data_to_host(), {-2 / s, -1 / s, 0, 3 / s});
}

TEST_CASE("BatchNorm rejects bad configuration and input") {
  Ctx ctx;
  auto x = random_tensor<float>({2, 3, 4});
  Tensor<CPU, float> y;
  SUBCASE("eps") {
    for (double eps : {0.0, -1e-3}) {
      BatchNormLayer<CPU, float> bn(bn_param(Phase::train, std::nullopt, 0.999, eps));
      CHECK_THROWS_WITH_AS(bn.setup(ctx, {&x}, {&y}),
                           doctest::Contains("layer 'bn' (BatchNorm): batch_norm_param eps must be positive"), Error);
    }
  }
  SUBCASE("moving_average_fraction") {
    BatchNormLayer<CPU, float> bn(bn_param(Phase::train, std::nullopt, 1.5));
    CHECK_THROWS_WITH_AS(bn.setup(ctx, {&x}, {&y}), doctest::Contains("moving_average_fraction must be in [0, 1]"),
                         Error);
  }
  SUBCASE("a learnable rate on the statistics") {
    LayerParameter p = bn_param();
    p.param = {ParamSpec{"", 0.0f, 0.0f}, ParamSpec{"", 1.0f, 1.0f}};
    BatchNormLayer<CPU, float> bn(p);
    CHECK_THROWS_WITH_AS(bn.setup(ctx, {&x}, {&y}), doctest::Contains("param 1 has lr_mult 1"), Error);
  }
  SUBCASE("channel count changes after setup") {
    BatchNormLayer<CPU, float> bn(bn_param());
    bn.setup(ctx, {&x}, {&y});
    auto x2 = random_tensor<float>({2, 5, 4});
    CHECK_THROWS_WITH_AS(bn.forward(ctx, {&x2}, {&y}), doctest::Contains("has 5 channels; the layer was set up for 3"),
                         Error);
  }
  SUBCASE("a bottom without axes") {
    Tensor<CPU, float> scalar{Shape{}};
    BatchNormLayer<CPU, float> bn(bn_param());
    CHECK_THROWS_WITH_AS(bn.setup(ctx, {&scalar}, {&y}), doctest::Contains("layer 'bn' (BatchNorm): bottom 0 ('x')"),
                         Error);
  }
  SUBCASE("preset statistics of the wrong size") {
    BatchNormLayer<CPU, float> bn(bn_param());
    bn.setup(ctx, {&x}, {&y});
    auto x2 = random_tensor<float>({2, 4, 4});
    BatchNormLayer<CPU, float> other(bn_param());
    other.blobs() = bn.blobs();
    CHECK_THROWS_WITH_AS(other.setup(ctx, {&x2}, {&y}), doctest::Contains("do not match 4 channels"), Error);
  }
  SUBCASE("unknown field") {
    LayerParameter p("bn", "BatchNorm");
    p.with("batch_norm_param", Message().set("momentum", 0.9));
    CHECK_THROWS_WITH_AS((BatchNormLayer<CPU, float>{p}), doctest::Contains("unknown field 'momentum'"), Error);
  }
  SUBCASE("registry") {
    auto layer = make_layer<CPU, float>(bn_param());
    CHECK(layer->type() == "BatchNorm");
    CHECK(layer->supports_in_place());
  }
}
