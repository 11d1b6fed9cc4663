#include <doctest/doctest.h>
#include <poseidon/core/filler.hpp>

#include <cmath>

using namespace poseidon;

namespace {
FillerParameter filler(Message m) { return FillerParameter::from_message(m, "test"); }

template <class T>
void moments(const Tensor<CPU, T>& t, double& mean, double& var) {
  mean = 0;
  for (T x : t.data_span()) mean += x;
  mean /= static_cast<double>(t.count());
  var = 0;
  for (T x : t.data_span()) var += (x - mean) * (x - mean);
  var /= static_cast<double>(t.count());
}
}  // namespace

TEST_CASE("Rng is reproducible and its state round-trips") {
  Rng a(5), b(5), c(6);
  CHECK(a.next_u32() == b.next_u32());
  CHECK(a.next_u32() != c.next_u32());
  const std::string s = a.state();
  const auto x = a.uniform<double>(0, 1);
  a.set_state(s);
  CHECK(a.uniform<double>(0, 1) == x);
  CHECK_THROWS_WITH_AS(a.set_state("garbage"), doctest::Contains("corrupt random-number state"), Error);
  Rng hi(1ull << 40), lo(0);
  CHECK(hi.next_u32() != lo.next_u32());
}

TEST_CASE_TEMPLATE("Fillers follow Caffe's definitions", T, float, double) {
  Rng rng(3);
  Tensor<CPU, T> t{64, 32, 3, 3};  // fan_in = 288, fan_out = 64*9 = 576
  SUBCASE("constant") {
    fill(filler(Message().set("type", "constant").set("value", 0.25)), t, rng);
    for (T x : t.data_span()) REQUIRE(x == T(0.25));
  }
  SUBCASE("uniform") {
    fill(filler(Message().set("type", "uniform").set("min", -2).set("max", 3)), t, rng);
    for (T x : t.data_span()) REQUIRE((x >= T(-2) && x <= T(3)));
    double m, v;
    moments(t, m, v);
    CHECK(m == doctest::Approx(0.5).epsilon(0.1));
  }
  SUBCASE("gaussian") {
    fill(filler(Message().set("type", "gaussian").set("mean", 1).set("std", 0.5)), t, rng);
    double m, v;
    moments(t, m, v);
    CHECK(m == doctest::Approx(1.0).epsilon(0.02));
    CHECK(std::sqrt(v) == doctest::Approx(0.5).epsilon(0.03));
  }
  SUBCASE("xavier uses fan_in") {
    fill(filler(Message().set("type", "xavier")), t, rng);
    const double scale = std::sqrt(3.0 / 288);
    for (T x : t.data_span()) REQUIRE(std::abs(double(x)) <= scale + 1e-7);
    double m, v;
    moments(t, m, v);
    CHECK(v == doctest::Approx(scale * scale / 3).epsilon(0.05));
  }
  SUBCASE("msra with FAN_OUT") {
    fill(filler(Message().set("type", "msra").set_enum("variance_norm", "FAN_OUT")), t, rng);
    double m, v;
    moments(t, m, v);
    CHECK(v == doctest::Approx(2.0 / 576).epsilon(0.05));
  }
  SUBCASE("positive_unitball rows sum to one") {
    fill(filler(Message().set("type", "positive_unitball")), t, rng);
    for (int n = 0; n < 64; ++n) {
      double s = 0;
      for (int j = 0; j < 288; ++j) s += t.data()[n * 288 + j];
      REQUIRE(s == doctest::Approx(1.0).epsilon(1e-5));
    }
  }
  SUBCASE("bilinear is Caffe's upsampling kernel") {
    Tensor<CPU, T> k{1, 1, 4, 4};
    fill(filler(Message().set("type", "bilinear")), k, rng);
    // f = 2, c = 0.75: weights (1 - |x/2 - 0.75|) = 0.25, 0.75, 0.75, 0.25 along each axis
    const double w[4] = {0.25, 0.75, 0.75, 0.25};
    for (int y = 0; y < 4; ++y)
      for (int x = 0; x < 4; ++x) CHECK(double(k.data()[y * 4 + x]) == doctest::Approx(w[y] * w[x]));
  }
  SUBCASE("same seed, same weights") {
    Rng r1(9), r2(9);
    Tensor<CPU, T> a{10}, b{10};
    fill(filler(Message().set("type", "gaussian")), a, r1);
    fill(filler(Message().set("type", "gaussian")), b, r2);
    CHECK(a.data_to_host() == b.data_to_host());
  }
}

TEST_CASE("Filler parameters are validated") {
  CHECK_THROWS_WITH_AS(filler(Message().set("type", "gausian")), doctest::Contains("unknown filler type 'gausian'"), Error);
  CHECK_THROWS_WITH_AS(filler(Message().set("type", "uniform").set("min", 2).set("max", 1)), doctest::Contains("min 2 > max 1"),
                       Error);
  CHECK_THROWS_WITH_AS(filler(Message().set("typ", "constant")), doctest::Contains("unknown field 'typ'"), Error);
}
