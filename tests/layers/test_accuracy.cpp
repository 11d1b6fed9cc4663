#include <doctest/doctest.h>
#include <poseidon/layers/accuracy.hpp>
#include <poseidon/layers/registry.hpp>

#include <optional>
#include <vector>

#include "support/layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

// Accuracy has no gradient (Caffe: NOT_IMPLEMENTED), so these tests check forward by hand
// and that a request for a gradient is an Error; there is no numeric gradient check.

namespace {
LayerParameter accuracy_param(int top_k = 1, int axis = 1, std::optional<int> ignore = {}) {
  LayerParameter p("acc", "Accuracy");
  p.bottom = {"score", "label"};
  p.top = {"accuracy"};
  Message m;
  m.set("top_k", top_k).set("axis", axis);
  if (ignore) m.set("ignore_label", *ignore);
  return p.with("accuracy_param", m);
}

template <class T>
T run_accuracy(const LayerParameter& p, Tensor<CPU, T>& x, Tensor<CPU, T>& label, Tensor<CPU, T>* per_class = nullptr) {
  Tensor<CPU, T> acc;
  AccuracyLayer<CPU, T> layer(p);
  Ctx ctx;
  std::vector<Tensor<CPU, T>*> top{&acc};
  if (per_class) top.push_back(per_class);
  layer.setup(ctx, {&x, &label}, top);
  CHECK(layer.forward(ctx, {&x, &label}, top) == T(0));  // not a loss
  CHECK(acc.shape() == Shape());
  return acc.data()[0];
}
}  // namespace

TEST_CASE_TEMPLATE("Accuracy top-1 and top-k match a hand count", T, float, double) {
  // 4 samples, 3 classes. Ranks of the true class: 1st, 2nd, 3rd, 1st.
  auto x = tensor_of<T>({4, 3}, {0.1, 0.7, 0.2,   //
                                 0.5, 0.3, 0.2,   //
                                 0.3, 0.6, 0.1,   //
                                 0.0, 0.0, 0.9});
  auto label = tensor_of<T>({4}, {1, 1, 2, 2});
  CHECK(double(run_accuracy(accuracy_param(1), x, label)) == doctest::Approx(0.5));
  CHECK(double(run_accuracy(accuracy_param(2), x, label)) == doctest::Approx(0.75));
  CHECK(double(run_accuracy(accuracy_param(3), x, label)) == doctest::Approx(1.0));
}

TEST_CASE_TEMPLATE("Accuracy counts a tie with the true class against it, as Caffe does", T, float, double) {
  auto x = tensor_of<T>({2, 3}, {0.4, 0.4, 0.2,  //
                                 0.2, 0.4, 0.4});
  auto label = tensor_of<T>({2}, {0, 2});
  CHECK(run_accuracy(accuracy_param(1), x, label) == T(0));
  CHECK(run_accuracy(accuracy_param(2), x, label) == T(1));
}

TEST_CASE_TEMPLATE("Accuracy skips ignore_label and reports per-class accuracy", T, float, double) {
  auto x = tensor_of<T>({5, 3}, {0.9, 0.1, 0.0,   // label 0: hit
                                 0.1, 0.9, 0.0,   // label 0: miss
                                 0.1, 0.9, 0.0,   // label 1: hit
                                 0.9, 0.1, 0.0,   // ignored (would miss)
                                 0.0, 0.1, 0.9}); // label 2: hit
  auto label = tensor_of<T>({5}, {0, 0, 1, 255, 2});
  Tensor<CPU, T> per_class;
  CHECK(double(run_accuracy(accuracy_param(1, 1, 255), x, label, &per_class)) == doctest::Approx(3.0 / 4));
  REQUIRE(per_class.shape() == Shape{3});
  CHECK(double(per_class.data()[0]) == doctest::Approx(0.5));
  CHECK(per_class.data()[1] == T(1));
  CHECK(per_class.data()[2] == T(1));

  SUBCASE("a class with no labels reads 0") {
    auto l2 = tensor_of<T>({5}, {0, 0, 255, 255, 2});
    run_accuracy(accuracy_param(1, 1, 255), x, l2, &per_class);
    CHECK(per_class.data()[1] == T(0));
  }
  SUBCASE("every label ignored gives 0") {
    auto l3 = tensor_of<T>({5}, {255, 255, 255, 255, 255});
    CHECK(run_accuracy(accuracy_param(1, 1, 255), x, l3) == T(0));
  }
}

TEST_CASE_TEMPLATE("Accuracy over a spatial axis", T, float, double) {
  // (1, 2, 3) with axis 1: 3 positions of 2 classes; scores per position: (1,0), (0,1), (5,7).
  auto x = tensor_of<T>({1, 2, 3}, {1, 0, 5, 0, 1, 7});
  auto label = tensor_of<T>({1, 3}, {0, 0, 1});
  CHECK(double(run_accuracy(accuracy_param(1, 1), x, label)) == doctest::Approx(2.0 / 3));
  // axis -1 on (3, 2): the same positions as rows.
  auto xt = tensor_of<T>({3, 2}, {1, 0, 0, 1, 5, 7});
  CHECK(double(run_accuracy(accuracy_param(1, -1), xt, label)) == doctest::Approx(2.0 / 3));
}

TEST_CASE("Accuracy rejects bad configuration and input") {
  Ctx ctx;
  auto x = random_tensor<float>({2, 3});
  auto label = tensor_of<float>({2}, {0, 2});
  Tensor<CPU, float> acc;
  SUBCASE("top_k above the number of classes names top_k") {
    AccuracyLayer<CPU, float> layer(accuracy_param(4));
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&x, &label}, {&acc}),
                         doctest::Contains("layer 'acc' (Accuracy): accuracy_param top_k 4 exceeds the number of classes 3"),
                         Error);
  }
  SUBCASE("top_k zero") {
    AccuracyLayer<CPU, float> layer(accuracy_param(0));
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&x, &label}, {&acc}), doctest::Contains("top_k must be at least 1"), Error);
  }
  SUBCASE("label out of range") {
    auto bad = tensor_of<float>({2}, {0, 3});
    AccuracyLayer<CPU, float> layer(accuracy_param());
    layer.setup(ctx, {&x, &bad}, {&acc});
    CHECK_THROWS_WITH_AS(layer.forward(ctx, {&x, &bad}, {&acc}), doctest::Contains("label 3 at index 1"), Error);
  }
  SUBCASE("label count mismatch") {
    auto bad = tensor_of<float>({3}, {0, 1, 2});
    AccuracyLayer<CPU, float> layer(accuracy_param());
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&x, &bad}, {&acc}), doctest::Contains("has 3 labels"), Error);
  }
  SUBCASE("axis out of range") {
    AccuracyLayer<CPU, float> layer(accuracy_param(1, 3));
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&x, &label}, {&acc}), doctest::Contains("accuracy_param axis 3"), Error);
  }
  SUBCASE("backward with propagate_down is an error; without it a no-op") {
    AccuracyLayer<CPU, float> layer(accuracy_param());
    layer.setup(ctx, {&x, &label}, {&acc});
    layer.forward(ctx, {&x, &label}, {&acc});
    CHECK_THROWS_WITH_AS(layer.backward(ctx, {&acc}, {true, false}, {&x, &label}),
                         doctest::Contains("cannot backpropagate to bottom 0 ('score')"), Error);
    CHECK_NOTHROW(layer.backward(ctx, {&acc}, {false, false}, {&x, &label}));
  }
  SUBCASE("unknown field") {
    LayerParameter p("acc", "Accuracy");
    p.with("accuracy_param", Message().set("topk", 2));
    CHECK_THROWS_WITH_AS((AccuracyLayer<CPU, float>{p}), doctest::Contains("unknown field 'topk'"), Error);
  }
  SUBCASE("three tops") {
    Tensor<CPU, float> t2, t3;
    AccuracyLayer<CPU, float> layer(accuracy_param());
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&x, &label}, {&acc, &t2, &t3}), doctest::Contains("at most tops: 2"), Error);
  }
}

TEST_CASE("Accuracy is created by the registry") {
  CHECK(make_layer<CPU, double>(accuracy_param())->type() == "Accuracy");
}
