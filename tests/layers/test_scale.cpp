#include <doctest/doctest.h>
#include <poseidon/layers/registry.hpp>
#include <poseidon/layers/scale.hpp>

#include <vector>

#include "support/layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {
Message random_filler(double lo, double hi) { return Message().set("type", "uniform").set("min", lo).set("max", hi); }

LayerParameter scale_param(int axis = 1, int num_axes = 1, bool bias = false, bool random_fill = false,
                           int bottoms = 1) {
  LayerParameter p("sc", "Scale");
  p.bottom = {"x"};
  if (bottoms > 1) p.bottom.push_back("s");
  p.top = {"y"};
  Message m;
  m.set("axis", axis).set("num_axes", num_axes).set("bias_term", bias);
  if (random_fill) {
    m.add("filler", random_filler(0.5, 2));
    m.add("bias_filler", random_filler(-1, 1));
  }
  return p.with("scale_param", m);
}

template <class T>
void check_close(const std::vector<T>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO("index ", i);
    CHECK(static_cast<double>(got[i]) == doctest::Approx(want[i]));
  }
}
}  // namespace

TEST_CASE_TEMPLATE("Scale with a learned scale and bias matches a hand computation", T, float, double) {
  auto x = tensor_of<T>({2, 3, 2}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  Tensor<CPU, T> y;
  ScaleLayer<CPU, T> sc(scale_param(1, 1, true));
  Ctx ctx;
  sc.setup(ctx, {&x}, {&y});
  REQUIRE(sc.blobs().size() == 2);
  CHECK(sc.blobs()[0]->shape() == Shape{3});
  CHECK(sc.blobs()[1]->shape() == Shape{3});
  // Caffe's defaults: scale 1, bias 0.
  check_close(sc.blobs()[0]->data_to_host(), {1, 1, 1});
  check_close(sc.blobs()[1]->data_to_host(), {0, 0, 0});
  sc.blobs()[0]->copy_data_from_host(std::vector<T>{1, 2, -1});
  sc.blobs()[1]->copy_data_from_host(std::vector<T>{0.5, 0, 1});
  sc.forward(ctx, {&x}, {&y});
  CHECK(y.shape() == x.shape());
  check_close(y.data_to_host(), {1.5, 2.5, 6, 8, -4, -5, 7.5, 8.5, 18, 20, -10, -11});

  y.copy_diff_from_host(std::vector<T>(12, T(1)));
  // Parameter gradients accumulate onto what is there.
  sc.blobs()[0]->copy_diff_from_host(std::vector<T>{1, 1, 1});
  sc.blobs()[1]->zero_diff();
  sc.backward(ctx, {&y}, {true}, {&x});
  check_close(x.diff_to_host(), {1, 1, 2, 2, -1, -1, 1, 1, 2, 2, -1, -1});
  check_close(sc.blobs()[0]->diff_to_host(), {1 + 18, 1 + 26, 1 + 34});
  check_close(sc.blobs()[1]->diff_to_host(), {4, 4, 4});
}

TEST_CASE_TEMPLATE("Scale from a second bottom matches a hand computation", T, float, double) {
  auto x = tensor_of<T>({2, 3}, {1, 2, 3, 4, 5, 6});
  auto s = tensor_of<T>({2}, {2, -3});
  auto dy = tensor_of<T>({2, 3}, {1, 0, -1, 2, 1, 0});
  Tensor<CPU, T> y;
  ScaleLayer<CPU, T> sc(scale_param(0, 1, false, false, 2));
  Ctx ctx;
  sc.setup(ctx, {&x, &s}, {&y});
  CHECK(sc.blobs().empty());
  sc.forward(ctx, {&x, &s}, {&y});
  check_close(y.data_to_host(), {2, 4, 6, -12, -15, -18});
  y.copy_diff_from_host(dy.data_span());
  s.copy_diff_from_host(std::vector<T>{100, 100});  // the scale bottom's diff is overwritten, not accumulated
  sc.backward(ctx, {&y}, {true, true}, {&x, &s});
  check_close(x.diff_to_host(), {2, 0, -2, -6, -3, 0});
  check_close(s.diff_to_host(), {1 - 3, 8 + 5});
}

TEST_CASE_TEMPLATE("Scale shapes of the scale blob follow axis and num_axes", T, float, double) {
  auto x = random_tensor<T>({2, 3, 4, 5});
  Tensor<CPU, T> y;
  Ctx ctx;
  SUBCASE("num_axes -1: to the end") {
    ScaleLayer<CPU, T> sc(scale_param(-2, -1, true));
    sc.setup(ctx, {&x}, {&y});
    CHECK(sc.blobs()[0]->shape() == Shape{4, 5});
    CHECK(sc.blobs()[1]->shape() == Shape{4, 5});
  }
  SUBCASE("num_axes 2 from axis 0") {
    ScaleLayer<CPU, T> sc(scale_param(0, 2));
    sc.setup(ctx, {&x}, {&y});
    CHECK(sc.blobs()[0]->shape() == Shape{2, 3});
  }
  SUBCASE("num_axes 0: a scalar") {
    ScaleLayer<CPU, T> sc(scale_param(1, 0, true));
    sc.setup(ctx, {&x}, {&y});
    CHECK(sc.blobs()[0]->num_axes() == 0);
    CHECK(sc.blobs()[0]->count() == 1);
    sc.blobs()[0]->copy_data_from_host(std::vector<T>{T(-2)});
    sc.blobs()[1]->copy_data_from_host(std::vector<T>{T(0.5)});
    sc.forward(ctx, {&x}, {&y});
    for (std::size_t i = 0; i < x.count(); i += 17)
      CHECK(double(y.data()[i]) == doctest::Approx(-2 * double(x.data()[i]) + 0.5));
  }
}

TEST_CASE_TEMPLATE("Scale gradients", T, float, double) {
  SUBCASE("learned scale and bias, one axis") {
    auto x = random_tensor<T>({2, 3, 2, 2});
    Tensor<CPU, T> y;
    ScaleLayer<CPU, T> sc(scale_param(1, 1, true, true));
    expect_gradients(sc, {&x}, {&y});
  }
  SUBCASE("learned scale over the trailing axes") {
    auto x = random_tensor<T>({2, 3, 4});
    Tensor<CPU, T> y;
    ScaleLayer<CPU, T> sc(scale_param(-2, -1, false, true));
    expect_gradients(sc, {&x}, {&y});
  }
  SUBCASE("learned scalar with bias") {
    auto x = random_tensor<T>({3, 4});
    Tensor<CPU, T> y;
    ScaleLayer<CPU, T> sc(scale_param(1, 0, true, true));
    expect_gradients(sc, {&x}, {&y});
  }
  SUBCASE("scale from a second bottom, with bias") {
    auto x = random_tensor<T>({2, 3, 4});
    auto s = random_tensor<T>({3, 4}, 0.5, 2, 9);
    Tensor<CPU, T> y;
    ScaleLayer<CPU, T> sc(scale_param(1, 1, true, true, 2));
    expect_gradients(sc, {&x, &s}, {&y});
  }
  SUBCASE("scalar second bottom") {
    auto x = random_tensor<T>({2, 5});
    auto s = random_tensor<T>(Shape{}, 0.5, 2, 9);
    Tensor<CPU, T> y;
    ScaleLayer<CPU, T> sc(scale_param(1, 1, false, false, 2));
    expect_gradients(sc, {&x, &s}, {&y});
  }
}

TEST_CASE_TEMPLATE("Scale in place matches out of place", T, float, double) {
  for (int bottoms : {1, 2}) {
    CAPTURE(bottoms);
    const Shape shape{3, 4, 5};
    auto x = random_tensor<T>(shape, -1, 1, 5);
    auto s = random_tensor<T>({4}, 0.5, 2, 7);
    auto dy = random_tensor<T>(shape, -1, 1, 6);
    auto bottoms_of = [&](Tensor<CPU, T>& b) {
      return bottoms == 1 ? std::vector<Tensor<CPU, T>*>{&b} : std::vector<Tensor<CPU, T>*>{&b, &s};
    };
    const std::vector<bool> prop(static_cast<std::size_t>(bottoms), true);
    Tensor<CPU, T> y;
    Ctx ctx;
    ScaleLayer<CPU, T> out(scale_param(1, 1, true, true, bottoms));
    out.setup(ctx, bottoms_of(x), {&y});
    out.forward(ctx, bottoms_of(x), {&y});
    y.copy_diff_from_host(dy.data_span());
    for (auto& b : out.blobs()) b->zero_diff();
    out.backward(ctx, {&y}, prop, bottoms_of(x));
    const auto s_diff = s.diff_to_host();

    auto xi = random_tensor<T>(shape, -1, 1, 5);
    ScaleLayer<CPU, T> in(scale_param(1, 1, true, true, bottoms));
    in.setup(ctx, bottoms_of(xi), {&xi});
    for (std::size_t i = 0; i < in.blobs().size(); ++i) in.blobs()[i]->copy_from(*out.blobs()[i]);
    in.forward(ctx, bottoms_of(xi), {&xi});
    CHECK(xi.data_to_host() == y.data_to_host());
    xi.copy_diff_from_host(dy.data_span());
    for (auto& b : in.blobs()) b->zero_diff();
    s.zero_diff();
    in.backward(ctx, {&xi}, prop, bottoms_of(xi));
    CHECK(xi.diff_to_host() == x.diff_to_host());
    for (std::size_t i = 0; i < in.blobs().size(); ++i)
      CHECK(in.blobs()[i]->diff_to_host() == out.blobs()[i]->diff_to_host());
    if (bottoms == 2) CHECK(s.diff_to_host() == s_diff);
  }
}

TEST_CASE("Scale rejects bad configuration and input") {
  Ctx ctx;
  auto x = random_tensor<float>({2, 3, 4});
  Tensor<CPU, float> y, z;
  SUBCASE("num_axes below -1") {
    ScaleLayer<CPU, float> sc(scale_param(1, -2));
    CHECK_THROWS_WITH_AS(sc.setup(ctx, {&x}, {&y}), doctest::Contains("layer 'sc' (Scale): scale_param num_axes"),
                         Error);
  }
  SUBCASE("axis + num_axes past the last axis") {
    ScaleLayer<CPU, float> sc(scale_param(1, 3));
    CHECK_THROWS_WITH_AS(sc.setup(ctx, {&x}, {&y}), doctest::Contains("axis 1 + num_axes 3 exceeds the 3 axes"),
                         Error);
  }
  SUBCASE("axis out of range") {
    ScaleLayer<CPU, float> sc(scale_param(3));
    CHECK_THROWS_WITH_AS(sc.setup(ctx, {&x}, {&y}), doctest::Contains("scale_param axis 3 is out of range"), Error);
  }
  SUBCASE("second bottom that does not match the bottom's axes") {
    auto s = random_tensor<float>({4});
    ScaleLayer<CPU, float> sc(scale_param(1, 1, false, false, 2));
    CHECK_THROWS_WITH_AS(sc.setup(ctx, {&x, &s}, {&y}),
                         doctest::Contains("scale bottom 's' of shape (4) does not match bottom 'x' of shape (2,3,4) at axis 1"),
                         Error);
  }
  SUBCASE("second bottom with too many axes") {
    auto s = random_tensor<float>({3, 4, 1});
    ScaleLayer<CPU, float> sc(scale_param(1, 1, false, false, 2));
    CHECK_THROWS_WITH_AS(sc.setup(ctx, {&x, &s}, {&y}), doctest::Contains("does not fit bottom 'x'"), Error);
  }
  SUBCASE("bottom changes shape after setup") {
    ScaleLayer<CPU, float> sc(scale_param());
    sc.setup(ctx, {&x}, {&y});
    auto x2 = random_tensor<float>({2, 5, 4});
    CHECK_THROWS_WITH_AS(sc.forward(ctx, {&x2}, {&y}), doctest::Contains("scale blob of shape (3) does not match"),
                         Error);
  }
  SUBCASE("top is the scale bottom") {
    auto s = random_tensor<float>({3});
    ScaleLayer<CPU, float> sc(scale_param(1, 1, false, false, 2));
    CHECK_THROWS_WITH_AS(sc.setup(ctx, {&x, &s}, {&s}), doctest::Contains("cannot be the scale bottom"), Error);
  }
  SUBCASE("wrong number of preset blobs") {
    ScaleLayer<CPU, float> sc(scale_param(1, 1, true));
    sc.blobs().push_back(std::make_shared<Tensor<CPU, float>>(Shape{3}));
    CHECK_THROWS_WITH_AS(sc.setup(ctx, {&x}, {&y}), doctest::Contains("expects 2 preset blobs, got 1"), Error);
  }
  SUBCASE("blob counts") {
    ScaleLayer<CPU, float> sc(scale_param());
    CHECK_THROWS_WITH_AS(sc.setup(ctx, {&x, &y, &z}, {&y}), doctest::Contains("at most bottoms: 2"), Error);
  }
  SUBCASE("unknown field and bad filler") {
    LayerParameter p("sc", "Scale");
    p.with("scale_param", Message().set("axes", 1));
    CHECK_THROWS_WITH_AS((ScaleLayer<CPU, float>{p}), doctest::Contains("unknown field 'axes'"), Error);
    LayerParameter q("sc", "Scale");
    q.with("scale_param", Message().add("filler", Message().set("type", "magic")));
    CHECK_THROWS_WITH_AS((ScaleLayer<CPU, float>{q}), doctest::Contains("scale_param filler: unknown filler type"),
                         Error);
  }
  SUBCASE("registry") {
    auto layer = make_layer<CPU, float>(scale_param());
    CHECK(layer->type() == "Scale");
    CHECK(layer->supports_in_place());
  }
}
