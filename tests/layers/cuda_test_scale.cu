// Scale on CUDA against the CPU (learned scale and bias, a scale bottom, scalar, several axes,
// in place), and its gradients checked on the GPU.
#include <doctest/doctest.h>
#include <poseidon/layers/scale.hpp>

#include <type_traits>

#include "support/cuda_layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {
Message random_filler(double lo, double hi) { return Message().set("type", "uniform").set("min", lo).set("max", hi); }

LayerParameter scale_param(int axis = 1, int num_axes = 1, bool bias = false, int bottoms = 1) {
  LayerParameter p("sc", "Scale");
  p.bottom = {"x"};
  if (bottoms > 1) p.bottom.push_back("s");
  p.top = {"y"};
  Message m;
  m.set("axis", axis).set("num_axes", num_axes).set("bias_term", bias);
  m.add("filler", random_filler(0.5, 2));
  m.add("bias_filler", random_filler(-1, 1));
  return p.with("scale_param", m);
}
// Products are rounded alike (up to a fused multiply-add); the gradient sums run in double on
// both devices but in different orders, over up to 5e4 products whose signs cancel: double
// differences of 3e-13 were seen on an H100, hence 1e-10.
template <class T>
double scale_eps() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-10;
}
}  // namespace

TEST_CASE_TEMPLATE("CUDA Scale matches the CPU", T, float, double) {
  CHECK(LayerRegistry<CUDA, T>::has("Scale"));
  auto x = random_tensor<T>({4, 6, 5, 7}, -2, 2, 21);
  auto both = [](const LayerParameter& p, const std::vector<Tensor<CPU, T>>& in) {
    for (bool in_place : {false, true}) {
      CAPTURE(in_place);
      CompareOptions o;
      o.in_place = in_place;
      compare_with_cpu<T>(p, in, scale_eps<T>(), o);
    }
  };
  SUBCASE("per channel, learned, with bias") { both(scale_param(1, 1, true), {x}); }
  SUBCASE("per channel, learned, no bias") { both(scale_param(1, 1, false), {x}); }
  SUBCASE("two axes") { both(scale_param(1, 2, true), {x}); }
  SUBCASE("to the last axis") { both(scale_param(2, -1, true), {x}); }
  SUBCASE("a scalar") { both(scale_param(1, 0, true), {x}); }
  SUBCASE("axis 0") { both(scale_param(0, 1, true), {x}); }
  SUBCASE("scale from a second bottom, with bias") {
    both(scale_param(1, 1, true, 2), {x, random_tensor<T>({6, 5}, 0.5, 2, 22)});
  }
  SUBCASE("many elements per scale value") {
    both(scale_param(1, 1, true), {random_tensor<T>({32, 3, 40, 40}, -2, 2, 23)});
  }
}

TEST_CASE("CUDA Scale gradients (double, on the GPU)") {
  auto x = random_tensor<double>({2, 3, 4, 2}, -2, 2, 24);
  SUBCASE("learned scale and bias") { expect_gpu_gradients<double>(scale_param(1, 1, true), {x}); }
  SUBCASE("scale bottom") {
    expect_gpu_gradients<double>(scale_param(1, 2, true, 2), {x, random_tensor<double>({3, 4}, 0.5, 2, 25)});
  }
}
