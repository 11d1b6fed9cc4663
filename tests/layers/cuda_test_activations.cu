// ReLU, Sigmoid and TanH on CUDA against the CPU (out of place and in place), and their
// gradients checked on the GPU.
#include <doctest/doctest.h>
#include <poseidon/layers/relu.hpp>
#include <poseidon/layers/sigmoid.hpp>
#include <poseidon/layers/tanh.hpp>

#include <type_traits>

#include "support/layer_params.hpp"
#include "support/cuda_layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {
// CUDA's tanh is within 2 ulp of the correctly rounded value, glibc's within 1: a few ulp apart.
template <class T>
double transcendental_eps() {
  return std::is_same_v<T, float> ? 1e-6 : 1e-14;
}
}  // namespace

TEST_CASE_TEMPLATE("CUDA ReLU matches the CPU bit for bit", T, float, double) {
  for (double slope : {0.0, 0.1, -0.5}) {
    CAPTURE(slope);
    for (bool in_place : {false, true}) {
      CAPTURE(in_place);
      CompareOptions o;
      o.in_place = in_place;
      // Only comparisons and one multiplication: both devices round identically.
      compare_with_cpu<T>(relu_param(slope), {random_tensor<T>({4, 3, 9, 7}, -2, 2, 3)}, 0.0, o);
    }
  }
}

TEST_CASE_TEMPLATE("CUDA Sigmoid and TanH match the CPU", T, float, double) {
  for (const char* type : {"Sigmoid", "TanH"}) {
    CAPTURE(type);
    for (bool in_place : {false, true}) {
      CAPTURE(in_place);
      CompareOptions o;
      o.in_place = in_place;
      // Wide inputs: saturation (sigmoid's 0 and 1, tanh's +-1) must not overflow to NaN.
      compare_with_cpu<T>(act_param(type), {random_tensor<T>({5, 4, 33}, -40, 40, 4)}, transcendental_eps<T>(), o);
      compare_with_cpu<T>(act_param(type), {random_tensor<T>({100003}, -3, 3, 5)}, transcendental_eps<T>(), o);
    }
  }
}

TEST_CASE("CUDA activation gradients (double, on the GPU)") {
  auto x = random_tensor<double>({2, 3, 4, 5}, -2, 2, 8);
  SUBCASE("ReLU") {
    expect_gpu_gradients<double>(relu_param(0), {x}, [](auto& o) { o.kink_range = 1e-3; });
  }
  SUBCASE("leaky ReLU") {
    expect_gpu_gradients<double>(relu_param(0.2), {x}, [](auto& o) { o.kink_range = 1e-3; });
  }
  SUBCASE("Sigmoid") { expect_gpu_gradients<double>(act_param("Sigmoid"), {x}); }
  SUBCASE("TanH") { expect_gpu_gradients<double>(act_param("TanH"), {x}); }
}
