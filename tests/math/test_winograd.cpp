#include <doctest/doctest.h>
#include <poseidon/core/context.hpp>
#include <poseidon/math/winograd.hpp>

#include "support/random_values.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

using namespace poseidon;
using poseidon::testing::random_values;
using math::WinogradConvolution;
using math::WinogradShape;
namespace wd = math::detail::winograd;

namespace {

/// The convolution by its definition, in double, and the sum of the magnitudes of its terms (the
/// scale against which rounding is judged).
struct Reference {
  std::vector<double> y, mag;
};

template <class T>
Reference direct_forward(const WinogradShape& s, int num, const std::vector<T>& x, const std::vector<T>& w,
                         const T* bias) {
  const int OH = s.out_h(), OW = s.out_w(), r = s.kernel;
  const int cg = s.channels / s.group, kg = s.outputs / s.group;
  Reference ref;
  ref.y.assign(static_cast<std::size_t>(num) * s.outputs * OH * OW, 0.0);
  ref.mag = ref.y;
  for (int n = 0; n < num; ++n)
    for (int k = 0; k < s.outputs; ++k)
      for (int oy = 0; oy < OH; ++oy)
        for (int ox = 0; ox < OW; ++ox) {
          double acc = bias ? double(bias[k]) : 0.0, mag = bias ? std::abs(double(bias[k])) : 0.0;
          const int g = k / kg;
          for (int c = 0; c < cg; ++c)
            for (int i = 0; i < r; ++i)
              for (int j = 0; j < r; ++j) {
                const int iy = oy - s.pad_h + i, ix = ox - s.pad_w + j;
                if (iy < 0 || iy >= s.height || ix < 0 || ix >= s.width) continue;
                const double t = double(x[((std::size_t(n) * s.channels + g * cg + c) * s.height + iy) * s.width + ix]) *
                                 double(w[((std::size_t(k) * cg + c) * r + i) * r + j]);
                acc += t;
                mag += std::abs(t);
              }
          const std::size_t at = ((std::size_t(n) * s.outputs + k) * OH + oy) * OW + ox;
          ref.y[at] = acc;
          ref.mag[at] = mag;
        }
  return ref;
}

// dx[n][c][iy][ix] = sum over k, i, j of dy[n][k][iy + pad - i][ix + pad - j] * w[k][c][i][j].
template <class T>
Reference direct_backward(const WinogradShape& s, int num, const std::vector<T>& dy, const std::vector<T>& w) {
  const int OH = s.out_h(), OW = s.out_w(), r = s.kernel;
  const int cg = s.channels / s.group, kg = s.outputs / s.group;
  Reference ref;
  ref.y.assign(static_cast<std::size_t>(num) * s.channels * s.height * s.width, 0.0);
  ref.mag = ref.y;
  for (int n = 0; n < num; ++n)
    for (int c = 0; c < s.channels; ++c)
      for (int iy = 0; iy < s.height; ++iy)
        for (int ix = 0; ix < s.width; ++ix) {
          double acc = 0, mag = 0;
          const int g = c / cg;
          for (int kk = 0; kk < kg; ++kk)
            for (int i = 0; i < r; ++i)
              for (int j = 0; j < r; ++j) {
                const int oy = iy + s.pad_h - i, ox = ix + s.pad_w - j;
                if (oy < 0 || oy >= OH || ox < 0 || ox >= OW) continue;
                const int k = g * kg + kk;
                const double t = double(dy[((std::size_t(n) * s.outputs + k) * OH + oy) * OW + ox]) *
                                 double(w[((std::size_t(k) * cg + (c - g * cg)) * r + i) * r + j]);
                acc += t;
                mag += std::abs(t);
              }
          const std::size_t at = ((std::size_t(n) * s.channels + c) * s.height + iy) * s.width + ix;
          ref.y[at] = acc;
          ref.mag[at] = mag;
        }
  return ref;
}

// dw[k][c][i][j] = sum over n, oy, ox of dy[n][k][oy][ox] * x[n][g*cg + c][oy - pad + i][ox - pad + j].
template <class T>
Reference direct_filter(const WinogradShape& s, int num, const std::vector<T>& x, const std::vector<T>& dy) {
  const int OH = s.out_h(), OW = s.out_w(), r = s.kernel;
  const int cg = s.channels / s.group, kg = s.outputs / s.group;
  Reference ref;
  ref.y.assign(static_cast<std::size_t>(s.outputs) * cg * r * r, 0.0);
  ref.mag = ref.y;
  for (int k = 0; k < s.outputs; ++k)
    for (int c = 0; c < cg; ++c)
      for (int i = 0; i < r; ++i)
        for (int j = 0; j < r; ++j) {
          double acc = 0, mag = 0;
          for (int n = 0; n < num; ++n)
            for (int oy = 0; oy < OH; ++oy)
              for (int ox = 0; ox < OW; ++ox) {
                const int iy = oy - s.pad_h + i, ix = ox - s.pad_w + j;
                if (iy < 0 || iy >= s.height || ix < 0 || ix >= s.width) continue;
                const double t = double(dy[((std::size_t(n) * s.outputs + k) * OH + oy) * OW + ox]) *
                                 double(x[((std::size_t(n) * s.channels + (k / kg) * cg + c) * s.height + iy) * s.width + ix]);
                acc += t;
                mag += std::abs(t);
              }
          const std::size_t at = ((std::size_t(k) * cg + c) * r + i) * r + j;
          ref.y[at] = acc;
          ref.mag[at] = mag;
        }
  return ref;
}

// The largest error over all outputs relative to the largest sum of term magnitudes: an output
// of a tile is computed from the whole tile's products, which cancel exactly only in exact
// arithmetic, so its rounding error scales with its neighbours' terms, not with its own (an
// output at the border may have almost none).
template <class T>
double relative_error(const std::vector<T>& got, const Reference& ref) {
  REQUIRE(got.size() == ref.y.size());
  double worst = 0, scale = 1e-30;
  for (std::size_t i = 0; i < got.size(); ++i) {
    worst = std::max(worst, std::abs(double(got[i]) - ref.y[i]));
    scale = std::max(scale, ref.mag[i]);
  }
  return worst / scale;
}

// Rounding bound per unit of term magnitude. The transforms scale magnitudes up (B^T's entries
// reach 5, G's 16/24, A^T's 8) before the output transform cancels them, so the error is a few
// tens of float epsilons (1.2e-7) rather than GEMM's one or two: the worst cases measured over
// the shapes below were 1.0e-6 forward, 1.2e-6 for the input and 2.2e-6 for the weight gradient
// (the message of the test below prints them). 2e-5 leaves a margin of about 10 while a wrong
// transform constant gives errors of order 1. Double is held to 1e-12 (measured: 4e-15).
template <class T>
double tolerance(int /*kernel*/) {
  if constexpr (std::is_same_v<T, double>) return 1e-12;
  return 2e-5;
}

struct Case {
  const char* name;
  WinogradShape s;
  int num;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  // name, {C, K, H, W, kernel, pad_h, pad_w, group}, batch
  for (int k : {3, 5})
    for (int pad = 0; pad < k; ++pad) {
      out.push_back({"square, even size", {3, 4, 8, 8, k, pad, pad, 1}, 2});
      out.push_back({"odd sizes, rectangular", {2, 3, 11, 9, k, pad, pad, 1}, 3});
      out.push_back({"one channel, one sample", {1, 1, 7, 6, k, pad, pad, 1}, 1});
    }
  out.push_back({"image smaller than a tile, 3x3", {2, 2, 3, 3, 3, 1, 1, 1}, 2});
  out.push_back({"image smaller than a tile, 5x5", {2, 2, 5, 4, 5, 2, 2, 1}, 2});
  out.push_back({"kernel equals the padded input", {2, 3, 3, 3, 5, 1, 1, 1}, 2});
  out.push_back({"asymmetric pads", {3, 2, 9, 10, 5, 1, 2, 1}, 2});
  out.push_back({"asymmetric pads 3x3", {3, 2, 9, 10, 3, 0, 2, 1}, 2});
  out.push_back({"groups 2, 3x3", {4, 6, 13, 13, 3, 1, 1, 2}, 2});
  out.push_back({"groups 2, 5x5", {6, 4, 12, 12, 5, 2, 2, 2}, 2});
  out.push_back({"many channels (CIFAR-10 conv3 at batch 3)", {32, 64, 8, 8, 5, 2, 2, 1}, 3});
  out.push_back({"AlexNet conv4 in small (13x13, groups 2)", {24, 16, 13, 13, 3, 1, 1, 2}, 2});
  out.push_back({"output channels not a multiple of 8", {9, 13, 6, 7, 3, 1, 1, 1}, 2});
  return out;
}

template <class T>
void check_case(const Case& c, int threads, int chunk_images, double& worst_fwd, double& worst_bwd,
                double* worst_filter = nullptr) {
  const WinogradShape& s = c.s;
  CAPTURE(std::string(c.name));
  CAPTURE(s.kernel);
  CAPTURE(s.pad_h);
  CAPTURE(threads);
  CAPTURE(chunk_images);
  const std::size_t xn = std::size_t(c.num) * s.channels * s.height * s.width;
  const std::size_t yn = std::size_t(c.num) * s.outputs * s.out_h() * s.out_w();
  const auto x = random_values<T>(xn, 1);
  const auto w = random_values<T>(std::size_t(s.outputs) * (s.channels / s.group) * s.kernel * s.kernel, 2);
  const auto bias = random_values<T>(std::size_t(s.outputs), 3);
  const auto dy = random_values<T>(yn, 4);
  const int before = omp_get_max_threads();
  DeviceContext<CPU> ctx(threads);
  WinogradConvolution<T> wino;
  wino.set_chunk_images(chunk_images);
  std::vector<T> y(yn, T(-7)), dx(xn, T(-7)), dw(w.size(), T(0.5));
  wino.forward(ctx, s, w.data(), bias.data(), x.data(), c.num, y.data());
  wino.backward_data(ctx, s, w.data(), dy.data(), c.num, dx.data());
  wino.backward_filter(ctx, s, x.data(), dy.data(), c.num, dw.data());
  ctx.set_threads(before);
  // The weight gradient is added to what dw held.
  for (auto& v : dw) v -= T(0.5);
  const double ew = relative_error(dw, direct_filter(s, c.num, x, dy));
  CHECK(ew <= tolerance<T>(s.kernel));
  if (worst_filter) *worst_filter = std::max(*worst_filter, ew);
  const double ef = relative_error(y, direct_forward(s, c.num, x, w, bias.data()));
  const double eb = relative_error(dx, direct_backward(s, c.num, dy, w));
  CHECK(ef <= tolerance<T>(s.kernel));
  CHECK(eb <= tolerance<T>(s.kernel));
  worst_fwd = std::max(worst_fwd, ef);
  worst_bwd = std::max(worst_bwd, eb);
}

}  // namespace

TEST_CASE_TEMPLATE("Winograd 1-d algorithms compute the correlation of 6 inputs with the kernel", T, float, double) {
  // y_i = sum_k d_{i+k} g_k for i < m, through A^T ((G g) . (B^T d)): checks the matrices alone.
  for (int r : {3, 5}) {
    CAPTURE(r);
    const int m = WinogradConvolution<T>::tile(r);
    REQUIRE(m + r - 1 == wd::alpha);
    for (unsigned seed = 0; seed < 20; ++seed) {
      const auto d = random_values<T>(wd::alpha, 10 + seed);
      const auto g = random_values<T>(std::size_t(r), 40 + seed);
      T v[wd::alpha], u[wd::alpha], prod[wd::alpha], y[4];
      wd::input_1d<T, 1, 1, 1>(d.data(), v);
      for (int i = 0; i < wd::alpha; ++i) {
        double row[5];
        wd::g_row(i, r, row);
        double acc = 0;
        for (int k = 0; k < r; ++k) acc += row[k] * double(g[std::size_t(k)]);
        u[i] = static_cast<T>(acc);
        prod[i] = u[i] * v[i];
      }
      if (m == 2)
        wd::output_1d<T, 2, 1, 1, 1>(prod, y);
      else
        wd::output_1d<T, 4, 1, 1, 1>(prod, y);
      for (int i = 0; i < m; ++i) {
        double ref = 0, mag = 0;
        for (int k = 0; k < r; ++k) {
          ref += double(d[std::size_t(i + k)]) * double(g[std::size_t(k)]);
          mag += std::abs(double(d[std::size_t(i + k)]) * double(g[std::size_t(k)]));
        }
        CHECK(std::abs(double(y[i]) - ref) <= tolerance<T>(r) * mag);
      }
    }
  }
}

TEST_CASE_TEMPLATE("Winograd forward, input and weight gradients match the definition", T, float, double) {
  double worst_fwd = 0, worst_bwd = 0, worst_filter = 0;
  for (const auto& c : cases())
    for (int threads : {1, 2})
      // 0: the default chunks (one per pass here, its stages shared by the threads); 1 and 2
      // images per chunk: several chunks, and with 2 threads each thread takes its own images.
      for (int chunk : {0, 1, 2}) check_case<T>(c, threads, chunk, worst_fwd, worst_bwd, &worst_filter);
  MESSAGE("worst relative error: forward ", worst_fwd, ", input gradient ", worst_bwd, ", weight gradient ",
          worst_filter);
}

// The stages are compiled for AVX-512, AVX2 and plain code and chosen at run time; each variant
// this CPU can run must agree with the definition.
TEST_CASE_TEMPLATE("Winograd on every instruction set this CPU has", T, float, double) {
  const wd::Isa saved = wd::isa_limit();
  for (wd::Isa isa : {wd::Isa::generic, wd::Isa::avx2, wd::Isa::avx512}) {
    wd::isa_limit() = isa;
    CAPTURE(static_cast<int>(wd::cpu_isa()));
    double worst_fwd = 0, worst_bwd = 0;
    const auto all = cases();
    for (std::size_t i = 0; i < all.size(); i += 3) check_case<T>(all[i], 1 + int(i % 2), 0, worst_fwd, worst_bwd);
    check_case<T>(Case{"CIFAR-10 conv2 in small", {32, 32, 16, 16, 5, 2, 2, 1}, 2}, 1, 0, worst_fwd, worst_bwd);
  }
  wd::isa_limit() = saved;
}

TEST_CASE("Winograd keeps its transformed filters until the weights change") {
  const WinogradShape s{4, 4, 8, 8, 3, 1, 1, 1};
  auto x = random_values<float>(2 * 4 * 64, 5);
  auto w = random_values<float>(4 * 4 * 9, 6);
  DeviceContext<CPU> ctx(1);
  WinogradConvolution<float> wino;
  std::vector<float> y(2 * 4 * 64);
  wino.forward(ctx, s, w.data(), nullptr, x.data(), 2, y.data());
  // New weights in the same buffer: the result must follow them.
  for (auto& v : w) v = -v;
  wino.forward(ctx, s, w.data(), nullptr, x.data(), 2, y.data());
  const auto ref = direct_forward(s, 2, x, w, static_cast<const float*>(nullptr));
  CHECK(relative_error(y, ref) <= tolerance<float>(3));
}

TEST_CASE("Winograd rejects shapes it does not handle") {
  DeviceContext<CPU> ctx(1);
  WinogradConvolution<float> wino;
  std::vector<float> buf(1024);
  CHECK_FALSE(WinogradConvolution<float>::applies(3, 3, 2, 2, 1, 1, 1, 1));
  CHECK_FALSE(WinogradConvolution<float>::applies(3, 3, 1, 1, 2, 2, 1, 1));
  CHECK_FALSE(WinogradConvolution<float>::applies(3, 5, 1, 1, 1, 1, 1, 1));
  CHECK_FALSE(WinogradConvolution<float>::applies(7, 7, 1, 1, 1, 1, 3, 3));
  CHECK_FALSE(WinogradConvolution<float>::applies(3, 3, 1, 1, 1, 1, 3, 3));
  CHECK(WinogradConvolution<float>::applies(5, 5, 1, 1, 1, 1, 2, 2));
  CHECK_THROWS_AS(wino.forward(ctx, WinogradShape{2, 2, 8, 8, 7, 3, 3, 1}, buf.data(), nullptr, buf.data(), 1, buf.data()),
                  Error);
}
