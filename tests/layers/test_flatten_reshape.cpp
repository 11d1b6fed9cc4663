#include <doctest/doctest.h>
#include <poseidon/layers/flatten.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/layers/reshape.hpp>

#include <string>
#include <vector>

#include "support/layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {
LayerParameter flatten_param(int axis = 1, int end_axis = -1) {
  LayerParameter p("flat", "Flatten");
  p.bottom = {"x"};
  p.top = {"y"};
  return p.with("flatten_param", Message().set("axis", axis).set("end_axis", end_axis));
}

LayerParameter reshape_param(std::vector<long long> dims, int axis = 0, int num_axes = -1) {
  LayerParameter p("rs", "Reshape");
  p.bottom = {"x"};
  p.top = {"y"};
  Message shape;
  for (long long d : dims) shape.set("dim", d);
  Message m;
  m.add("shape", shape);
  m.set("axis", axis).set("num_axes", num_axes);
  return p.with("reshape_param", m);
}

template <class T>
Shape reshaped(const LayerParameter& p, const Shape& in) {
  Tensor<CPU, T> x(in), y;
  Ctx ctx;
  auto layer = make_layer<CPU, T>(p);
  layer->setup(ctx, {&x}, {&y});
  layer->forward(ctx, {&x}, {&y});
  CHECK(y.data() == x.data());
  CHECK(y.diff() == x.diff());
  return y.shape();
}

// The shared checker sets the top diffs before it zeroes the bottom diffs (Caffe's checker zeroes
// first), which erases the top diff of a layer whose top shares the bottom's diff. This adapter
// gives the checker a top of its own and copies into the wrapped layer's top, so the check still
// runs the layer's real forward and backward: a layer that failed to share its diff (or to copy
// it in backward) would leave the bottom gradient at zero and fail.
template <class T>
class OwnTop final : public Layer<CPU, T> {
  using Base = Layer<CPU, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;
  explicit OwnTop(Layer<CPU, T>& inner) : Base(inner.param()), inner_(inner) {}
  [[nodiscard]] std::string_view type() const override { return "OwnTop"; }
  void reshape(const Vec& bottom, const Vec& top) override {
    inner_.reshape(bottom, {&inner_top_});
    top[0]->reshape(inner_top_.shape());
  }

 protected:
  void layer_setup(Context& ctx, const Vec& bottom, const Vec&) override { inner_.setup(ctx, bottom, {&inner_top_}); }
  void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) override {
    inner_.forward(ctx, bottom, {&inner_top_});
    math::copy(ctx, inner_top_.count(), inner_top_.data(), top[0]->data());
  }
  void backward_impl(Context& ctx, const Vec& top, const std::vector<bool>& down, const Vec& bottom) override {
    math::copy(ctx, top[0]->count(), top[0]->diff(), inner_top_.diff());
    inner_.backward(ctx, {&inner_top_}, down, bottom);
  }

 private:
  Layer<CPU, T>& inner_;
  Tensor<CPU, T> inner_top_;
};
}  // namespace

// ---------------------------------------------------------------------------------------------
// Flatten

TEST_CASE_TEMPLATE("Flatten merges the chosen axes and shares memory", T, float, double) {
  const Shape in{2, 3, 4, 5};
  CHECK(reshaped<T>(flatten_param(), in) == Shape{2, 60});
  CHECK(reshaped<T>(flatten_param(2), in) == Shape{2, 3, 20});
  CHECK(reshaped<T>(flatten_param(1, 2), in) == Shape{2, 12, 5});
  CHECK(reshaped<T>(flatten_param(0), in) == Shape{120});
  CHECK(reshaped<T>(flatten_param(-2, -2), in) == Shape{2, 3, 4, 5});  // one axis: unchanged
}

TEST_CASE_TEMPLATE("Flatten values and gradients pass through", T, float, double) {
  auto x = random_tensor<T>({2, 3, 2});
  Tensor<CPU, T> y;
  FlattenLayer<CPU, T> layer(flatten_param());
  Ctx ctx;
  layer.setup(ctx, {&x}, {&y});
  layer.forward(ctx, {&x}, {&y});
  CHECK(y.data_to_host() == x.data_to_host());
  for (std::size_t i = 0; i < y.count(); ++i) y.diff()[i] = static_cast<T>(i);
  layer.backward(ctx, {&y}, {true}, {&x});
  CHECK(x.diff()[5] == T(5));

  FlattenLayer<CPU, T> checked(flatten_param(1, 2));
  OwnTop<T> adapter(checked);
  Tensor<CPU, T> top;
  expect_gradients(adapter, {&x}, {&top});
  CHECK(top.shape() == Shape{2, 6});
}

TEST_CASE("Flatten rejects bad axes and in-place use") {
  Ctx ctx;
  auto x = random_tensor<float>({2, 3, 4});
  Tensor<CPU, float> y;
  SUBCASE("axis after end_axis") {
    FlattenLayer<CPU, float> layer(flatten_param(2, 1));
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&x}, {&y}),
                         doctest::Contains("layer 'flat' (Flatten): flatten_param axis 2 comes after end_axis 1"), Error);
  }
  SUBCASE("axis out of range, as for a 1-d bottom") {
    Tensor<CPU, float> v({3});
    FlattenLayer<CPU, float> layer(flatten_param(1));
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&v}, {&y}), doctest::Contains("flatten_param axis 1 is out of range"), Error);
  }
  SUBCASE("end_axis out of range") {
    FlattenLayer<CPU, float> layer(flatten_param(1, 3));
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&x}, {&y}), doctest::Contains("flatten_param end_axis 3 is out of range"),
                         Error);
  }
  SUBCASE("in place") {
    FlattenLayer<CPU, float> layer(flatten_param());
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&x}, {&x}), doctest::Contains("cannot run in place"), Error);
  }
  SUBCASE("unknown field") {
    LayerParameter p = flatten_param();
    p.message = Message();
    p.with("flatten_param", Message().set("axes", 1));
    CHECK_THROWS_WITH_AS((FlattenLayer<CPU, float>{p}), doctest::Contains("unknown field 'axes'"), Error);
  }
}

// ---------------------------------------------------------------------------------------------
// Reshape

TEST_CASE_TEMPLATE("Reshape computes Caffe's shapes (0 copies, -1 infers, axis and num_axes)", T, float, double) {
  const Shape in{2, 3, 6, 5};
  CHECK(reshaped<T>(reshape_param({6, 30}), in) == Shape{6, 30});
  CHECK(reshaped<T>(reshape_param({0, -1}), in) == Shape{2, 90});
  CHECK(reshaped<T>(reshape_param({0, 0, -1, 1}), in) == Shape{2, 3, 30, 1});
  CHECK(reshaped<T>(reshape_param({-1}), in) == Shape{180});
  // Insert singleton axes at the start, middle and end (num_axes 0 replaces nothing).
  CHECK(reshaped<T>(reshape_param({1, 1, 1}, 0, 0), in) == Shape{1, 1, 1, 2, 3, 6, 5});
  CHECK(reshaped<T>(reshape_param({1, 1, 1}, 2, 0), in) == Shape{2, 3, 1, 1, 1, 6, 5});
  CHECK(reshaped<T>(reshape_param({1, 1, 1}, -1, 0), in) == Shape{2, 3, 6, 5, 1, 1, 1});
  // Flatten the middle two axes, or split one.
  CHECK(reshaped<T>(reshape_param({-1}, 1, 2), in) == Shape{2, 18, 5});
  CHECK(reshaped<T>(reshape_param({3, 2}, 2, 1), in) == Shape{2, 3, 3, 2, 5});
  CHECK(reshaped<T>(reshape_param({0, -1}, -3, 2), in) == Shape{2, 3, 6, 5});
}

TEST_CASE_TEMPLATE("Reshape shares memory, follows the bottom, and passes gradients", T, float, double) {
  auto x = random_tensor<T>({2, 3, 4});
  Tensor<CPU, T> y;
  ReshapeLayer<CPU, T> layer(reshape_param({0, -1}));
  Ctx ctx;
  layer.setup(ctx, {&x}, {&y});
  CHECK(y.shape() == Shape{2, 12});
  layer.forward(ctx, {&x}, {&y});
  CHECK(y.data_to_host() == x.data_to_host());

  SUBCASE("a new batch size is inferred again") {
    x.reshape({5, 3, 4});
    layer.forward(ctx, {&x}, {&y});
    CHECK(y.shape() == Shape{5, 12});
    CHECK(y.data() == x.data());
    CHECK(y.diff() == x.diff());
  }
  SUBCASE("gradients") {
    ReshapeLayer<CPU, T> checked(reshape_param({-1, 4}, 1));
    OwnTop<T> adapter(checked);
    Tensor<CPU, T> top;
    expect_gradients(adapter, {&x}, {&top});
    CHECK(top.shape() == Shape{2, 3, 4});
  }
}

TEST_CASE("Reshape rejects bad shapes") {
  Ctx ctx;
  auto x = random_tensor<float>({2, 3, 4});
  Tensor<CPU, float> y;
  auto fails = [&](const LayerParameter& p, const char* what) {
    CAPTURE(what);
    ReshapeLayer<CPU, float> layer(p);
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&x}, {&y}), doctest::Contains(what), Error);
  };
  fails(reshape_param({-1, -1}), "layer 'rs' (Reshape): reshape_param shape has more than one -1");
  fails(reshape_param({5, -1}), "24 elements, not divisible by the product of the other dimensions (5)");
  fails(reshape_param({0, 0, 0, 0}), "shape dim 3 is 0 (copy) but bottom 'x' of shape (2,3,4) has no axis 3");
  fails(reshape_param({5, 5}), "gives (5,5) with 25 elements, but bottom 'x' of shape (2,3,4) has 24");
  fails(reshape_param({2, -2}), "shape dim 1 is -2");
  fails(reshape_param({0, -1}, 0, -2), "num_axes must be >= 0, or -1 for all; got -2");
  fails(reshape_param({1}, 4), "reshape_param axis 4 is out of range");
  fails(reshape_param({1}, -5), "reshape_param axis -5 is out of range");
  fails(reshape_param({1}, 2, 2), "axis 2 + num_axes 2 goes past the last axis");
  fails(reshape_param({100000, 100000, 0}), "reshape_param shape");
  SUBCASE("a -1 next to an empty copied axis") {
    Tensor<CPU, float> empty({2, 0, 3});
    ReshapeLayer<CPU, float> layer(reshape_param({0, 0, -1}));
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&empty}, {&y}), doctest::Contains("cannot be inferred"), Error);
  }
  SUBCASE("in place") {
    ReshapeLayer<CPU, float> layer(reshape_param({-1}));
    CHECK_THROWS_WITH_AS(layer.setup(ctx, {&x}, {&x}), doctest::Contains("cannot run in place"), Error);
  }
  SUBCASE("unknown field in shape") {
    LayerParameter p("rs", "Reshape");
    p.with("reshape_param", Message().add("shape", Message().set("dims", 1)));
    CHECK_THROWS_WITH_AS((ReshapeLayer<CPU, float>{p}), doctest::Contains("unknown field 'dims' in layer 'rs' (Reshape) reshape_param shape"),
                         Error);
  }
}
