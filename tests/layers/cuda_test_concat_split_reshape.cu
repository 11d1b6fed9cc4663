// Concat, Split, Flatten and Reshape on CUDA (device-generic layers: copies, shared memory and
// math:: sums) against the CPU, and gradients checked on the GPU.
#include <doctest/doctest.h>
#include <poseidon/layers/concat.hpp>
#include <poseidon/layers/flatten.hpp>
#include <poseidon/layers/reshape.hpp>
#include <poseidon/layers/split.hpp>

#include <string>
#include <type_traits>
#include <vector>

#include "support/cuda_layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {
LayerParameter concat_param(int axis, int bottoms) {
  LayerParameter p("cat", "Concat");
  const std::vector<std::string> names{"b0", "b1", "b2", "b3"};
  p.bottom.assign(names.begin(), names.begin() + bottoms);
  p.top = {"cat"};
  return p.with("concat_param", Message().set("axis", axis));
}
LayerParameter split_param(int tops) {
  LayerParameter p("split", "Split");
  p.bottom = {"x"};
  // Fixed names: gcc 12 warns (-Wrestrict, a false positive) on "x_" + std::to_string(i) at -O3.
  const std::vector<std::string> names{"x_0", "x_1", "x_2", "x_3"};
  p.top.assign(names.begin(), names.begin() + tops);
  return p;
}
LayerParameter flatten_param(int axis = 1, int end_axis = -1) {
  LayerParameter p("flat", "Flatten");
  p.bottom = {"x"};
  p.top = {"y"};
  return p.with("flatten_param", Message().set("axis", axis).set("end_axis", end_axis));
}
LayerParameter reshape_param(std::vector<long long> dims) {
  LayerParameter p("rs", "Reshape");
  p.bottom = {"x"};
  p.top = {"y"};
  Message shape;
  for (long long d : dims) shape.set("dim", d);
  return p.with("reshape_param", Message().add("shape", shape));
}
// Split sums top diffs with cuBLAS axpy (three or more tops): a fused multiply-add's rounding.
template <class T>
double sum_eps() {
  return std::is_same_v<T, float> ? 1e-6 : 1e-14;
}
}  // namespace

TEST_CASE_TEMPLATE("CUDA Concat matches the CPU bit for bit", T, float, double) {
  CHECK(LayerRegistry<CUDA, T>::has("Concat"));
  compare_with_cpu<T>(concat_param(1, 3),
                      {random_tensor<T>({2, 3, 4, 5}, -1, 1, 1), random_tensor<T>({2, 1, 4, 5}, -1, 1, 2),
                       random_tensor<T>({2, 4, 4, 5}, -1, 1, 3)},
                      0.0);
  compare_with_cpu<T>(concat_param(0, 2), {random_tensor<T>({2, 3}, -1, 1, 4), random_tensor<T>({5, 3}, -1, 1, 5)},
                      0.0);
  compare_with_cpu<T>(concat_param(-1, 2),
                      {random_tensor<T>({2, 3, 2}, -1, 1, 6), random_tensor<T>({2, 3, 7}, -1, 1, 7)}, 0.0);
  compare_with_cpu<T>(concat_param(1, 1), {random_tensor<T>({3, 4}, -1, 1, 8)}, 0.0);
}

TEST_CASE_TEMPLATE("CUDA Split, Flatten and Reshape match the CPU", T, float, double) {
  for (const char* type : {"Split", "Flatten", "Reshape"}) CHECK(LayerRegistry<CUDA, T>::has(type));
  for (int tops : {1, 2, 3, 4}) {
    CAPTURE(tops);
    compare_with_cpu<T>(split_param(tops), {random_tensor<T>({3, 4, 5})}, sum_eps<T>());
  }
  compare_with_cpu<T>(flatten_param(), {random_tensor<T>({2, 3, 4, 5})}, 0.0);
  compare_with_cpu<T>(flatten_param(1, 2), {random_tensor<T>({2, 3, 4, 5})}, 0.0);
  compare_with_cpu<T>(reshape_param({0, -1, 2}), {random_tensor<T>({2, 3, 4, 5})}, 0.0);
}

TEST_CASE("CUDA Concat and Split gradients (double, on the GPU)") {
  SUBCASE("Concat") {
    expect_gpu_gradients<double>(concat_param(1, 2), {random_tensor<double>({2, 3, 2}, -1, 1, 9),
                                                     random_tensor<double>({2, 2, 2}, -1, 1, 10)});
  }
  SUBCASE("Split") { expect_gpu_gradients<double>(split_param(3), {random_tensor<double>({3, 4})}); }
}
