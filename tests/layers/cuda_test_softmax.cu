// Softmax on CUDA (cuDNN's channel mode over outer x channels x inner x 1) against the CPU over
// several axes, shapes and input ranges, in place and not, and its gradients checked on the GPU.
#include <doctest/doctest.h>
#include <poseidon/layers/softmax.hpp>

#include <memory>
#include <type_traits>

#include "support/cuda_layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {
LayerParameter softmax_param(int axis = 1) {
  LayerParameter p("prob", "Softmax");
  p.bottom = {"x"};
  p.top = {"y"};
  return p.with("softmax_param", Message().set("axis", axis));
}
// Both devices sum in the same order; only exp differs, by a few ulp.
template <class T>
double softmax_eps() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-13;
}
}  // namespace

TEST_CASE_TEMPLATE("CUDA Softmax matches the CPU", T, float, double) {
  CHECK(LayerRegistry<CUDA, T>::has("Softmax"));
  // Out of place and in place, on the same inputs.
  auto both = [](const LayerParameter& p, const Tensor<CPU, T>& x) {
    for (bool in_place : {false, true}) {
      CAPTURE(in_place);
      CompareOptions o;
      o.in_place = in_place;
      compare_with_cpu<T>(p, {x}, softmax_eps<T>(), o);
    }
  };
  SUBCASE("classes on axis 1") { both(softmax_param(), random_tensor<T>({50, 1000}, -5, 5)); }
  SUBCASE("channels of an image, inner > 1") { both(softmax_param(), random_tensor<T>({3, 7, 5, 6}, -3, 3)); }
  SUBCASE("last axis") { both(softmax_param(-1), random_tensor<T>({3, 4, 9})); }
  SUBCASE("axis 0") { both(softmax_param(0), random_tensor<T>({6, 4, 3})); }
  SUBCASE("axis 2 of 4: outer and inner both > 1") { both(softmax_param(2), random_tensor<T>({3, 2, 7, 5}, -4, 4)); }
  SUBCASE("axis -2 of 5") { both(softmax_param(-2), random_tensor<T>({2, 2, 3, 6, 4}, -2, 2)); }
  SUBCASE("large inputs do not overflow") { both(softmax_param(), random_tensor<T>({8, 10, 3}, -500, 500)); }
  SUBCASE("a single channel") { both(softmax_param(), random_tensor<T>({4, 1, 5})); }
}

TEST_CASE_TEMPLATE("CUDA Softmax runs on cuDNN for every axis", T, float, double) {
  for (int axis : {0, 1, 2, -1}) {
    CAPTURE(axis);
    auto layer = make_layer<CUDA, T>(softmax_param(axis));
    GpuCtx ctx;
    Tensor<CUDA, T> x = to_gpu(random_tensor<T>({3, 4, 5})), y;
    layer->setup(ctx, {&x}, {&y});
    auto* l = dynamic_cast<SoftmaxLayer<CUDA, T>*>(layer.get());
    REQUIRE(l != nullptr);
    CHECK(l->uses_cudnn());
    CHECK(l->axis() == (axis < 0 ? axis + 3 : axis));
  }
}

TEST_CASE("CUDA Softmax gradients (double, on the GPU)") {
  expect_gpu_gradients<double>(softmax_param(), {random_tensor<double>({2, 5, 3, 2}, -2, 2)});
  expect_gpu_gradients<double>(softmax_param(-1), {random_tensor<double>({3, 8}, -2, 2)});
  expect_gpu_gradients<double>(softmax_param(0), {random_tensor<double>({4, 3, 2}, -2, 2)});
  expect_gpu_gradients<double>(softmax_param(2), {random_tensor<double>({2, 2, 4, 3}, -2, 2)});
}
