#include <doctest/doctest.h>
#include <poseidon/layers/pooling.hpp>

#include "support/layer_params.hpp"
#include "support/layer_testing.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

using namespace poseidon;
using namespace poseidon::testing;

namespace {
// A named pooling_param on an input shape, the case list of most tests here.
struct PoolCase {
  const char* name;
  Message msg;
  Shape in;
};
}  // namespace

TEST_CASE_TEMPLATE("Pooling MAX forward by hand, with the mask top", T, float, double) {
  // Caffe's test input: a 3x5 plane, 2x2 windows, stride 1 -> 2x4.
  auto x = tensor_of<T>({1, 2, 3, 5}, {1, 2, 5, 2, 3, 9, 4, 1, 4, 8, 1, 2, 5, 2, 3,    // channel 0
                                       -1, -2, -5, -2, -3, -9, -4, -1, -4, -8, -1, -2, -5, -2, -3});
  Tensor<CPU, T> y, mask;
  PoolingLayer<CPU, T> pool(pool_mask_param(pool_msg("MAX", 2)));
  Ctx ctx;
  pool.setup(ctx, {&x}, {&y, &mask});
  REQUIRE(y.shape() == Shape{1, 2, 2, 4});
  REQUIRE(mask.shape() == y.shape());
  pool.forward(ctx, {&x}, {&y, &mask});
  const std::vector<double> expected = {9, 5, 5, 8, 9, 5, 5, 8, -1, -1, -1, -2, -1, -1, -1, -2};
  const std::vector<double> where = {5, 2, 2, 9, 5, 12, 12, 9, 0, 7, 7, 3, 10, 7, 7, 13};
  for (std::size_t i = 0; i < expected.size(); ++i) {
    CAPTURE(i);
    CHECK(double(y.data()[i]) == expected[i]);
    CHECK(double(mask.data()[i]) == where[i]);
    CHECK(pool.argmax().data()[i] == int(where[i]));
  }
  // Backward routes each top gradient to its argmax; shared maxima add up.
  for (std::size_t i = 0; i < y.count(); ++i) y.diff()[i] = T(1);
  pool.backward(ctx, {&y, &mask}, {true}, {&x});
  const std::vector<double> dx0 = {0, 0, 2, 0, 0, 2, 0, 0, 0, 2, 0, 0, 2, 0, 0};
  for (std::size_t i = 0; i < dx0.size(); ++i) CHECK(double(x.diff()[i]) == dx0[i]);
  // Ties go to the first maximum in row-major order, as in Caffe.
  auto ties = tensor_of<T>({1, 1, 2, 3}, {1, 3, 3, 3, 3, 0});
  Tensor<CPU, T> ty;
  PoolingLayer<CPU, T> tie_pool(pool_param(pool_msg("MAX", 2)));
  tie_pool.setup(ctx, {&ties}, {&ty});
  tie_pool.forward(ctx, {&ties}, {&ty});
  CHECK(tie_pool.argmax().data()[0] == 1);
  CHECK(tie_pool.argmax().data()[1] == 1);
}

TEST_CASE_TEMPLATE("Pooling AVE forward by hand: padding counts in the divisor", T, float, double) {
  // 3x3 plane 1..9, 3x3 windows, stride 2, pad 1 -> 2x2; every window has 9 padded cells.
  auto x = tensor_of<T>({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  Tensor<CPU, T> y;
  PoolingLayer<CPU, T> pool(pool_param(pool_msg("AVE", 3, 2, 1)));
  Ctx ctx;
  pool.setup(ctx, {&x}, {&y});
  REQUIRE(y.shape() == Shape{1, 1, 2, 2});
  pool.forward(ctx, {&x}, {&y});
  CHECK(y.data()[0] == doctest::Approx((1 + 2 + 4 + 5) / 9.0));
  CHECK(y.data()[1] == doctest::Approx((2 + 3 + 5 + 6) / 9.0));
  CHECK(y.data()[2] == doctest::Approx((4 + 5 + 7 + 8) / 9.0));
  CHECK(y.data()[3] == doctest::Approx((5 + 6 + 8 + 9) / 9.0));
  // A window reaching past the padded border divides by its part inside it: 4x4 input,
  // 3x3 windows, stride 2, no pad: ceil((4-3)/2)+1 = 2; the last window covers 2 rows/cols.
  auto x4 = tensor_of<T>({1, 1, 4, 4}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16});
  PoolingLayer<CPU, T> pool4(pool_param(pool_msg("AVE", 3, 2)));
  pool4.setup(ctx, {&x4}, {&y});
  pool4.forward(ctx, {&x4}, {&y});
  REQUIRE(y.shape() == Shape{1, 1, 2, 2});
  CHECK(y.data()[0] == doctest::Approx((1 + 2 + 3 + 5 + 6 + 7 + 9 + 10 + 11) / 9.0));
  CHECK(y.data()[1] == doctest::Approx((3 + 4 + 7 + 8 + 11 + 12) / 6.0));
  CHECK(y.data()[3] == doctest::Approx((11 + 12 + 15 + 16) / 4.0));
  // Backward spreads each gradient over its window with the same divisor.
  for (std::size_t i = 0; i < 4; ++i) y.diff()[i] = T(1);
  pool4.backward(ctx, {&y}, {true}, {&x4});
  CHECK(x4.diff()[0] == doctest::Approx(1 / 9.0));
  CHECK(x4.diff()[2] == doctest::Approx(1 / 9.0 + 1 / 6.0));
  CHECK(x4.diff()[10] == doctest::Approx(1 / 9.0 + 1 / 6.0 + 1 / 6.0 + 1 / 4.0));
  CHECK(x4.diff()[15] == doctest::Approx(1 / 4.0));
}

TEST_CASE("Pooling output size: CEIL, FLOOR and the last-window clip") {
  Ctx ctx;
  auto shape_of = [&](const Message& m, const Shape& in) {
    auto x = random_tensor<float>(in);
    Tensor<CPU, float> y;
    PoolingLayer<CPU, float> pool(pool_param(m));
    pool.setup(ctx, {&x}, {&y});
    pool.forward(ctx, {&x}, {&y});
    return y.shape();
  };
  // AlexNet pool1: 55 -> 27 with 3x3 stride 2.
  CHECK(shape_of(pool_msg("MAX", 3, 2), Shape{1, 1, 55, 55}) == Shape{1, 1, 27, 27});
  // ceil((6 + 2 - 3) / 2) + 1 = 4, and the last window starts at 6 - 1 = 5 < 6 + 1: kept.
  CHECK(shape_of(pool_msg("MAX", 3, 2, 1), Shape{1, 1, 6, 6}) == Shape{1, 1, 4, 4});
  // ceil((5 + 2 - 2) / 2) + 1 = 4, but window 3 starts at 6 >= 5 + 1: clipped to 3.
  CHECK(shape_of(pool_msg("AVE", 2, 2, 1), Shape{1, 1, 5, 5}) == Shape{1, 1, 3, 3});
  // FLOOR: floor((6 - 3) / 2) + 1 = 2 instead of 3.
  Message floor = pool_msg("MAX", 3, 2);
  floor.set_enum("round_mode", "FLOOR");
  CHECK(shape_of(floor, Shape{2, 3, 6, 7}) == Shape{2, 3, 2, 3});
  CHECK(shape_of(pool_msg("MAX", 3, 2), Shape{2, 3, 6, 7}) == Shape{2, 3, 3, 3});
  // Rectangular kernel and stride.
  Message rect;
  rect.set("kernel_h", 2).set("kernel_w", 3).set("stride_h", 1).set("stride_w", 2);
  CHECK(shape_of(rect, Shape{1, 2, 4, 7}) == Shape{1, 2, 3, 3});
}

TEST_CASE_TEMPLATE("Pooling global", T, float, double) {
  auto x = tensor_of<T>({1, 2, 2, 3}, {1, 7, 3, 4, 5, 6, -1, -2, -3, -4, -5, -6});
  Tensor<CPU, T> y;
  Ctx ctx;
  for (const char* method : {"MAX", "AVE"}) {
    Message m;
    m.set_enum("pool", method).set("global_pooling", true);
    PoolingLayer<CPU, T> pool(pool_param(m));
    pool.setup(ctx, {&x}, {&y});
    pool.forward(ctx, {&x}, {&y});
    REQUIRE(y.shape() == Shape{1, 2, 1, 1});
    if (std::string(method) == "MAX") {
      CHECK(y.data()[0] == T(7));
      CHECK(y.data()[1] == T(-1));
    } else {
      CHECK(y.data()[0] == doctest::Approx(26 / 6.0));
      CHECK(y.data()[1] == doctest::Approx(-21 / 6.0));
    }
    // The kernel follows the bottom on reshape.
    auto big = random_tensor<T>({3, 2, 4, 5});
    pool.forward(ctx, {&big}, {&y});
    CHECK(y.shape() == Shape{3, 2, 1, 1});
  }
}

TEST_CASE_TEMPLATE("Pooling gradients", T, float, double) {
  using Case = PoolCase;
  Message global_max, global_ave;
  global_max.set_enum("pool", "MAX").set("global_pooling", true);
  global_ave.set_enum("pool", "AVE").set("global_pooling", true);
  Message floor = pool_msg("MAX", 3, 2);
  floor.set_enum("round_mode", "FLOOR");
  const std::vector<Case> cases = {
      {"MAX 2x2 s2", pool_msg("MAX", 2, 2), Shape{2, 2, 4, 5}},
      {"MAX 2x2 s2, tiled", pool_msg("MAX", 2, 2), Shape{2, 2, 4, 6}},
      {"MAX 3x3 s2 (overlapping, ceil)", pool_msg("MAX", 3, 2), Shape{2, 2, 6, 7}},
      {"MAX 3x3 s2 pad 1", pool_msg("MAX", 3, 2, 1), Shape{1, 2, 5, 6}},
      {"MAX floor", floor, Shape{1, 2, 6, 7}},
      {"MAX global", global_max, Shape{2, 3, 3, 4}},
      {"AVE 3x3 s2", pool_msg("AVE", 3, 2), Shape{2, 2, 6, 7}},
      {"AVE 3x3 s1 pad 1", pool_msg("AVE", 3, 1, 1), Shape{1, 2, 4, 5}},
      {"AVE rectangular", pool_msg_hw("AVE", 3, 2, 2, 1, 1, 0), Shape{1, 2, 5, 4}},
      {"AVE global", global_ave, Shape{2, 2, 3, 3}},
  };
  for (const auto& c : cases) {
    CAPTURE(std::string(c.name));
    auto x = distinct_tensor<T>(c.in);
    Tensor<CPU, T> y;
    PoolingLayer<CPU, T> pool(pool_param(c.msg));
    expect_gradients(pool, {&x}, {&y});
  }
  SUBCASE("MAX with the mask top") {
    auto x = distinct_tensor<T>({2, 2, 5, 5});
    Tensor<CPU, T> y, mask;
    PoolingLayer<CPU, T> pool(pool_mask_param(pool_msg("MAX", 3, 2)));
    expect_gradients(pool, {&x}, {&y, &mask});
  }
}

TEST_CASE_TEMPLATE("Pooling MAX matches the definition, ties included", T, float, double) {
  // Caffe's definition: scan the window (clipped to the image) in row-major order; a tap replaces
  // the maximum only when strictly greater, so ties go to the first. Values from {0..3} make ties
  // common. Exactly tiled cases (kernel == stride, no pad) take their own loops.
  using Case = PoolCase;
  const std::vector<Case> cases = {
      {"2x2 s2, tiled (LeNet)", pool_msg("MAX", 2, 2), Shape{3, 4, 8, 6}},
      {"3x3 s3, tiled", pool_msg("MAX", 3, 3), Shape{2, 3, 9, 6}},
      {"2x3 s(2,3), tiled", pool_msg_hw("MAX", 2, 3, 2, 3, 0, 0), Shape{2, 2, 4, 9}},
      {"2x2 s2, last window clipped", pool_msg("MAX", 2, 2), Shape{2, 3, 5, 7}},
      {"3x3 s2, overlapping", pool_msg("MAX", 3, 2), Shape{2, 3, 7, 9}},
      {"3x3 s2 pad 1", pool_msg("MAX", 3, 2, 1), Shape{2, 2, 6, 5}},
  };
  Ctx ctx;
  for (const auto& c : cases) {
    CAPTURE(std::string(c.name));
    auto x = random_tensor<T>(c.in, 0, 4, 17);
    for (std::size_t i = 0; i < x.count(); ++i) x.data()[i] = std::floor(x.data()[i]);
    Tensor<CPU, T> y, mask;
    PoolingLayer<CPU, T> pool(pool_mask_param(c.msg));
    pool.setup(ctx, {&x}, {&y, &mask});
    pool.forward(ctx, {&x}, {&y, &mask});
    const auto& m = c.msg;
    const int kh = m.get("kernel_size", m.get("kernel_h", 0)), kw = m.get("kernel_size", m.get("kernel_w", 0));
    const int sh = m.get("stride", m.get("stride_h", 1)), sw = m.get("stride", m.get("stride_w", 1));
    const int pad = m.get("pad", 0);
    const int H = c.in[2], W = c.in[3], OH = y.shape()[2], OW = y.shape()[3];
    int ties = 0;
    for (int pl = 0; pl < c.in[0] * c.in[1]; ++pl)
      for (int oh = 0; oh < OH; ++oh)
        for (int ow = 0; ow < OW; ++ow) {
          const int h0 = std::max(oh * sh - pad, 0), h1 = std::min(oh * sh - pad + kh, H);
          const int w0 = std::max(ow * sw - pad, 0), w1 = std::min(ow * sw - pad + kw, W);
          const T* xp = x.data() + static_cast<std::size_t>(pl) * static_cast<std::size_t>(H * W);
          int best = h0 * W + w0;
          for (int h = h0; h < h1; ++h)
            for (int w = w0; w < w1; ++w) {
              ties += (h * W + w != best && xp[h * W + w] == xp[best]) ? 1 : 0;
              if (xp[h * W + w] > xp[best]) best = h * W + w;
            }
          const std::size_t o = (static_cast<std::size_t>(pl) * static_cast<std::size_t>(OH) + static_cast<std::size_t>(oh)) *
                                    static_cast<std::size_t>(OW) + static_cast<std::size_t>(ow);
          REQUIRE(pool.argmax().data()[o] == best);
          REQUIRE(y.data()[o] == xp[best]);
          REQUIRE(mask.data()[o] == T(best));
        }
    CHECK(ties > 0);
  }
}

TEST_CASE("Pooling MAX at column stride 2: the AVX-512 path gives the portable loops' values and argmax") {
  // Ties (values from {0..3}), NaN and -inf in the data; widths of one, two and several registers
  // of outputs, 2- and 3-wide windows, row strides 1 and 2, last windows clipped.
#if defined(POSEIDON_POOL_X86)
  if (!detail::pool_cpu_has_avx512()) {
    MESSAGE("this CPU has no AVX-512: the vector path is not checked");
    return;
  }
  using Case = PoolCase;
  const std::vector<Case> cases = {
      {"3x3 s2, 32x32 (CIFAR-10 quick pool1)", pool_msg("MAX", 3, 2), Shape{2, 3, 32, 32}},
      {"3x3 s2, 55x55 (AlexNet pool1)", pool_msg("MAX", 3, 2), Shape{1, 3, 55, 55}},
      {"3x3 s2, 13x13", pool_msg("MAX", 3, 2), Shape{2, 2, 13, 13}},
      {"2x2 s2, 9x33 (not tiled)", pool_msg("MAX", 2, 2), Shape{2, 2, 9, 33}},
      {"2x2 s2, 24x24 (LeNet pool1, tiled)", pool_msg("MAX", 2, 2), Shape{2, 3, 24, 24}},
      {"3x2 s(1,2), 7x70", pool_msg_hw("MAX", 3, 2, 1, 2, 0, 0), Shape{1, 2, 7, 70}},
      {"2x3 s(2,2), 6x4", pool_msg_hw("MAX", 2, 3, 2, 2, 0, 0), Shape{1, 2, 6, 4}},
  };
  Ctx ctx;
  for (const auto& c : cases) {
    CAPTURE(std::string(c.name));
    auto x = random_tensor<float>(c.in, 0, 4, 23);
    for (std::size_t i = 0; i < x.count(); ++i) {
      x.data()[i] = std::floor(x.data()[i]);
      if (i % 37 == 5) x.data()[i] = std::numeric_limits<float>::quiet_NaN();
      if (i % 41 == 7) x.data()[i] = -std::numeric_limits<float>::infinity();
    }
    auto run = [&](bool vector) {
      detail::pool_vector_allowed() = vector;
      Tensor<CPU, float> y, mask;
      PoolingLayer<CPU, float> pool(pool_mask_param(c.msg));
      pool.setup(ctx, {&x}, {&y, &mask});
      pool.forward(ctx, {&x}, {&y, &mask});
      detail::pool_vector_allowed() = true;
      const auto a = pool.argmax().data_to_host();
      return std::make_tuple(y.data_to_host(), std::vector<int>(a.begin(), a.end()), mask.data_to_host());
    };
    const auto [yv, av, mv] = run(true);
    const auto [yp, ap, mp] = run(false);
    REQUIRE(yv.size() == yp.size());
    std::size_t value_diffs = 0, nans = 0;
    for (std::size_t i = 0; i < yv.size(); ++i) {
      nans += std::isnan(yp[i]) ? 1 : 0;
      const bool same = std::isnan(yv[i]) ? std::isnan(yp[i]) : yv[i] == yp[i];
      value_diffs += same ? 0 : 1;
    }
    CHECK(value_diffs == 0);
    CHECK(av == ap);
    CHECK(mv == mp);
    CHECK(nans > 0);  // the NaN rules were exercised
  }
#else
  MESSAGE("no x86 vector path in this build");
#endif
}

TEST_CASE("Pooling AVE at column stride 2: the AVX-512 path gives the portable loops' outputs and gradients") {
#if defined(POSEIDON_POOL_X86)
  if (!detail::pool_cpu_has_avx512()) {
    MESSAGE("this CPU has no AVX-512: the vector path is not checked");
    return;
  }
  using Case = PoolCase;
  const std::vector<Case> cases = {
      {"3x3 s2, 16x16 (CIFAR-10 quick pool2)", pool_msg("AVE", 3, 2), Shape{2, 3, 16, 16}},
      {"3x3 s2, 8x8 (CIFAR-10 quick pool3)", pool_msg("AVE", 3, 2), Shape{2, 4, 8, 8}},
      {"3x3 s2, 17x32: last windows clipped", pool_msg("AVE", 3, 2), Shape{1, 2, 17, 32}},
      {"2x2 s2, 9x7", pool_msg("AVE", 2, 2), Shape{2, 2, 9, 7}},
      {"3x2 s(1,2), 7x30", pool_msg_hw("AVE", 3, 2, 1, 2, 0, 0), Shape{1, 2, 7, 30}},
      {"2x3 s(2,2), 5x3", pool_msg_hw("AVE", 2, 3, 2, 2, 0, 0), Shape{1, 2, 5, 3}},
  };
  Ctx ctx;
  for (const auto& c : cases) {
    CAPTURE(std::string(c.name));
    auto x = random_tensor<float>(c.in, -1, 1, 29);
    auto run = [&](bool vector) {
      detail::pool_vector_allowed() = vector;
      Tensor<CPU, float> y;
      PoolingLayer<CPU, float> pool(pool_param(c.msg));
      pool.setup(ctx, {&x}, {&y});
      pool.forward(ctx, {&x}, {&y});
      y.copy_diff_from_host(random_tensor<float>(y.shape(), -1, 1, 31).data_span());
      x.copy_diff_from_host(std::vector<float>(x.count(), 5.0f));  // overwritten, not added to
      pool.backward(ctx, {&y}, {true}, {&x});
      detail::pool_vector_allowed() = true;
      return std::make_pair(y.data_to_host(), x.diff_to_host());
    };
    const auto [yv, dv] = run(true);
    const auto [yp, dp] = run(false);
    CHECK(yv == yp);
    CHECK(dv == dp);
  }
#else
  MESSAGE("no x86 vector path in this build");
#endif
}

TEST_CASE_TEMPLATE("Pooling with a kernel smaller than the stride leaves empty windows at 0", T, float, double) {
  // Caffe's shape rule gives ceil((5 - 1) / 3) + 1 = 3 windows starting at 0, 3 and 6; the last
  // one lies outside the image: it must read nothing and output 0.
  auto x = distinct_tensor<T>({1, 1, 5, 5});
  Ctx ctx;
  for (const char* method : {"MAX", "AVE"}) {
    Tensor<CPU, T> y;
    PoolingLayer<CPU, T> pool(pool_param(pool_msg(method, 1, 3)));
    pool.setup(ctx, {&x}, {&y});
    pool.forward(ctx, {&x}, {&y});
    REQUIRE(y.shape() == Shape{1, 1, 3, 3});
    CHECK(y.data()[0] == x.data()[0]);
    CHECK(y.data()[4] == x.data()[18]);
    CHECK(y.data()[2] == T(0));
    CHECK(y.data()[8] == T(0));
    for (std::size_t i = 0; i < y.count(); ++i) y.diff()[i] = T(1);
    pool.backward(ctx, {&y}, {true}, {&x});
    CHECK(x.diff()[18] == T(1));
    CHECK(x.diff()[1] == T(0));
  }
}

TEST_CASE("Pooling rejects bad configuration") {
  Ctx ctx;
  auto x = random_tensor<float>({2, 3, 5, 5});
  Tensor<CPU, float> y;
  auto setup_error = [&](const Message& m, const char* what) {
    PoolingLayer<CPU, float> a(pool_param(m, "pool9")), b(pool_param(m, "pool9"));
    CHECK_THROWS_WITH_AS(a.setup(ctx, {&x}, {&y}), doctest::Contains(what), Error);
    CHECK_THROWS_WITH_AS(b.setup(ctx, {&x}, {&y}), doctest::Contains("layer 'pool9' (Pooling)"), Error);
  };
  SUBCASE("pad >= kernel") { setup_error(pool_msg("MAX", 3, 1, 3), "must be smaller than kernel_size"); }
  SUBCASE("kernel larger than padded input") { setup_error(pool_msg("MAX", 8, 1, 1), "larger than the padded input 7x7"); }
  SUBCASE("zero stride") { setup_error(pool_msg("AVE", 2, 0), "stride must be positive"); }
  SUBCASE("zero kernel") { setup_error(pool_msg("AVE", 0), "kernel_size must be positive"); }
  SUBCASE("negative pad") { setup_error(pool_msg("AVE", 3, 1, -1), "pad must be non-negative"); }
  SUBCASE("missing kernel") {
    Message m;
    m.set_enum("pool", "MAX");
    setup_error(m, "kernel_size (or kernel_h and kernel_w) is required");
  }
  SUBCASE("global pooling with a kernel") {
    Message m;
    m.set("global_pooling", true).set("kernel_size", 2);
    setup_error(m, "kernel_size must not be specified");
  }
  SUBCASE("global pooling with a stride") {
    Message m;
    m.set("global_pooling", true).set("stride", 2);
    setup_error(m, "only pad 0 and stride 1");
  }
  SUBCASE("stochastic") { setup_error(pool_msg("STOCHASTIC", 2), "STOCHASTIC is not supported"); }
  SUBCASE("bottom not 4-d") {
    PoolingLayer<CPU, float> pool(pool_param(pool_msg("MAX", 2)));
    auto x3 = random_tensor<float>({2, 3, 5});
    CHECK_THROWS_WITH_AS(pool.setup(ctx, {&x3}, {&y}), doctest::Contains("expected 4 axes"), Error);
  }
  SUBCASE("AVE has no mask top") {
    PoolingLayer<CPU, float> pool(pool_param(pool_msg("AVE", 2)));
    Tensor<CPU, float> mask;
    CHECK_THROWS_WITH_AS(pool.setup(ctx, {&x}, {&y, &mask}), doctest::Contains("at most tops: 1"), Error);
  }
  SUBCASE("input shrinks below the kernel after setup") {
    PoolingLayer<CPU, float> pool(pool_param(pool_msg("MAX", 5)));
    pool.setup(ctx, {&x}, {&y});
    auto small = random_tensor<float>({2, 3, 5, 4});
    CHECK_THROWS_WITH_AS(pool.forward(ctx, {&small}, {&y}), doctest::Contains("larger than the padded input"), Error);
  }
  SUBCASE("parse errors") {
    auto parse_error = [](const Message& m, const char* what) {
      CHECK_THROWS_WITH_AS((PoolingLayer<CPU, float>{pool_param(m, "pool9")}), doctest::Contains(what), Error);
    };
    Message both;
    both.set("kernel_size", 2).set("kernel_h", 2).set("kernel_w", 2);
    parse_error(both, "not both");
    Message half;
    half.set("kernel_h", 2);
    parse_error(half, "kernel_h and kernel_w must be given together");
    Message bad_pool;
    bad_pool.set_enum("pool", "MIN");
    parse_error(bad_pool, "expected one of: MAX, AVE, STOCHASTIC");
    Message unknown = pool_msg("MAX", 2);
    unknown.set("kernel", 2);
    parse_error(unknown, "unknown field 'kernel'");
  }
}

TEST_CASE("Pooling is created by the registry") {
  auto layer = make_layer<CPU, float>(pool_param(pool_msg("MAX", 2, 2)));
  CHECK(layer->type() == "Pooling");
  CHECK(layer->max_num_top() == 2);
}
