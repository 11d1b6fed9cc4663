#include <doctest/doctest.h>
#include <poseidon/core/context.hpp>
#include <poseidon/math/direct_conv.hpp>

#include "support/random_values.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

using namespace poseidon;
using poseidon::testing::random_values;
using math::DirectConvolution;
using math::DirectConvShape;
namespace dc = math::detail::direct_conv;

namespace {

std::size_t out_count(const DirectConvShape& s, int num) {
  return static_cast<std::size_t>(num) * static_cast<std::size_t>(s.outputs) * static_cast<std::size_t>(s.out_h()) *
         static_cast<std::size_t>(s.out_w());
}

// x at (n, c, iy, ix) in padded coordinates; nullptr outside the image.
const float* pixel(const DirectConvShape& s, const std::vector<float>& x, int n, int c, int py, int px) {
  const int iy = py - s.pad_h, ix = px - s.pad_w;
  if (iy < 0 || iy >= s.height || ix < 0 || ix >= s.width) return nullptr;
  return &x[((static_cast<std::size_t>(n) * s.channels + static_cast<std::size_t>(c)) * s.height + iy) * s.width + ix];
}

/// The definition in double, with the sum of the terms' magnitudes per result (rounding scale).
struct Reference {
  std::vector<double> y, y_mag, dw, dw_mag, db, db_mag;
};

Reference reference(const DirectConvShape& s, int num, const std::vector<float>& x, const std::vector<float>& w,
                    const std::vector<float>& bias, const std::vector<float>& dy) {
  const int OH = s.out_h(), OW = s.out_w(), taps = s.channels * s.kernel_h * s.kernel_w;
  Reference r;
  r.y.assign(out_count(s, num), 0.0);
  r.y_mag = r.y;
  r.dw.assign(static_cast<std::size_t>(s.outputs) * static_cast<std::size_t>(taps), 0.0);
  r.dw_mag = r.dw;
  r.db.assign(static_cast<std::size_t>(s.outputs), 0.0);
  r.db_mag = r.db;
  for (int n = 0; n < num; ++n)
    for (int k = 0; k < s.outputs; ++k)
      for (int oy = 0; oy < OH; ++oy)
        for (int ox = 0; ox < OW; ++ox) {
          const std::size_t o = ((static_cast<std::size_t>(n) * s.outputs + k) * OH + oy) * OW + ox;
          double acc = bias[static_cast<std::size_t>(k)], mag = std::abs(acc);
          const double g = dy[o];
          r.db[static_cast<std::size_t>(k)] += g;
          r.db_mag[static_cast<std::size_t>(k)] += std::abs(g);
          for (int c = 0; c < s.channels; ++c)
            for (int i = 0; i < s.kernel_h; ++i)
              for (int j = 0; j < s.kernel_w; ++j) {
                const float* v = pixel(s, x, n, c, oy + i, ox + j);
                if (!v) continue;
                const std::size_t t = static_cast<std::size_t>(k) * taps + static_cast<std::size_t>((c * s.kernel_h + i) * s.kernel_w + j);
                acc += double(*v) * double(w[t]);
                mag += std::abs(double(*v) * double(w[t]));
                r.dw[t] += double(*v) * g;
                r.dw_mag[t] += std::abs(double(*v) * g);
              }
          r.y[o] = acc;
          r.y_mag[o] = mag;
        }
  return r;
}

// Within float rounding of sums of that magnitude: the worst error seen was about 1e-7 of it.
void check_close(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& mag,
                 const std::string& what) {
  REQUIRE(got.size() == want.size());
  std::size_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (!(std::abs(double(got[i]) - want[i]) <= 2e-6 * (mag[i] + 1.0))) ++bad;
  INFO(what);
  CHECK(bad == 0);
}

struct Case {
  DirectConvShape s;
  int num;
};

void run_case(const Case& c, int threads, bool vector) {
  const DirectConvShape& s = c.s;
  const std::size_t xs = static_cast<std::size_t>(c.num) * s.channels * s.height * s.width;
  const std::size_t ws = static_cast<std::size_t>(s.outputs) * s.channels * s.kernel_h * s.kernel_w;
  const auto x = random_values<float>(xs, 1), w = random_values<float>(ws, 2),
             bias = random_values<float>(static_cast<std::size_t>(s.outputs), 3),
             dy = random_values<float>(out_count(s, c.num), 4);
  const Reference ref = reference(s, c.num, x, w, bias, dy);
  const std::string what = "C " + std::to_string(s.channels) + " K " + std::to_string(s.outputs) + " " +
                           std::to_string(s.height) + "x" + std::to_string(s.width) + " kernel " +
                           std::to_string(s.kernel_h) + "x" + std::to_string(s.kernel_w) + " pad " +
                           std::to_string(s.pad_h) + "x" + std::to_string(s.pad_w) + " num " + std::to_string(c.num) +
                           " threads " + std::to_string(threads) + (vector ? " vector" : " plain");
  dc::vector_kernels_allowed() = vector;
  DeviceContext<CPU> ctx(threads);
  DirectConvolution conv;
  std::vector<float> y(out_count(s, c.num), 7.0f);
  conv.forward(ctx, s, w.data(), bias.data(), x.data(), c.num, y.data());
  check_close(y, ref.y, ref.y_mag, "forward: " + what);
  // The gradients are added to what is there (iter_size): start from 1 and 2.
  std::vector<float> dw(ws, 1.0f), db(static_cast<std::size_t>(s.outputs), 2.0f);
  conv.backward_filter(ctx, s, x.data(), dy.data(), c.num, dw.data(), db.data());
  std::vector<double> dw_want = ref.dw, db_want = ref.db;
  for (auto& v : dw_want) v += 1.0;
  for (auto& v : db_want) v += 2.0;
  check_close(dw, dw_want, ref.dw_mag, "weight gradient: " + what);
  check_close(db, db_want, ref.db_mag, "bias gradient: " + what);
  // Without a bias gradient the weight gradient is the same.
  std::vector<float> dw2(ws, 1.0f);
  conv.backward_filter(ctx, s, x.data(), dy.data(), c.num, dw2.data());
  check_close(dw2, dw_want, ref.dw_mag, "weight gradient without bias: " + what);
  // The forward pass once more after the gradient (the scratch is shared) gives the same bits.
  std::vector<float> y2(out_count(s, c.num), 0.0f);
  conv.forward(ctx, s, w.data(), bias.data(), x.data(), c.num, y2.data());
  CHECK(y2 == y);
  dc::vector_kernels_allowed() = true;
}

const std::vector<Case> cases = {
    {{3, 32, 32, 32, 5, 5, 2, 2}, 2},  // CIFAR-10 quick's conv1
    {{1, 20, 28, 28, 5, 5, 0, 0}, 2},  // LeNet's conv1: 24 columns, 20 channels (block padding)
    {{3, 7, 9, 13, 3, 3, 1, 1}, 3},    // ragged: 7 channels, 13 columns
    {{2, 9, 5, 40, 3, 5, 0, 2}, 1},    // non-square kernel, 40 columns (two registers and a half)
    {{4, 16, 6, 17, 1, 1, 0, 0}, 2},   // 1x1
    {{1, 3, 4, 4, 4, 4, 3, 3}, 1},     // kernel as large as the image, pad kernel - 1
    {{2, 5, 11, 11, 7, 7, 3, 3}, 2},   // 7x7, 49 x 2 taps
    {{3, 8, 3, 1, 3, 1, 1, 0}, 2},     // one column
    {{2, 12, 4, 31, 3, 3, 1, 1}, 2},   // 31 columns: the last register one lane short
};

}  // namespace

TEST_CASE("Direct convolution matches the definition: output, weight and bias gradients") {
  for (const bool vector : {true, false}) {
    if (vector && !dc::cpu_has_avx512()) {
      MESSAGE("this CPU has no AVX-512: only the plain loops are checked");
      continue;
    }
    for (const Case& c : cases)
      for (const int threads : {1, 2}) run_case(c, threads, vector);
  }
}

TEST_CASE("Direct convolution's weight gradient is the same bits on every run for a thread count") {
  DirectConvShape s{3, 32, 16, 16, 5, 5, 2, 2};
  const int num = 5;
  const auto x = random_values<float>(static_cast<std::size_t>(num) * 3 * 16 * 16, 5);
  const auto dy = random_values<float>(out_count(s, num), 6);
  for (const int threads : {1, 2}) {
    DeviceContext<CPU> ctx(threads);
    DirectConvolution a, b;
    std::vector<float> da(32 * 75, 0.0f), db(32 * 75, 0.0f), ba(32, 0.0f), bb(32, 0.0f);
    a.backward_filter(ctx, s, x.data(), dy.data(), num, da.data(), ba.data());
    b.backward_filter(ctx, s, x.data(), dy.data(), num, db.data(), bb.data());
    CHECK(da == db);
    CHECK(ba == bb);
  }
}

TEST_CASE("Direct convolution: a NaN reaches only the gradients of the taps that read it") {
  // 12 columns, 3x3, no padding: 10 output columns, so the vector kernel's second register is
  // partial and its lanes past the row would read the image's last two columns for tap kx = 0.
  DirectConvShape s{1, 4, 6, 12, 3, 3, 0, 0};
  const int num = 1;
  auto x = random_values<float>(6 * 12, 7);
  x[2 * 12 + 11] = std::numeric_limits<float>::quiet_NaN();  // row 2, last column
  const auto dy = random_values<float>(out_count(s, num), 8);
  for (const bool vector : {true, false}) {
    if (vector && !dc::cpu_has_avx512()) continue;
    dc::vector_kernels_allowed() = vector;
    DeviceContext<CPU> ctx(1);
    DirectConvolution conv;
    std::vector<float> dw(4 * 9, 0.0f);
    conv.backward_filter(ctx, s, x.data(), dy.data(), num, dw.data());
    for (int k = 0; k < 4; ++k)
      for (int t = 0; t < 9; ++t) {
        // Tap (ky, kx) reads column ox + kx <= 9 + kx: column 11 only for kx = 2.
        INFO("vector " << vector << " channel " << k << " tap " << t);
        CHECK(std::isnan(dw[static_cast<std::size_t>(k * 9 + t)]) == (t % 3 == 2));
      }
    dc::vector_kernels_allowed() = true;
  }
}

TEST_CASE("Direct convolution refuses shapes out of its reach") {
  DeviceContext<CPU> ctx(1);
  DirectConvolution conv;
  std::vector<float> buf(1024, 0.0f);
  CHECK_THROWS_WITH_AS(conv.forward(ctx, DirectConvShape{3, 4, 8, 8, 3, 3, 3, 3}, buf.data(), nullptr, buf.data(), 1,
                                    buf.data()),
                       doctest::Contains("direct convolution: bad shape"), Error);
  CHECK_THROWS_AS(conv.forward(ctx, DirectConvShape{3, 4, 2, 2, 5, 5, 0, 0}, buf.data(), nullptr, buf.data(), 1,
                               buf.data()),
                  Error);
  CHECK(DirectConvolution::fits(DirectConvShape{3, 32, 224, 224, 3, 3, 1, 1}));
  CHECK_FALSE(DirectConvolution::fits(DirectConvShape{4, 8, 30000, 30000, 3, 3, 1, 1}));  // int offsets
  CHECK_THROWS_WITH_AS(conv.forward(ctx, DirectConvShape{4, 8, 30000, 30000, 3, 3, 1, 1}, buf.data(), nullptr,
                                    buf.data(), 1, buf.data()),
                       doctest::Contains("too large"), Error);
  CHECK(DirectConvolution::applies(1, 1, 1, 1, 2, 2, 5, 5));
  CHECK_FALSE(DirectConvolution::applies(2, 1, 1, 1, 0, 0, 5, 5));
  CHECK_FALSE(DirectConvolution::applies(1, 1, 1, 2, 0, 0, 5, 5));
  CHECK_FALSE(DirectConvolution::applies(1, 1, 1, 1, 5, 0, 5, 5));
}
