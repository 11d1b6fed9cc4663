#include <doctest/doctest.h>
#include <poseidon/core/rng.hpp>
#include <poseidon/math/im2col.hpp>

#include <vector>

using namespace poseidon;
using math::ConvGeometry;

namespace {
// The definition, one element at a time.
template <class T>
std::vector<T> naive_im2col(const ConvGeometry& g, const std::vector<T>& img) {
  const int oh = g.out_h(), ow = g.out_w();
  std::vector<T> col(g.col_rows() * g.col_cols());
  for (int c = 0; c < g.channels; ++c)
    for (int kh = 0; kh < g.kernel_h; ++kh)
      for (int kw = 0; kw < g.kernel_w; ++kw)
        for (int y = 0; y < oh; ++y)
          for (int x = 0; x < ow; ++x) {
            const int iy = y * g.stride_h - g.pad_h + kh * g.dilation_h;
            const int ix = x * g.stride_w - g.pad_w + kw * g.dilation_w;
            const std::size_t row = (std::size_t(c) * g.kernel_h + kh) * g.kernel_w + kw;
            col[row * oh * ow + std::size_t(y) * ow + x] =
                (iy >= 0 && iy < g.height && ix >= 0 && ix < g.width) ? img[(std::size_t(c) * g.height + iy) * g.width + ix] : T(0);
          }
  return col;
}

ConvGeometry geom(int c, int h, int w, int kh, int kw, int ph, int pw, int sh, int sw, int dh, int dw) {
  ConvGeometry g;
  g.channels = c, g.height = h, g.width = w, g.kernel_h = kh, g.kernel_w = kw, g.pad_h = ph, g.pad_w = pw;
  g.stride_h = sh, g.stride_w = sw, g.dilation_h = dh, g.dilation_w = dw;
  return g;
}
}  // namespace

TEST_CASE_TEMPLATE("im2col equals the definition, col2im is its adjoint", T, float, double) {
  DeviceContext<CPU> ctx;
  const ConvGeometry cases[] = {
      geom(3, 7, 6, 3, 3, 1, 1, 1, 1, 1, 1),     // same padding
      geom(2, 9, 11, 5, 3, 2, 0, 2, 3, 1, 1),    // rectangular kernel, strides
      geom(2, 10, 10, 3, 3, 2, 2, 1, 1, 2, 2),   // dilation
      geom(1, 5, 5, 5, 5, 0, 0, 1, 1, 1, 1),     // kernel == input
      geom(4, 13, 13, 3, 3, 4, 4, 3, 3, 1, 1),   // padding wider than stride
      geom(96, 27, 27, 5, 5, 2, 2, 1, 1, 1, 1),  // AlexNet conv2: takes the parallel path
      geom(3, 227, 227, 11, 11, 0, 0, 4, 4, 1, 1),  // AlexNet conv1
  };
  Rng rng(1);
  for (const auto& g : cases) {
    CAPTURE(g.channels);
    CAPTURE(g.kernel_h);
    std::vector<T> img(std::size_t(g.channels) * g.height * g.width);
    for (auto& x : img) x = static_cast<T>(rng.uniform<double>(-1, 1));
    std::vector<T> col(g.col_rows() * g.col_cols());
    math::im2col(ctx, g, img.data(), col.data());
    REQUIRE(col == naive_im2col(g, img));

    // <im2col(x), y> == <x, col2im(y)> for random y
    std::vector<T> y(col.size());
    for (auto& v : y) v = static_cast<T>(rng.uniform<double>(-1, 1));
    std::vector<T> back(img.size(), T(123));  // col2im overwrites
    math::col2im(ctx, g, y.data(), back.data());
    double lhs = 0, rhs = 0;
    for (std::size_t i = 0; i < col.size(); ++i) lhs += double(col[i]) * y[i];
    for (std::size_t i = 0; i < img.size(); ++i) rhs += double(img[i]) * back[i];
    CHECK(lhs == doctest::Approx(rhs).epsilon(std::is_same_v<T, float> ? 1e-4 : 1e-10));
  }
}

TEST_CASE("ConvGeometry output sizes follow Caffe") {
  CHECK(geom(3, 227, 227, 11, 11, 0, 0, 4, 4, 1, 1).out_h() == 55);
  CHECK(geom(96, 27, 27, 5, 5, 2, 2, 1, 1, 1, 1).out_w() == 27);
  CHECK(geom(1, 10, 10, 3, 3, 0, 0, 1, 1, 2, 2).out_h() == 6);
}
