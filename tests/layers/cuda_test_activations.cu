// ReLU, Sigmoid and TanH on CUDA against the CPU (out of place and in place; cuDNN for ReLU with
// slope 0, Sigmoid and TanH, own kernels for leaky ReLU), and their gradients checked on the GPU.
#include <doctest/doctest.h>
#include <poseidon/layers/relu.hpp>
#include <poseidon/layers/sigmoid.hpp>
#include <poseidon/layers/tanh.hpp>

#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

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

// Whether the CUDA layer of p, set up over a bottom of shape s, runs on cuDNN.
template <class T>
bool runs_on_cudnn(const LayerParameter& p, const Shape& s) {
  auto layer = make_layer<CUDA, T>(p);
  GpuCtx ctx;
  Tensor<CUDA, T> x(s), y;
  layer->setup(ctx, {&x}, {&y});
  if (auto* l = dynamic_cast<ReLULayer<CUDA, T>*>(layer.get())) return l->uses_cudnn();
  if (auto* l = dynamic_cast<SigmoidLayer<CUDA, T>*>(layer.get())) return l->uses_cudnn();
  if (auto* l = dynamic_cast<TanHLayer<CUDA, T>*>(layer.get())) return l->uses_cudnn();
  FAIL("not an activation layer: ", p.type);
  return false;
}
}  // namespace

TEST_CASE_TEMPLATE("CUDA activations run on cuDNN except leaky ReLU", T, float, double) {
  CHECK(runs_on_cudnn<T>(relu_param(0), {4, 3, 5}));
  CHECK_FALSE(runs_on_cudnn<T>(relu_param(0.1), {4, 3, 5}));  // cuDNN has no leaky ReLU
  CHECK_FALSE(runs_on_cudnn<T>(relu_param(-0.5), {4, 3, 5}));
  CHECK(runs_on_cudnn<T>(act_param("Sigmoid"), {7}));
  CHECK(runs_on_cudnn<T>(act_param("TanH"), {2, 3, 4, 5, 6}));
  CHECK_FALSE(runs_on_cudnn<T>(act_param("TanH"), {0, 3}));  // nothing to describe: the kernels' no-op
}

// -inf is left out on purpose: the CPU's 0 * -inf is NaN, cuDNN's max(-inf, 0) is 0 (docs/cuda.md).
TEST_CASE_TEMPLATE("CUDA ReLU on cuDNN keeps the CPU's NaN, zeros and infinity", T, float, double) {
  const T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
  const std::vector<T> xs{nan, T(-2), T(-0.0), T(0), T(3), inf, -nan, T(-1e-30)};
  for (bool in_place : {false, true}) {
    CAPTURE(in_place);
    auto cpu = make_layer<CPU, T>(relu_param(0));
    auto gpu = make_layer<CUDA, T>(relu_param(0));
    Ctx cctx;
    GpuCtx gctx;
    Tensor<CPU, T> cx(Shape{static_cast<int>(xs.size())}), cy;
    cx.copy_data_from_host(xs);
    Tensor<CUDA, T> gx = to_gpu(cx), gy;
    Tensor<CPU, T>* ct = in_place ? &cx : &cy;
    Tensor<CUDA, T>* gt = in_place ? &gx : &gy;
    cpu->setup(cctx, {&cx}, {ct});
    gpu->setup(gctx, {&gx}, {gt});
    cpu->forward(cctx, {&cx}, {ct});
    gpu->forward(gctx, {&gx}, {gt});
    const std::vector<T> c = ct->data_to_host(), g = gt->data_to_host();
    REQUIRE(c.size() == g.size());
    for (std::size_t i = 0; i < c.size(); ++i) {
      CAPTURE(i);
      CHECK(std::isnan(g[i]) == std::isnan(c[i]));
      if (!std::isnan(c[i])) CHECK(g[i] == c[i]);  // -0 == +0: the sign of a zero output may differ
    }
  }
}

TEST_CASE_TEMPLATE("CUDA ReLU matches the CPU bit for bit", T, float, double) {
  for (double slope : {0.0, 0.1, -0.5}) {
    CAPTURE(slope);
    for (bool in_place : {false, true}) {
      CAPTURE(in_place);
      CompareOptions o;
      o.in_place = in_place;
      // Only comparisons and one multiplication: both devices round identically.
      compare_with_cpu<T>(relu_param(slope), {random_tensor<T>({4, 3, 9, 7}, -2, 2, 3)}, 0.0, o);
      // Three passes and an odd 1-d size: the cuDNN descriptor is reused, the kernels' tails covered.
      o.passes = 3;
      compare_with_cpu<T>(relu_param(slope), {random_tensor<T>({100003}, -1, 1, 9)}, 0.0, o);
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
  SUBCASE("negative leaky ReLU") {
    expect_gpu_gradients<double>(relu_param(-0.5), {x}, [](auto& o) { o.kink_range = 1e-3; });
  }
  SUBCASE("Sigmoid") { expect_gpu_gradients<double>(act_param("Sigmoid"), {x}); }
  SUBCASE("TanH") { expect_gpu_gradients<double>(act_param("TanH"), {x}); }
}
