#include <doctest/doctest.h>
#include <poseidon/layers/euclidean_loss.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/layers/softmax_loss.hpp>

#include <cmath>
#include <vector>

#include "support/layer_params.hpp"
#include "support/layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {
LayerParameter softmax_loss_param(Message loss_param = {}, int axis = 1, std::vector<float> loss_weight = {}) {
  LayerParameter p("loss", "SoftmaxWithLoss");
  p.bottom = {"score", "label"};
  p.top = {"loss"};
  p.loss_weight = std::move(loss_weight);
  p.with("softmax_param", Message().set("axis", axis));
  if (!loss_param.empty()) p.with("loss_param", std::move(loss_param));
  return p;
}

// softmax(1, 2, 3)
constexpr double p0 = 0.09003057317038046, p1 = 0.24472847105479767, p2 = 0.6652409557748219;

/// Integer labels in [0, classes), with every `ignore_every`-th replaced by `ignore`.
template <class T>
Tensor<CPU, T> random_labels(const Shape& s, int classes, std::uint64_t seed, int ignore_every = 0, int ignore = -1) {
  Tensor<CPU, T> t(s);
  Rng r(seed);
  std::size_t i = 0;
  for (auto& x : t.data_span()) {
    x = static_cast<T>(std::min(classes - 1, static_cast<int>(r.uniform<double>(0, classes))));
    if (ignore_every && ++i % static_cast<std::size_t>(ignore_every) == 0) x = static_cast<T>(ignore);
  }
  return t;
}
}  // namespace

// ---------------------------------------------------------------------------------------------
// SoftmaxWithLoss

TEST_CASE_TEMPLATE("SoftmaxWithLoss forward and backward match a hand computation", T, float, double) {
  auto x = tensor_of<T>({2, 3}, {1, 2, 3, 1001, 1002, 1003});  // the second row tests stability
  auto label = tensor_of<T>({2}, {2, 0});
  Tensor<CPU, T> loss, prob;
  LayerParameter p = softmax_loss_param();
  p.top = {"loss", "prob"};
  SoftmaxWithLossLayer<CPU, T> layer(p);
  Ctx ctx;
  layer.setup(ctx, {&x, &label}, {&loss, &prob});
  const T ret = layer.forward(ctx, {&x, &label}, {&loss, &prob});
  const double expect = (-std::log(p2) - std::log(p0)) / 2;  // VALID: two labels count
  CHECK(loss.shape() == Shape());
  CHECK(double(loss.data()[0]) == doctest::Approx(expect).epsilon(1e-5));
  CHECK(double(ret) == doctest::Approx(expect).epsilon(1e-5));  // loss weight 1 by default
  CHECK(layer.loss_weight(0) == T(1));
  CHECK(layer.loss_weight(1) == T(0));
  REQUIRE(prob.shape() == Shape{2, 3});
  CHECK(prob.shares_data_with(layer.prob()));
  const std::vector<double> pr{p0, p1, p2, p0, p1, p2};
  for (std::size_t i = 0; i < 6; ++i) CHECK(double(prob.data()[i]) == doctest::Approx(pr[i]).epsilon(1e-5));

  // dx = (p - onehot) * loss_weight / 2
  loss.diff()[0] = T(3);
  layer.backward(ctx, {&loss, &prob}, {true, false}, {&x, &label});
  const std::vector<double> dx{p0, p1, p2 - 1, p0 - 1, p1, p2};
  for (std::size_t i = 0; i < 6; ++i) CHECK(double(x.diff()[i]) == doctest::Approx(dx[i] * 3 / 2).epsilon(1e-5));
}

TEST_CASE_TEMPLATE("SoftmaxWithLoss normalization modes and ignore_label", T, float, double) {
  // (2, 3, 2): softmax over axis 1 for 4 positions; labels (2, 2) with one ignored.
  auto x = tensor_of<T>({2, 3, 2}, {1, 0, 2, 0, 3, 0, 3, 5, 2, 5, 1, 5});
  auto label = tensor_of<T>({2, 2}, {2, 255, 0, 1});
  // position (0,0): (1,2,3) label 2 -> -log p2; (1,0): (3,2,1) label 0 -> -log p2; (1,1): (5,5,5) label 1 -> log 3
  const double sum = -2 * std::log(p2) + std::log(3.0);
  struct Case {
    const char* name;
    Message lp;
    double norm;
  };
  std::vector<Case> cases{
      {"default VALID", Message().set("ignore_label", 255), 3},
      {"FULL", Message().set("ignore_label", 255).set_enum("normalization", "FULL"), 4},
      {"VALID", Message().set("ignore_label", 255).set_enum("normalization", "VALID"), 3},
      {"BATCH_SIZE", Message().set("ignore_label", 255).set_enum("normalization", "BATCH_SIZE"), 2},
      {"NONE", Message().set("ignore_label", 255).set_enum("normalization", "NONE"), 1},
      {"normalize: false", Message().set("ignore_label", 255).set("normalize", false), 2},
      {"normalize: true", Message().set("ignore_label", 255).set("normalize", true), 3},
      {"normalization wins over normalize",
       Message().set("ignore_label", 255).set("normalize", false).set_enum("normalization", "FULL"), 4},
  };
  for (auto& c : cases) {
    CAPTURE(c.name);
    Tensor<CPU, T> loss;
    SoftmaxWithLossLayer<CPU, T> layer(softmax_loss_param(c.lp));
    Ctx ctx;
    layer.setup(ctx, {&x, &label}, {&loss});
    layer.forward(ctx, {&x, &label}, {&loss});
    CHECK(double(loss.data()[0]) == doctest::Approx(sum / c.norm).epsilon(1e-5));
    layer.backward(ctx, {&loss}, {true, false}, {&x, &label});
    // The ignored position (0, 1) gets no gradient; (1, 1) gets (1/3 - [c == 1]) / norm.
    for (int ch = 0; ch < 3; ++ch) {
      CHECK(x.diff()[ch * 2 + 1] == T(0));
      CHECK(double(x.diff()[6 + ch * 2 + 1]) == doctest::Approx((1.0 / 3 - (ch == 1)) / c.norm).epsilon(1e-5));
    }
  }
}

TEST_CASE_TEMPLATE("SoftmaxWithLoss with every label ignored gives zero loss and gradient", T, float, double) {
  auto x = random_tensor<T>({3, 4});
  auto label = tensor_of<T>({3}, {-1, -1, -1});
  Tensor<CPU, T> loss;
  SoftmaxWithLossLayer<CPU, T> layer(softmax_loss_param(Message().set("ignore_label", -1)));
  Ctx ctx;
  layer.setup(ctx, {&x, &label}, {&loss});
  CHECK(layer.forward(ctx, {&x, &label}, {&loss}) == T(0));
  layer.backward(ctx, {&loss}, {true, false}, {&x, &label});
  for (T d : x.diff_span()) CHECK(d == T(0));
}

TEST_CASE_TEMPLATE("SoftmaxWithLoss gradients", T, float, double) {
  auto no_labels = [](GradientCheckOptions& o) { o.bottoms = {0}; };
  SUBCASE("plain") {
    auto x = random_tensor<T>({4, 5}, -2, 2);
    auto label = random_labels<T>({4}, 5, 3);
    Tensor<CPU, T> loss;
    SoftmaxWithLossLayer<CPU, T> layer(softmax_loss_param());
    expect_gradients_with(layer, {&x, &label}, {&loss}, no_labels);
  }
  SUBCASE("spatial, ignore_label, loss_weight 2") {
    auto x = random_tensor<T>({2, 3, 2, 2}, -2, 2);
    auto label = random_labels<T>({2, 1, 2, 2}, 3, 5, 3, 7);
    Tensor<CPU, T> loss;
    SoftmaxWithLossLayer<CPU, T> layer(softmax_loss_param(Message().set("ignore_label", 7), 1, {2.0f}));
    expect_gradients_with(layer, {&x, &label}, {&loss}, no_labels);
  }
  SUBCASE("axis 2, every normalization") {
    for (const char* mode : {"FULL", "VALID", "BATCH_SIZE", "NONE"}) {
      CAPTURE(mode);
      auto x = random_tensor<T>({2, 2, 4}, -2, 2, 9);
      auto label = random_labels<T>({2, 2}, 4, 11, 3, 0);  // ignore_label 0 is also a class
      Tensor<CPU, T> loss;
      SoftmaxWithLossLayer<CPU, T> layer(
          softmax_loss_param(Message().set("ignore_label", 0).set_enum("normalization", mode), 2));
      expect_gradients_with(layer, {&x, &label}, {&loss}, no_labels);
    }
  }
  SUBCASE("negative axis") {
    auto x = random_tensor<T>({3, 2, 3}, -2, 2, 4);
    auto label = random_labels<T>({3, 2}, 3, 8);
    Tensor<CPU, T> loss;
    SoftmaxWithLossLayer<CPU, T> layer(softmax_loss_param({}, -1));
    expect_gradients_with(layer, {&x, &label}, {&loss}, no_labels);
    CHECK(layer.axis() == 2);
  }
}

TEST_CASE("SoftmaxWithLoss rejects bad labels, shapes and parameters") {
  Ctx ctx;
  auto x = random_tensor<float>({3, 4});
  Tensor<CPU, float> loss;
  SUBCASE("label out of range names the layer, value and position") {
    auto label = tensor_of<float>({3}, {0, 4, 1});
    SoftmaxWithLossLayer<CPU, float> layer(softmax_loss_param());
    layer.setup(ctx, {&x, &label}, {&loss});
    CHECK_THROWS_WITH_AS(layer.forward(ctx, {&x, &label}, {&loss}),
                         doctest::Contains("layer 'loss' (SoftmaxWithLoss): label 4 at index 1"), Error);
  }
  SUBCASE("negative label without an ignore_label") {
    auto label = tensor_of<float>({3}, {0, 1, -1});
    SoftmaxWithLossLayer<CPU, float> layer(softmax_loss_param());
    layer.setup(ctx, {&x, &label}, {&loss});
    CHECK_THROWS_WITH_AS(layer.forward(ctx, {&x, &label}, {&loss}), doctest::Contains("label -1 at index 2"), Error);
  }
  SUBCASE("a label that is not an integer") {
    auto label = tensor_of<float>({3}, {0, 1.5, 1});
    SoftmaxWithLossLayer<CPU, float> layer(softmax_loss_param());
    layer.setup(ctx, {&x, &label}, {&loss});
    CHECK_THROWS_WITH_AS(layer.forward(ctx, {&x, &label}, {&loss}), doctest::Contains("label 1.5 at index 1"), Error);
  }
  SUBCASE("labels changed between forward and backward") {
    auto label = tensor_of<float>({3}, {0, 1, 2});
    SoftmaxWithLossLayer<CPU, float> layer(softmax_loss_param());
    layer.setup(ctx, {&x, &label}, {&loss});
    layer.forward(ctx, {&x, &label}, {&loss});
    label.data()[2] = 1e9f;
    CHECK_THROWS_WITH_AS(layer.backward(ctx, {&loss}, {true, false}, {&x, &label}),
                         doctest::Contains("at index 2"), Error);
  }
  SUBCASE("label count does not match") {
    auto label = tensor_of<float>({2}, {0, 1});
    SoftmaxWithLossLayer<CPU, float> layer(softmax_loss_param());
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&x, &label}, {&loss}), doctest::Contains("has 2 labels"), Error);
  }
  SUBCASE("no gradient to the labels") {
    auto label = tensor_of<float>({3}, {0, 1, 2});
    SoftmaxWithLossLayer<CPU, float> layer(softmax_loss_param());
    layer.setup(ctx, {&x, &label}, {&loss});
    layer.forward(ctx, {&x, &label}, {&loss});
    CHECK_THROWS_WITH_AS(layer.backward(ctx, {&loss}, {true, true}, {&x, &label}),
                         doctest::Contains("cannot backpropagate to bottom 1 ('label')"), Error);
  }
  SUBCASE("axis out of range") {
    auto label = tensor_of<float>({3}, {0, 1, 2});
    SoftmaxWithLossLayer<CPU, float> layer(softmax_loss_param({}, 2));
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&x, &label}, {&loss}), doctest::Contains("softmax_param axis 2"), Error);
  }
  SUBCASE("unknown normalization and unknown field") {
    CHECK_THROWS_WITH_AS((SoftmaxWithLossLayer<CPU, float>{softmax_loss_param(Message().set_enum("normalization", "ALL"))}),
                         doctest::Contains("'normalization' has value 'ALL'"), Error);
    CHECK_THROWS_WITH_AS((SoftmaxWithLossLayer<CPU, float>{softmax_loss_param(Message().set("ignore", 1))}),
                         doctest::Contains("unknown field 'ignore' in layer 'loss' (SoftmaxWithLoss) loss_param"),
                         Error);
  }
  SUBCASE("a loss weight on the probability top") {
    auto label = tensor_of<float>({3}, {0, 1, 2});
    Tensor<CPU, float> prob;
    LayerParameter p = softmax_loss_param({}, 1, {1.0f, 0.5f});
    p.top = {"loss", "prob"};
    SoftmaxWithLossLayer<CPU, float> layer(p);
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&x, &label}, {&loss, &prob}),
                         doctest::Contains("probability top 'prob' cannot carry a loss_weight"), Error);
  }
  SUBCASE("wrong bottom count") {
    SoftmaxWithLossLayer<CPU, float> layer(softmax_loss_param());
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&x}, {&loss}), doctest::Contains("exactly bottoms: 2"), Error);
  }
}

// ---------------------------------------------------------------------------------------------
// EuclideanLoss

TEST_CASE_TEMPLATE("EuclideanLoss forward and backward match a hand computation", T, float, double) {
  auto a = tensor_of<T>({2, 2}, {1, 2, 3, 4});
  auto b = tensor_of<T>({2, 2}, {0, 2, 1, 1});
  Tensor<CPU, T> loss;
  EuclideanLossLayer<CPU, T> layer(euclidean_param({3.0f}));
  Ctx ctx;
  layer.setup(ctx, {&a, &b}, {&loss});
  const T ret = layer.forward(ctx, {&a, &b}, {&loss});
  // diff (1, 0, 2, 3): 14 / (2 * 2) = 3.5, weighted by 3.
  CHECK(loss.shape() == Shape());
  CHECK(double(loss.data()[0]) == doctest::Approx(3.5));
  CHECK(double(ret) == doctest::Approx(10.5));
  layer.backward(ctx, {&loss}, {true, true}, {&a, &b});
  const std::vector<double> d{1, 0, 2, 3};
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(double(a.diff()[i]) == doctest::Approx(3 * d[i] / 2));
    CHECK(double(b.diff()[i]) == doctest::Approx(-3 * d[i] / 2));
  }
}

TEST_CASE_TEMPLATE("EuclideanLoss gradients", T, float, double) {
  SUBCASE("both bottoms") {
    auto a = random_tensor<T>({3, 4}, -1, 1, 1);
    auto b = random_tensor<T>({3, 4}, -1, 1, 2);
    Tensor<CPU, T> loss;
    EuclideanLossLayer<CPU, T> layer(euclidean_param());
    expect_gradients(layer, {&a, &b}, {&loss});
  }
  SUBCASE("same count per sample, other axes, loss weight") {
    auto a = random_tensor<T>({2, 3}, -1, 1, 3);
    auto b = random_tensor<T>({2, 3, 1, 1}, -1, 1, 4);
    Tensor<CPU, T> loss;
    EuclideanLossLayer<CPU, T> layer(euclidean_param({0.5f}));
    expect_gradients(layer, {&a, &b}, {&loss});
  }
}

TEST_CASE("EuclideanLoss rejects mismatched bottoms, naming both shapes") {
  Ctx ctx;
  Tensor<CPU, float> loss;
  auto a = random_tensor<float>({2, 3});
  SUBCASE("per-sample size") {
    auto b = random_tensor<float>({2, 4});
    EuclideanLossLayer<CPU, float> layer(euclidean_param());
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&a, &b}, {&loss}),
                         doctest::Contains("bottom 0 ('pred') has shape (2,3), bottom 1 ('target') has shape (2,4)"),
                         Error);
  }
  SUBCASE("batch size") {
    auto b = random_tensor<float>({3, 2});
    EuclideanLossLayer<CPU, float> layer(euclidean_param());
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&a, &b}, {&loss}), doctest::Contains("(3,2)"), Error);
  }
  SUBCASE("a later reshape") {
    auto b = random_tensor<float>({2, 3});
    EuclideanLossLayer<CPU, float> layer(euclidean_param());
    layer.setup(ctx, {&a, &b}, {&loss});
    b.reshape({2, 2});
    CHECK_THROWS_WITH_AS(layer.forward(ctx, {&a, &b}, {&loss}), doctest::Contains("layer 'l2' (EuclideanLoss)"), Error);
  }
}

TEST_CASE("Loss layers are created by the registry") {
  CHECK(make_layer<CPU, float>(softmax_loss_param())->type() == "SoftmaxWithLoss");
  CHECK(make_layer<CPU, double>(euclidean_param())->is_loss());
}
