// Softmax on CUDA against the CPU over several axes, shapes and input ranges, and its gradients
// checked on the GPU.
#include <doctest/doctest.h>
#include <poseidon/layers/softmax.hpp>

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
  SUBCASE("large inputs do not overflow") { both(softmax_param(), random_tensor<T>({8, 10, 3}, -500, 500)); }
  SUBCASE("a single channel") { both(softmax_param(), random_tensor<T>({4, 1, 5})); }
}

TEST_CASE("CUDA Softmax gradients (double, on the GPU)") {
  expect_gpu_gradients<double>(softmax_param(), {random_tensor<double>({2, 5, 3, 2}, -2, 2)});
  expect_gpu_gradients<double>(softmax_param(-1), {random_tensor<double>({3, 8}, -2, 2)});
}
