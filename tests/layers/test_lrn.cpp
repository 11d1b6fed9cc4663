#include <doctest/doctest.h>
#include <poseidon/layers/lrn.hpp>

#include "support/layer_params.hpp"
#include "support/layer_testing.hpp"

#include <cmath>
#include <string>
#include <vector>

using namespace poseidon;
using namespace poseidon::testing;

namespace {

/// The definition, in double: scale = k + alpha/n * sum of x^2 over the zero-padded region.
template <class T>
std::vector<double> reference_lrn(const Tensor<CPU, T>& x, int size, double alpha, double beta, double k, bool within) {
  const int N = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3), half = (size - 1) / 2;
  std::vector<double> y(x.count());
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c)
      for (int h = 0; h < H; ++h)
        for (int w = 0; w < W; ++w) {
          double s = 0;
          if (!within) {
            for (int cc = c - half; cc <= c + half; ++cc)
              if (cc >= 0 && cc < C) s += std::pow(double(x.data()[x.offset(n, cc, h, w)]), 2);
            s = k + alpha / size * s;
          } else {
            for (int hh = h - half; hh <= h + half; ++hh)
              for (int ww = w - half; ww <= w + half; ++ww)
                if (hh >= 0 && hh < H && ww >= 0 && ww < W) s += std::pow(double(x.data()[x.offset(n, c, hh, ww)]), 2);
            s = k + alpha / (size * size) * s;
          }
          y[x.offset(n, c, h, w)] = double(x.data()[x.offset(n, c, h, w)]) * std::pow(s, -beta);
        }
  return y;
}

}  // namespace

TEST_CASE_TEMPLATE("LRN across channels by hand", T, float, double) {
  // One pixel, 3 channels (1, 2, 3), local_size 3, alpha 3, beta 0.5, k 2: scale_c = 2 + sum of
  // the squares of c's neighbours (alpha / n = 1).
  auto x = tensor_of<T>({1, 3, 1, 1}, {1, 2, 3});
  Tensor<CPU, T> y;
  LRNLayer<CPU, T> lrn(lrn_param(3, 3, 0.5, 2));
  Ctx ctx;
  lrn.setup(ctx, {&x}, {&y});
  lrn.forward(ctx, {&x}, {&y});
  REQUIRE(y.shape() == x.shape());
  CHECK(y.data()[0] == doctest::Approx(1 / std::sqrt(2.0 + 1 + 4)));
  CHECK(y.data()[1] == doctest::Approx(2 / std::sqrt(2.0 + 1 + 4 + 9)));
  CHECK(y.data()[2] == doctest::Approx(3 / std::sqrt(2.0 + 4 + 9)));
}

TEST_CASE_TEMPLATE("LRN within a channel by hand", T, float, double) {
  // A 2x2 plane, 3x3 windows: every window covers the whole plane, n = 9 (padding counts).
  auto x = tensor_of<T>({1, 1, 2, 2}, {1, 2, 3, 4});
  Tensor<CPU, T> y;
  LRNLayer<CPU, T> lrn(lrn_param(3, 9, 1, 1, true));
  Ctx ctx;
  lrn.setup(ctx, {&x}, {&y});
  lrn.forward(ctx, {&x}, {&y});
  for (int i = 0; i < 4; ++i) CHECK(y.data()[i] == doctest::Approx((i + 1) / (1 + 30.0)));
}

TEST_CASE_TEMPLATE("LRN forward matches the definition", T, float, double) {
  struct Case {
    const char* name;
    int size;
    double alpha, beta, k;
    bool within;
  };
  const std::vector<Case> cases = {
      {"AlexNet across", 5, 1e-4, 0.75, 1, false}, {"across, large alpha", 3, 2, 0.75, 1, false},
      {"across, other beta/k", 5, 0.5, 0.6, 2, false}, {"window wider than channels", 9, 1, 0.75, 1.5, false},
      {"within", 3, 1, 0.75, 1, true},           {"within, wide window", 5, 2, 0.4, 1.2, true},
  };
  auto x = random_tensor<T>({2, 6, 4, 5}, -2, 2, 17);
  for (const auto& c : cases) {
    CAPTURE(std::string(c.name));
    Tensor<CPU, T> y;
    LRNLayer<CPU, T> lrn(lrn_param(c.size, c.alpha, c.beta, c.k, c.within));
    Ctx ctx;
    lrn.setup(ctx, {&x}, {&y});
    lrn.forward(ctx, {&x}, {&y});
    const auto ref = reference_lrn(x, c.size, c.alpha, c.beta, c.k, c.within);
    for (std::size_t i = 0; i < ref.size(); ++i) CHECK(double(y.data()[i]) == doctest::Approx(ref[i]).epsilon(1e-5));
  }
}

TEST_CASE_TEMPLATE("LRN gradients", T, float, double) {
  struct Case {
    const char* name;
    Message msg;
  };
  Message defaults;
  const std::vector<Case> cases = {
      {"defaults (across, 5, 1, 0.75, 1)", defaults},
      {"across, size 3, other beta and k", lrn_msg(3, 2, 0.6, 1.5)},
      {"within, size 3", lrn_msg(3, 1, 0.75, 1, true)},
      {"within, size 5, other beta and k", lrn_msg(5, 3, 0.5, 2, true)},
  };
  for (const auto& c : cases) {
    CAPTURE(std::string(c.name));
    auto x = random_tensor<T>({2, 7, 3, 3}, -1, 1, 23);  // 63 per sample: the SIMD tail runs too
    Tensor<CPU, T> y;
    LRNLayer<CPU, T> lrn(lrn_param(c.msg));
    expect_gradients(lrn, {&x}, {&y});
  }
}

TEST_CASE("LRN reads Caffe's defaults") {
  LRNLayer<CPU, float> lrn(lrn_param(Message()));
  const auto& p = lrn.lrn_param();
  CHECK(p.local_size == 5);
  CHECK(p.alpha == 1.0);
  CHECK(p.beta == 0.75);
  CHECK(p.k == 1.0);
  CHECK(p.norm_region == LRNParam::NormRegion::across_channels);
  auto layer = make_layer<CPU, double>(lrn_param(5, 1e-4, 0.75, 1));
  CHECK(layer->type() == "LRN");
}

TEST_CASE("LRN rejects bad configuration") {
  Ctx ctx;
  auto x = random_tensor<float>({2, 3, 4, 4});
  Tensor<CPU, float> y;
  auto setup_error = [&](const Message& m, const char* what) {
    LRNLayer<CPU, float> a(lrn_param(m, "norm3")), b(lrn_param(m, "norm3"));
    CHECK_THROWS_WITH_AS(a.setup(ctx, {&x}, {&y}), doctest::Contains(what), Error);
    CHECK_THROWS_WITH_AS(b.setup(ctx, {&x}, {&y}), doctest::Contains("layer 'norm3' (LRN)"), Error);
  };
  SUBCASE("even local_size") { setup_error(lrn_msg(4, 1, 0.75, 1), "local_size must be odd, got 4"); }
  SUBCASE("zero local_size") { setup_error(lrn_msg(0, 1, 0.75, 1), "local_size must be positive, got 0"); }
  SUBCASE("negative local_size") { setup_error(lrn_msg(-3, 1, 0.75, 1), "local_size must be positive"); }
  SUBCASE("non-finite alpha") {
    Message m;
    m.set_enum("alpha", "inf");
    setup_error(m, "must be finite");
  }
  SUBCASE("bottom not 4-d") {
    LRNLayer<CPU, float> lrn(lrn_param(Message()));
    auto x2 = random_tensor<float>({2, 3});
    CHECK_THROWS_WITH_AS(lrn.setup(ctx, {&x2}, {&y}), doctest::Contains("expected 4 axes"), Error);
  }
  SUBCASE("in place is refused") {
    LRNLayer<CPU, float> lrn(lrn_param(Message()));
    CHECK_THROWS_WITH_AS(lrn.setup(ctx, {&x}, {&x}), doctest::Contains("cannot run in place"), Error);
  }
  SUBCASE("parse errors") {
    Message region;
    region.set_enum("norm_region", "ACROSS");
    CHECK_THROWS_WITH_AS((LRNLayer<CPU, float>{lrn_param(region)}), doctest::Contains("ACROSS_CHANNELS, WITHIN_CHANNEL"),
                         Error);
    Message unknown;
    unknown.set("size", 5);
    CHECK_THROWS_WITH_AS((LRNLayer<CPU, float>{lrn_param(unknown, "norm3")}), doctest::Contains("unknown field 'size'"),
                         Error);
  }
}
