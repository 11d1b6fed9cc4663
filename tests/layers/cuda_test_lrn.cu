// LRN on CUDA against the CPU, across channels and within a channel, at AlexNet's parameters and
// others (windows wider than the channels, large alpha, beta away from 3/4); the CPU's parameter
// errors; and its gradients checked on the GPU in double.
#include <doctest/doctest.h>
#include <poseidon/layers/lrn.hpp>

#include <type_traits>

#include "support/cuda_layer_testing.hpp"
#include "support/layer_params.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {

// The kernels evaluate the CPU's expression in its order without fused multiply-adds; sqrt and
// division round correctly on both devices, so beta = 3/4 gives the CPU's bits. Other betas go
// through pow (CUDA: up to 2 ulp in double, 4 in float; glibc: under 1), and the backward
// difference of two O(1) terms carries those ulps as absolute error.
template <class T>
double lrn_eps() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-12;
}

}  // namespace

TEST_CASE_TEMPLATE("CUDA LRN across channels matches the CPU", T, float, double) {
  CHECK(LayerRegistry<CUDA, T>::has("LRN"));
  const double eps = lrn_eps<T>();
  SUBCASE("AlexNet: size 5, alpha 1e-4, beta 0.75, k 1") {
    compare_with_cpu<T>(lrn_param(5, 1e-4, 0.75, 1), {random_tensor<T>({2, 7, 5, 6}, -3, 3)}, eps);
  }
  SUBCASE("AlexNet's parameters, large alpha to make the normalisation matter") {
    compare_with_cpu<T>(lrn_param(5, 3, 0.75, 1), {random_tensor<T>({2, 9, 4, 4}, -2, 2)}, eps);
  }
  SUBCASE("size 3, beta 0.5, k 2") {
    compare_with_cpu<T>(lrn_param(3, 3, 0.5, 2), {random_tensor<T>({3, 4, 3, 5})}, eps);
  }
  SUBCASE("window wider than the channels") {
    compare_with_cpu<T>(lrn_param(9, 2, 1.3, 1.5), {random_tensor<T>({2, 4, 3, 3})}, eps);
  }
  SUBCASE("size 1") { compare_with_cpu<T>(lrn_param(1, 1, 0.75, 1), {random_tensor<T>({2, 3, 4, 4})}, eps); }
  SUBCASE("AlexNet-sized planes") {
    compare_with_cpu<T>(lrn_param(5, 1e-2, 0.75, 1), {random_tensor<T>({2, 16, 27, 27}, -4, 4)}, eps);
  }
}

TEST_CASE_TEMPLATE("CUDA LRN within a channel matches the CPU", T, float, double) {
  const double eps = lrn_eps<T>();
  SUBCASE("size 3, beta 0.75") {
    compare_with_cpu<T>(lrn_param(3, 9, 0.75, 1, true), {random_tensor<T>({2, 3, 5, 6})}, eps);
  }
  SUBCASE("size 5, beta 1, k 2") {
    compare_with_cpu<T>(lrn_param(5, 4, 1, 2, true), {random_tensor<T>({2, 2, 7, 8}, -2, 2)}, eps);
  }
  SUBCASE("window wider than the plane") {
    compare_with_cpu<T>(lrn_param(7, 2, 0.6, 1, true), {random_tensor<T>({1, 3, 4, 5})}, eps);
  }
  SUBCASE("larger planes") {
    compare_with_cpu<T>(lrn_param(3, 1, 0.75, 1, true), {random_tensor<T>({2, 8, 24, 20}, -3, 3)}, eps);
  }
}

TEST_CASE("CUDA LRN rejects bad parameters with the CPU layer's messages") {
  expect_same_setup_error(lrn_param(4, 1, 0.75, 1), {1, 3, 2, 2});  // even size
  expect_same_setup_error(lrn_param(0, 1, 0.75, 1), {1, 3, 2, 2});  // size 0
  expect_same_setup_error(lrn_param(3, 1, 0.75, 1), {1, 3, 2});     // not 4-d
}

TEST_CASE("CUDA LRN gradients (double, on the GPU)") {
  SUBCASE("across channels") {
    expect_gpu_gradients<double>(lrn_param(3, 2, 0.75, 1.5), {random_tensor<double>({2, 5, 3, 3}, -2, 2)});
  }
  SUBCASE("across channels, beta 1.2") {
    expect_gpu_gradients<double>(lrn_param(5, 1, 1.2, 1), {random_tensor<double>({2, 4, 2, 3}, -2, 2)});
  }
  SUBCASE("within a channel") {
    expect_gpu_gradients<double>(lrn_param(3, 4, 0.75, 1, true), {random_tensor<double>({2, 2, 4, 5}, -2, 2)});
  }
}
