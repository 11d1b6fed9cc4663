// Pooling on CUDA against the CPU: MAX (argmax, mask top, ties, empty windows) and AVE (Caffe's
// divisor at borders) with CEIL and FLOOR rounding, padding, rectangular windows and global pooling;
// the CPU's parameter errors; and its gradients checked on the GPU in double.
#include <doctest/doctest.h>
#include <poseidon/layers/pooling.hpp>

#include <cmath>
#include <cstdint>

#include "support/cuda_layer_testing.hpp"
#include "support/layer_params.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {

// MAX compares and adds the gradients of a position in the CPU's order: identical bits.
constexpr double max_eps = 0;
// AVE sums each window, divides, and adds dy / divisor in the CPU's order: identical bits too.
constexpr double ave_eps = 0;

/// Small integers: many ties inside every window.
template <class T>
Tensor<CPU, T> tied_tensor(const Shape& s, std::uint64_t seed) {
  auto t = random_tensor<T>(s, -2.5, 2.5, seed);
  for (auto& v : t.data_span()) v = static_cast<T>(std::round(static_cast<double>(v)));
  return t;
}

}  // namespace

TEST_CASE_TEMPLATE("CUDA Pooling MAX matches the CPU bit for bit", T, float, double) {
  CHECK(LayerRegistry<CUDA, T>::has("Pooling"));
  SUBCASE("AlexNet's 3x3 stride 2 (13 -> 6)") {
    compare_with_cpu<T>(pool_param(pool_msg("MAX", 3, 2)), {random_tensor<T>({2, 3, 13, 13})}, max_eps);
  }
  SUBCASE("CEIL rounding adds a clipped last window (14 -> 7)") {
    compare_with_cpu<T>(pool_param(pool_msg("MAX", 3, 2)), {random_tensor<T>({2, 3, 14, 14})}, max_eps);
  }
  SUBCASE("FLOOR rounding") {
    compare_with_cpu<T>(pool_param(pool_msg("MAX", 3, 2).set_enum("round_mode", "FLOOR")),
                        {random_tensor<T>({2, 3, 14, 14})}, max_eps);
  }
  SUBCASE("padding, and the last window dropped when it starts in the padding") {
    compare_with_cpu<T>(pool_param(pool_msg("MAX", 2, 2, 1)), {random_tensor<T>({2, 2, 7, 6})}, max_eps);
    compare_with_cpu<T>(pool_param(pool_msg("MAX", 3, 2, 1)), {random_tensor<T>({2, 2, 9, 10})}, max_eps);
  }
  SUBCASE("rectangular kernel, stride and pad") {
    compare_with_cpu<T>(pool_param(pool_msg_hw("MAX", 3, 2, 2, 1, 1, 0)), {random_tensor<T>({2, 3, 8, 7})}, max_eps);
  }
  SUBCASE("overlapping windows and ties: the first maximum wins, also in the mask top") {
    compare_with_cpu<T>(pool_mask_param(pool_msg("MAX", 3, 1, 1)), {tied_tensor<T>({2, 3, 8, 9}, 12)}, max_eps);
    compare_with_cpu<T>(pool_mask_param(pool_msg("MAX", 2, 1)), {tied_tensor<T>({1, 2, 5, 5}, 13)}, max_eps);
  }
  SUBCASE("kernel smaller than stride: empty windows output 0 and argmax -1") {
    compare_with_cpu<T>(pool_mask_param(pool_msg("MAX", 1, 3)), {random_tensor<T>({2, 2, 5, 5})}, max_eps);
  }
  SUBCASE("global pooling") {
    Message m;
    m.set_enum("pool", "MAX").set("global_pooling", true);
    compare_with_cpu<T>(pool_mask_param(m), {random_tensor<T>({2, 4, 6, 7})}, max_eps);
  }
  SUBCASE("a large plane, many planes") {
    compare_with_cpu<T>(pool_param(pool_msg("MAX", 3, 2)), {random_tensor<T>({4, 16, 55, 55})}, max_eps);
  }
}

TEST_CASE_TEMPLATE("CUDA Pooling AVE matches the CPU bit for bit", T, float, double) {
  const double eps = ave_eps;
  SUBCASE("3x3 stride 2 pad 1: padding counts in the divisor") {
    compare_with_cpu<T>(pool_param(pool_msg("AVE", 3, 2, 1)), {random_tensor<T>({2, 3, 9, 9})}, eps);
  }
  SUBCASE("CEIL rounding: the last window is cut at the image, divisor and all (8 -> 4)") {
    compare_with_cpu<T>(pool_param(pool_msg("AVE", 3, 2)), {random_tensor<T>({1, 2, 8, 8})}, eps);
  }
  SUBCASE("CEIL with padding: the last window is cut at the padded extent") {
    compare_with_cpu<T>(pool_param(pool_msg("AVE", 3, 2, 1)), {random_tensor<T>({1, 2, 10, 10})}, eps);
    compare_with_cpu<T>(pool_param(pool_msg("AVE", 4, 3, 2)), {random_tensor<T>({2, 2, 11, 12})}, eps);
  }
  SUBCASE("FLOOR rounding") {
    compare_with_cpu<T>(pool_param(pool_msg("AVE", 3, 2, 1).set_enum("round_mode", "FLOOR")),
                        {random_tensor<T>({2, 3, 10, 10})}, eps);
  }
  SUBCASE("rectangular kernel, stride and pad") {
    compare_with_cpu<T>(pool_param(pool_msg_hw("AVE", 2, 3, 1, 2, 1, 1)), {random_tensor<T>({2, 3, 7, 8})}, eps);
  }
  SUBCASE("kernel smaller than stride: empty windows average to 0") {
    compare_with_cpu<T>(pool_param(pool_msg("AVE", 1, 3)), {random_tensor<T>({2, 2, 5, 5})}, eps);
  }
  SUBCASE("global pooling") {
    Message m;
    m.set_enum("pool", "AVE").set("global_pooling", true);
    compare_with_cpu<T>(pool_param(m), {random_tensor<T>({3, 5, 6, 6})}, eps);
  }
  SUBCASE("a large plane, many planes") {
    compare_with_cpu<T>(pool_param(pool_msg("AVE", 3, 2, 1)), {random_tensor<T>({4, 16, 27, 27})}, eps);
  }
}

TEST_CASE("CUDA Pooling keeps the argmax the CPU keeps") {
  const LayerParameter p = pool_param(pool_msg("MAX", 3, 2, 1));
  auto cpu = make_layer<CPU, float>(p);
  auto gpu = make_layer<CUDA, float>(p);
  Ctx cctx;
  GpuCtx gctx;
  Tensor<CPU, float> cx = tied_tensor<float>({2, 3, 9, 8}, 14), cy;
  Tensor<CUDA, float> gx = to_gpu(cx), gy;
  cpu->setup(cctx, {&cx}, {&cy});
  gpu->setup(gctx, {&gx}, {&gy});
  cpu->forward(cctx, {&cx}, {&cy});
  gpu->forward(gctx, {&gx}, {&gy});
  const auto& ca = dynamic_cast<PoolingLayer<CPU, float>&>(*cpu).argmax();
  const auto& ga = dynamic_cast<PoolingLayer<CUDA, float>&>(*gpu).argmax();
  REQUIRE(ga.shape() == ca.shape());
  CHECK(ga.data_to_host() == ca.data_to_host());
}

TEST_CASE("CUDA Pooling rejects bad parameters with the CPU layer's messages") {
  expect_same_setup_error(pool_param(pool_msg("MAX", 3, 1, 3)), {1, 1, 5, 5});  // pad not smaller than the kernel
  expect_same_setup_error(pool_param(pool_msg("MAX", 7, 1)), {1, 1, 5, 5});     // kernel larger than the input
  expect_same_setup_error(pool_param(pool_msg("AVE", 2, 0)), {1, 1, 5, 5});     // stride 0
  expect_same_setup_error(pool_param(Message().set_enum("pool", "STOCHASTIC").set("kernel_size", 2)), {1, 1, 4, 4});
  expect_same_setup_error(pool_param(Message().set_enum("pool", "MAX").set("global_pooling", true).set("kernel_size", 2)),
                          {1, 1, 4, 4});
  expect_same_setup_error(pool_param(Message().set_enum("pool", "MAX")), {1, 1, 4, 4});  // no kernel
  expect_same_setup_error(pool_param(pool_msg("MAX", 2)), {1, 4, 4});                    // not 4-d
}

TEST_CASE("CUDA Pooling gradients (double, on the GPU)") {
  SUBCASE("MAX, overlapping, padded, CEIL") {
    expect_gpu_gradients<double>(pool_param(pool_msg("MAX", 3, 2, 1)), {distinct_tensor<double>({2, 2, 6, 7}, 15)});
  }
  SUBCASE("AVE, overlapping, padded, CEIL") {
    expect_gpu_gradients<double>(pool_param(pool_msg("AVE", 3, 2, 1)), {random_tensor<double>({2, 2, 6, 7})});
  }
  SUBCASE("AVE global") {
    Message m;
    m.set_enum("pool", "AVE").set("global_pooling", true);
    expect_gpu_gradients<double>(pool_param(m), {random_tensor<double>({2, 3, 4, 5})});
  }
}
