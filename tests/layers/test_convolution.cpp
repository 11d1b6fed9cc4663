#include <doctest/doctest.h>
#include <poseidon/layers/convolution.hpp>

#include "support/layer_params.hpp"
#include "support/layer_testing.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

using namespace poseidon;
using namespace poseidon::testing;

namespace {

// A named configuration on an input shape, the case list of most tests here.
struct ConvCase {
  const char* name;
  ConvCfg cfg;
  Shape in;
};

/// Direct evaluation of the convolution sum, in double, from Caffe's definition.
template <class T>
std::vector<double> reference_conv(const Tensor<CPU, T>& x, const Tensor<CPU, T>& w, const T* bias, const ConvCfg& c) {
  const int N = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3);
  const int OH = (H + 2 * c.pad_h - (c.dil_h * (c.kh - 1) + 1)) / c.stride_h + 1;
  const int OW = (W + 2 * c.pad_w - (c.dil_w * (c.kw - 1) + 1)) / c.stride_w + 1;
  const int cg = C / c.group, og = c.num_output / c.group;
  std::vector<double> y(static_cast<std::size_t>(N * c.num_output * OH * OW), 0.0);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < c.num_output; ++o)
      for (int oh = 0; oh < OH; ++oh)
        for (int ow = 0; ow < OW; ++ow) {
          double s = bias ? double(bias[o]) : 0.0;
          const int g = o / og;
          for (int ci = 0; ci < cg; ++ci)
            for (int i = 0; i < c.kh; ++i)
              for (int j = 0; j < c.kw; ++j) {
                const int ih = oh * c.stride_h - c.pad_h + i * c.dil_h;
                const int iw = ow * c.stride_w - c.pad_w + j * c.dil_w;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                s += double(x.data()[x.offset(n, g * cg + ci, ih, iw)]) * double(w.data()[w.offset(o, ci, i, j)]);
              }
          y[static_cast<std::size_t>(((n * c.num_output + o) * OH + oh) * OW + ow)] = s;
        }
  return y;
}

template <class T>
void check_against_reference(const ConvCfg& c, const Shape& in, int batch_samples) {
  CAPTURE(batch_samples);
  auto x = random_tensor<T>(in, -1, 1, 11);
  Tensor<CPU, T> y;
  ConvolutionLayer<CPU, T> conv(conv_param(c));
  conv.set_batch_samples(batch_samples);
  Ctx ctx;
  conv.setup(ctx, {&x}, {&y});
  conv.forward(ctx, {&x}, {&y});
  const auto ref = reference_conv(x, *conv.blobs()[0], c.bias ? conv.blobs()[1]->data() : nullptr, c);
  REQUIRE(y.count() == ref.size());
  for (std::size_t i = 0; i < ref.size(); ++i) CHECK(double(y.data()[i]) == doctest::Approx(ref[i]).epsilon(1e-4));
}

}  // namespace

TEST_CASE_TEMPLATE("Convolution forward matches a hand computation", T, float, double) {
  // x = 1..9 (3x3), kernel [[1, 0], [0, -1]], bias 0.5, pad 1, stride 2 -> 2x2 output.
  auto x = tensor_of<T>({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  Tensor<CPU, T> y;
  Message m;
  m.set("num_output", 1).set("kernel_size", 2).set("pad", 1).set("stride", 2);
  ConvolutionLayer<CPU, T> conv(conv_param(m));
  Ctx ctx;
  conv.setup(ctx, {&x}, {&y});
  REQUIRE(y.shape() == Shape{1, 1, 2, 2});
  REQUIRE(conv.blobs().size() == 2);
  CHECK(conv.blobs()[0]->shape() == Shape{1, 1, 2, 2});
  conv.blobs()[0]->copy_data_from_host(std::vector<T>{1, 0, 0, -1});
  conv.blobs()[1]->copy_data_from_host(std::vector<T>{0.5});
  conv.forward(ctx, {&x}, {&y});
  // Window origins (-1,-1), (-1,1), (1,-1), (1,1): only in-image taps count.
  CHECK(y.data()[0] == doctest::Approx(-1 + 0.5));      // -x(0,0)
  CHECK(y.data()[1] == doctest::Approx(-3 + 0.5));      // -x(0,2)
  CHECK(y.data()[2] == doctest::Approx(-7 + 0.5));      // -x(2,0)
  CHECK(y.data()[3] == doctest::Approx(5 - 9 + 0.5));   // x(1,1) - x(2,2)
}

TEST_CASE_TEMPLATE("Convolution with groups and dilation by hand", T, float, double) {
  // Two groups of one channel each; a 2x2 kernel dilated by 2 reads the corners of a 3x3 window.
  std::vector<double> v;
  for (int i = 0; i < 18; ++i) v.push_back(i + 1);
  auto x = tensor_of<T>({1, 2, 3, 3}, v);
  Tensor<CPU, T> y;
  Message m;
  m.set("num_output", 2).set("kernel_size", 2).set("dilation", 2).set("group", 2).set("bias_term", false);
  ConvolutionLayer<CPU, T> conv(conv_param(m));
  Ctx ctx;
  conv.setup(ctx, {&x}, {&y});
  REQUIRE(conv.blobs().size() == 1);
  REQUIRE(conv.blobs()[0]->shape() == Shape{2, 1, 2, 2});
  conv.blobs()[0]->copy_data_from_host(std::vector<T>{1, 1, 1, 1, 1, 0, 0, -1});
  conv.forward(ctx, {&x}, {&y});
  REQUIRE(y.shape() == Shape{1, 2, 1, 1});
  CHECK(y.data()[0] == doctest::Approx(1 + 3 + 7 + 9));  // corners of channel 0
  CHECK(y.data()[1] == doctest::Approx(10 - 18));        // corners of channel 1, weights +1 and -1
}

TEST_CASE_TEMPLATE("Convolution forward matches the definition", T, float, double) {
  using Case = ConvCase;
  const std::vector<Case> cases = {
      {"3x3 plain", {4, 3, 3}, Shape{3, 2, 6, 5}},
      {"pad and stride", {3, 3, 3, 1, 1, 2, 2}, Shape{2, 3, 7, 7}},
      {"rectangular kernel, asymmetric pad/stride", {5, 2, 4, 2, 0, 1, 3}, Shape{3, 2, 6, 9}},
      {"dilation", {2, 3, 3, 2, 2, 1, 1, 2, 3}, Shape{2, 2, 9, 10}},
      {"groups", {6, 3, 3, 1, 1, 1, 1, 1, 1, 3}, Shape{3, 6, 5, 5}},
      {"no bias", {4, 2, 2, 0, 0, 1, 1, 1, 1, 2, false}, Shape{2, 4, 4, 4}},
      {"1x1 direct", {5, 1, 1}, Shape{4, 3, 3, 4}},
      {"1x1 with groups", {4, 1, 1, 0, 0, 1, 1, 1, 1, 2}, Shape{3, 4, 3, 3}},
      {"1x1 with stride", {3, 1, 1, 0, 0, 2, 2}, Shape{2, 3, 5, 5}},
      {"kernel as large as the padded input", {2, 5, 5, 1, 1}, Shape{2, 2, 3, 3}},
      // stride_w > 1 splits input rows into phases (AlexNet conv1's path).
      {"11 taps at stride 4, padded", {3, 11, 11, 2, 3, 4, 4}, Shape{2, 3, 23, 25}},
      {"stride 3 wider than the kernel", {2, 2, 2, 0, 1, 3, 3}, Shape{2, 2, 8, 10}},
      {"stride 2 with dilation 3 and pad", {2, 3, 3, 2, 4, 2, 2, 3, 3}, Shape{2, 2, 11, 12}},
  };
  for (const auto& c : cases) {
    CAPTURE(std::string(c.name));
    for (int batch : {0, 1, 2, 5}) check_against_reference<T>(c.cfg, c.in, batch);
  }
}

TEST_CASE_TEMPLATE("Convolution gradients", T, float, double) {
  struct Case {
    const char* name;
    ConvCfg cfg;
    Shape in;
    int batch;
  };
  const std::vector<Case> cases = {
      {"plain, batched", {3, 3, 3}, Shape{2, 2, 5, 5}, 0},
      {"plain, one sample at a time", {3, 3, 3}, Shape{2, 2, 5, 5}, 1},
      {"pad, stride, uneven batches", {2, 3, 2, 1, 0, 2, 1}, Shape{3, 2, 5, 6}, 2},
      {"dilation", {2, 2, 2, 1, 1, 1, 1, 2, 2}, Shape{2, 2, 5, 5}, 0},
      {"groups, no bias", {4, 3, 3, 1, 1, 1, 1, 1, 1, 2, false}, Shape{2, 4, 4, 4}, 0},
      {"overlapping strided windows", {2, 3, 3, 1, 1, 2, 2}, Shape{2, 2, 7, 7}, 0},
      {"one channel, one sample per batch (col2im in row bands)", {2, 3, 3, 1, 1, 2, 2}, Shape{2, 1, 7, 7}, 1},
      {"one channel, tall kernel, stride 3", {2, 4, 2, 2, 0, 3, 1}, Shape{1, 1, 9, 4}, 1},
      {"11 taps at stride 4, padded", {2, 11, 11, 2, 3, 4, 4}, Shape{2, 2, 19, 21}, 0},
      {"stride 3 wider than the kernel, one sample per batch", {2, 2, 2, 0, 1, 3, 3}, Shape{2, 1, 8, 10}, 1},
      {"stride 2 with dilation 3 and pad", {2, 3, 3, 2, 4, 2, 2, 3, 3}, Shape{2, 2, 11, 12}, 0},
      {"1x1 direct", {3, 1, 1}, Shape{2, 4, 3, 3}, 1},
      {"1x1 batched", {3, 1, 1, 0, 0, 1, 1, 1, 1, 1}, Shape{2, 4, 3, 3}, 0},
  };
  for (const auto& c : cases) {
    CAPTURE(std::string(c.name));
    auto x = random_tensor<T>(c.in, -1, 1, 5);
    Tensor<CPU, T> y;
    ConvolutionLayer<CPU, T> conv(conv_param(c.cfg));
    conv.set_batch_samples(c.batch);
    expect_gradients(conv, {&x}, {&y});
  }
}

TEST_CASE_TEMPLATE("Convolution follows a bottom that grows after setup", T, float, double) {
  ConvCfg c{3, 3, 3, 1, 1};
  auto small = random_tensor<T>({1, 2, 4, 4}, -1, 1, 1);
  auto big = random_tensor<T>({6, 2, 5, 6}, -1, 1, 2);
  Tensor<CPU, T> y;
  ConvolutionLayer<CPU, T> conv(conv_param(c));
  Ctx ctx;
  conv.setup(ctx, {&small}, {&y});
  conv.forward(ctx, {&small}, {&y});
  conv.forward(ctx, {&big}, {&y});
  CHECK(conv.batch_samples() == 6);
  REQUIRE(y.shape() == Shape{6, 3, 5, 6});
  const auto ref = reference_conv(big, *conv.blobs()[0], conv.blobs()[1]->data(), c);
  for (std::size_t i = 0; i < ref.size(); ++i) CHECK(double(y.data()[i]) == doctest::Approx(ref[i]).epsilon(1e-4));
}

TEST_CASE_TEMPLATE("Convolution with two bottoms shares its weights", T, float, double) {
  ConvCfg c{3, 3, 3, 1, 1};
  auto a = random_tensor<T>({2, 2, 4, 4}, -1, 1, 1);
  auto b = random_tensor<T>({2, 2, 4, 4}, -1, 1, 2);
  Tensor<CPU, T> ya, yb;
  const LayerParameter p = conv_param(c, 2);
  ConvolutionLayer<CPU, T> conv(p);
  Ctx ctx;
  conv.setup(ctx, {&a, &b}, {&ya, &yb});
  conv.forward(ctx, {&a, &b}, {&ya, &yb});
  const auto rb = reference_conv(b, *conv.blobs()[0], conv.blobs()[1]->data(), c);
  for (std::size_t i = 0; i < rb.size(); ++i) CHECK(double(yb.data()[i]) == doctest::Approx(rb[i]).epsilon(1e-4));
  ConvolutionLayer<CPU, T> conv2(p);
  expect_gradients(conv2, {&a, &b}, {&ya, &yb});
}

TEST_CASE_TEMPLATE("Convolution backward: batching, accumulation and propagate flags", T, float, double) {
  ConvCfg c{4, 3, 3, 1, 1, 1, 1, 1, 1, 2};
  auto x = random_tensor<T>({5, 4, 6, 6}, -1, 1, 3);
  auto dy = random_tensor<T>({5, 4, 6, 6}, -1, 1, 4);
  Ctx ctx;
  auto run = [&](int batch, int times, bool prop) {
    Tensor<CPU, T> y;
    auto xx = x.clone();
    ConvolutionLayer<CPU, T> conv(conv_param(c));
    conv.set_batch_samples(batch);
    conv.setup(ctx, {&xx}, {&y});
    // Same weights for every run: the filler draws from the context's RNG.
    auto w = random_tensor<T>(conv.blobs()[0]->shape(), -1, 1, 8);
    conv.blobs()[0]->copy_data_from_host(w.data_span());
    conv.forward(ctx, {&xx}, {&y});
    y.copy_diff_from_host(dy.data_span());
    xx.zero_diff();
    for (int t = 0; t < times; ++t) conv.backward(ctx, {&y}, {prop}, {&xx});
    return std::vector<std::vector<T>>{conv.blobs()[0]->diff_to_host(), conv.blobs()[1]->diff_to_host(),
                                       xx.diff_to_host()};
  };
  const auto one = run(1, 1, true);
  const auto batched = run(3, 1, true);
  const auto twice = run(0, 2, true);
  const auto no_prop = run(0, 1, false);
  for (std::size_t k = 0; k < 3; ++k)
    for (std::size_t i = 0; i < one[k].size(); ++i) {
      CHECK(double(batched[k][i]) == doctest::Approx(double(one[k][i])).epsilon(1e-4));
      // Parameter gradients accumulate; the bottom gradient is overwritten.
      CHECK(double(twice[k][i]) == doctest::Approx(double(one[k][i]) * (k < 2 ? 2 : 1)).epsilon(1e-4));
    }
  for (T v : no_prop[2]) CHECK(v == T(0));
  for (std::size_t i = 0; i < one[0].size(); ++i) CHECK(double(no_prop[0][i]) == doctest::Approx(double(one[0][i])).epsilon(1e-4));
}

TEST_CASE("Convolution reads Caffe's parameter forms") {
  Ctx ctx;
  auto x = random_tensor<float>({1, 2, 9, 8});
  Tensor<CPU, float> y;
  SUBCASE("two kernel_size values are height and width") {
    Message m;
    m.set("num_output", 3).set("kernel_size", 3).set("kernel_size", 2).set("stride", 2).set("stride", 1).set("pad", 1);
    ConvolutionLayer<CPU, float> conv(conv_param(m));
    conv.setup(ctx, {&x}, {&y});
    CHECK(conv.blobs()[0]->shape() == Shape{3, 2, 3, 2});
    CHECK(y.shape() == Shape{1, 3, 5, 9});
  }
  SUBCASE("kernel_h/kernel_w, pad_h/pad_w, stride_h/stride_w") {
    Message m;
    m.set("num_output", 1).set("kernel_h", 1).set("kernel_w", 3).set("pad_h", 2).set("stride_h", 3).set("stride_w", 2);
    ConvolutionLayer<CPU, float> conv(conv_param(m));
    conv.setup(ctx, {&x}, {&y});
    CHECK(y.shape() == Shape{1, 1, 5, 3});
    const auto& cp = conv.convolution_param();
    CHECK(cp.pad_w == 0);
    CHECK(cp.dilation_h == 1);
  }
  SUBCASE("engine is accepted, reshape follows the bottom") {
    Message m;
    m.set("num_output", 2).set("kernel_size", 3).set_enum("engine", "CAFFE");
    ConvolutionLayer<CPU, float> conv(conv_param(m));
    conv.setup(ctx, {&x}, {&y});
    auto x2 = random_tensor<float>({4, 2, 5, 5});
    conv.forward(ctx, {&x2}, {&y});
    CHECK(y.shape() == Shape{4, 2, 3, 3});
  }
  SUBCASE("registry") {
    Message m;
    m.set("num_output", 2).set("kernel_size", 3);
    auto layer = make_layer<CPU, double>(conv_param(m));
    CHECK(layer->type() == "Convolution");
  }
}

TEST_CASE("Convolution rejects bad configuration") {
  Ctx ctx;
  auto x = random_tensor<float>({2, 4, 5, 5});
  Tensor<CPU, float> y;
  auto setup_error = [&](const Message& m, const char* what) {
    ConvolutionLayer<CPU, float> a(conv_param(m, "conv7")), b(conv_param(m, "conv7"));
    CHECK_THROWS_WITH_AS(a.setup(ctx, {&x}, {&y}), doctest::Contains(what), Error);
    CHECK_THROWS_WITH_AS(b.setup(ctx, {&x}, {&y}), doctest::Contains("layer 'conv7' (Convolution)"), Error);
  };
  auto base = [] {
    Message m;
    m.set("num_output", 4);
    return m;
  };
  SUBCASE("zero stride") { setup_error(base().set("kernel_size", 3).set("stride", 0), "stride must be positive"); }
  SUBCASE("zero kernel") { setup_error(base().set("kernel_size", 0), "kernel_size must be positive"); }
  SUBCASE("negative kernel") { setup_error(base().set("kernel_h", -1).set("kernel_w", 2), "kernel_size must be positive"); }
  SUBCASE("negative pad") { setup_error(base().set("kernel_size", 3).set("pad", -1), "pad must be non-negative"); }
  SUBCASE("zero dilation") { setup_error(base().set("kernel_size", 3).set("dilation", 0), "dilation must be positive"); }
  SUBCASE("kernel larger than padded input") {
    setup_error(base().set("kernel_size", 8).set("pad", 1), "larger than the padded input 7x7");
  }
  SUBCASE("dilated kernel larger than input") {
    setup_error(base().set("kernel_size", 3).set("dilation", 3), "dilated extent 7x7");
  }
  SUBCASE("group does not divide channels") {
    setup_error(base().set("kernel_size", 3).set("group", 3).set("num_output", 3), "does not divide the 4 input channels");
  }
  SUBCASE("group does not divide num_output") {
    setup_error(base().set("kernel_size", 3).set("group", 2).set("num_output", 3), "does not divide num_output 3");
  }
  SUBCASE("zero group") { setup_error(base().set("kernel_size", 3).set("group", 0), "group must be positive"); }
  SUBCASE("zero num_output") { setup_error(base().set("kernel_size", 3).set("num_output", 0), "num_output must be positive"); }
  SUBCASE("axis other than 1") { setup_error(base().set("kernel_size", 3).set("axis", 2), "axis 2 is not supported"); }
  SUBCASE("force_nd_im2col") {
    setup_error(base().set("kernel_size", 3).set("force_nd_im2col", true), "force_nd_im2col is not supported");
  }
  SUBCASE("bottom not 4-d") {
    Message m = base().set("kernel_size", 1);
    ConvolutionLayer<CPU, float> conv(conv_param(m));
    auto x3 = random_tensor<float>({2, 4, 5});
    CHECK_THROWS_WITH_AS(conv.setup(ctx, {&x3}, {&y}), doctest::Contains("expected 4 axes"), Error);
  }
  SUBCASE("input shrinks below the kernel after setup") {
    ConvolutionLayer<CPU, float> conv(conv_param(base().set("kernel_size", 5)));
    conv.setup(ctx, {&x}, {&y});
    auto small = random_tensor<float>({2, 4, 4, 5});
    CHECK_THROWS_WITH_AS(conv.forward(ctx, {&small}, {&y}), doctest::Contains("larger than the padded input"), Error);
  }
  SUBCASE("channel count changes after setup") {
    ConvolutionLayer<CPU, float> conv(conv_param(base().set("kernel_size", 3)));
    conv.setup(ctx, {&x}, {&y});
    auto x2 = random_tensor<float>({2, 3, 5, 5});
    CHECK_THROWS_WITH_AS(conv.forward(ctx, {&x2}, {&y}), doctest::Contains("the weights expect 4"), Error);
  }
  SUBCASE("bottoms of different shapes") {
    LayerParameter p = conv_param(base().set("kernel_size", 3));
    ConvolutionLayer<CPU, float> conv(p);
    auto x2 = random_tensor<float>({2, 4, 6, 5});
    Tensor<CPU, float> y2;
    CHECK_THROWS_WITH_AS(conv.setup(ctx, {&x, &x2}, {&y, &y2}), doctest::Contains("all bottoms must match"), Error);
  }
  SUBCASE("more tops than bottoms") {
    ConvolutionLayer<CPU, float> conv(conv_param(base().set("kernel_size", 3)));
    Tensor<CPU, float> y2;
    CHECK_THROWS_WITH_AS(conv.setup(ctx, {&x}, {&y, &y2}), doctest::Contains("as many tops as bottoms"), Error);
  }
  SUBCASE("parse errors name the layer") {
    auto parse_error = [](const Message& m, const char* what) {
      CHECK_THROWS_WITH_AS((ConvolutionLayer<CPU, float>{conv_param(m, "conv7")}), doctest::Contains(what), Error);
      CHECK_THROWS_WITH_AS((ConvolutionLayer<CPU, float>{conv_param(m, "conv7")}), doctest::Contains("conv7"), Error);
    };
    parse_error(base(), "kernel_size (or kernel_h and kernel_w) is required");
    parse_error(base().set("kernel_size", 3).set("kernel_h", 3).set("kernel_w", 3), "not both");
    parse_error(base().set("kernel_h", 3), "kernel_h and kernel_w must be given together");
    parse_error(base().set("kernel_size", 3).set("pad", 1).set("pad_h", 1), "either pad or pad_h/pad_w");
    parse_error(base().set("kernel_size", 3).set("kernel_size", 3).set("kernel_size", 3), "takes 1 (both axes) or 2");
    parse_error(base().set("kernel_size", 3).set("kernel", 3), "unknown field 'kernel'");
    Message no_num;
    no_num.set("kernel_size", 3);
    parse_error(no_num, "missing required field 'num_output'");
  }
}

namespace {

// Forward output and all gradients of one configuration under a forced scheme, batch and thread
// count, for the same input, weights and top gradient.
template <class T>
std::vector<std::vector<T>> run_scheme(const ConvCfg& c, const Shape& in, typename ConvolutionLayer<CPU, T>::Parallel
                                       scheme, int batch, int threads) {
  const int threads_before = omp_get_max_threads();
  Ctx ctx(threads);
  auto x = random_tensor<T>(in, -1, 1, 21);
  Tensor<CPU, T> y;
  ConvolutionLayer<CPU, T> conv(conv_param(c));
  conv.set_parallel(scheme);
  conv.set_batch_samples(batch);
  conv.setup(ctx, {&x}, {&y});
  conv.blobs()[0]->copy_data_from_host(random_tensor<T>(conv.blobs()[0]->shape(), -1, 1, 22).data_span());
  if (c.bias) conv.blobs()[1]->copy_data_from_host(random_tensor<T>(conv.blobs()[1]->shape(), -1, 1, 23).data_span());
  conv.forward(ctx, {&x}, {&y});
  using P = typename ConvolutionLayer<CPU, T>::Parallel;
  if (scheme != P::automatic) CHECK(conv.parallel() == scheme);
  if (threads == 1 && scheme == P::automatic) CHECK(conv.parallel() == P::gemm);
  const auto ref = reference_conv(x, *conv.blobs()[0], c.bias ? conv.blobs()[1]->data() : nullptr, c);
  REQUIRE(y.count() == ref.size());
  for (std::size_t i = 0; i < ref.size(); ++i) CHECK(double(y.data()[i]) == doctest::Approx(ref[i]).epsilon(1e-4));
  y.copy_diff_from_host(random_tensor<T>(y.shape(), -1, 1, 24).data_span());
  // Parameter gradients accumulate onto what is there; start from a nonzero value to see it.
  for (auto& b : conv.blobs()) {
    std::vector<T> one(b->count(), T(1));
    b->copy_diff_from_host(one);
  }
  conv.backward(ctx, {&y}, {true}, {&x});
  std::vector<std::vector<T>> out{y.data_to_host(), x.diff_to_host(), conv.blobs()[0]->diff_to_host()};
  if (c.bias) out.push_back(conv.blobs()[1]->diff_to_host());
  ctx.set_threads(threads_before);  // the thread count is process-wide
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE("Convolution threading schemes agree with each other and the definition", T, float, double) {
  using P = typename ConvolutionLayer<CPU, T>::Parallel;
  using Case = ConvCase;
  const std::vector<Case> cases = {
      {"pad 2, 5x5 (CIFAR-10 quick)", {6, 5, 5, 2, 2}, Shape{7, 3, 8, 8}},
      {"stride and rectangular pad", {3, 3, 2, 1, 0, 2, 1}, Shape{5, 2, 7, 6}},
      {"dilation", {2, 3, 3, 2, 2, 1, 1, 2, 2}, Shape{4, 2, 7, 7}},
      {"groups, no bias", {4, 3, 3, 1, 1, 1, 1, 1, 1, 2, false}, Shape{5, 4, 5, 5}},
      {"1x1 direct", {3, 1, 1}, Shape{5, 4, 3, 3}},
      {"one sample (shares left empty)", {3, 3, 3, 1, 1}, Shape{1, 2, 5, 5}},
  };
  for (const auto& c : cases) {
    CAPTURE(std::string(c.name));
    // The reference: Caffe's order, one sample at a time on one thread.
    const auto ref = run_scheme<T>(c.cfg, c.in, P::gemm, 1, 1);
    for (int threads : {1, 2, 3})
      for (P scheme : {P::gemm, P::samples, P::automatic})
        for (int batch : {0, 1, 3}) {
          CAPTURE(threads);
          CAPTURE(static_cast<int>(scheme));
          CAPTURE(batch);
          const auto got = run_scheme<T>(c.cfg, c.in, scheme, batch, threads);
          REQUIRE(got.size() == ref.size());
          for (std::size_t k = 0; k < ref.size(); ++k) {
            REQUIRE(got[k].size() == ref[k].size());
            for (std::size_t i = 0; i < ref[k].size(); ++i)
              CHECK(double(got[k][i]) == doctest::Approx(double(ref[k][i])).epsilon(1e-4));
          }
          // A fixed thread count gives the same bits run after run.
          if (scheme == P::samples) CHECK(run_scheme<T>(c.cfg, c.in, scheme, batch, threads) == got);
        }
  }
}

TEST_CASE_TEMPLATE("Convolution gradients on the samples scheme", T, float, double) {
  using P = typename ConvolutionLayer<CPU, T>::Parallel;
  ConvCfg c{3, 3, 3, 1, 1, 2, 1, 1, 2, 1};
  auto x = random_tensor<T>({3, 2, 6, 7}, -1, 1, 5);
  Tensor<CPU, T> y;
  ConvolutionLayer<CPU, T> conv(conv_param(c));
  conv.set_parallel(P::samples);
  expect_gradients(conv, {&x}, {&y});
}

namespace {

/// dW from Caffe's definition, in double: dW[o][ci][i][j] = sum over n, oh, ow of
/// dy[n][o][oh][ow] * x[n][g*cg + ci][oh*s - p + i*d][ow*s - p + j*d].
template <class T>
std::vector<double> reference_weight_grad(const Tensor<CPU, T>& x, const Tensor<CPU, T>& dy, const ConvCfg& c) {
  const int N = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3);
  const int OH = dy.shape(2), OW = dy.shape(3);
  const int cg = C / c.group, og = c.num_output / c.group;
  std::vector<double> dw(static_cast<std::size_t>(c.num_output * cg * c.kh * c.kw), 0.0);
  for (int o = 0; o < c.num_output; ++o)
    for (int ci = 0; ci < cg; ++ci)
      for (int i = 0; i < c.kh; ++i)
        for (int j = 0; j < c.kw; ++j) {
          double s = 0;
          for (int n = 0; n < N; ++n)
            for (int oh = 0; oh < OH; ++oh)
              for (int ow = 0; ow < OW; ++ow) {
                const int ih = oh * c.stride_h - c.pad_h + i * c.dil_h;
                const int iw = ow * c.stride_w - c.pad_w + j * c.dil_w;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                s += double(dy.data()[dy.offset(n, o, oh, ow)]) *
                     double(x.data()[x.offset(n, (o / og) * cg + ci, ih, iw)]);
              }
          dw[static_cast<std::size_t>(((o * cg + ci) * c.kh + i) * c.kw + j)] = s;
        }
  return dw;
}

}  // namespace

// The weight gradient of small weight matrices is computed transposed and added back; larger ones
// (AlexNet's conv2-conv5) take the direct product. Both must give Caffe's gradient.
TEST_CASE_TEMPLATE("Convolution weight gradients match the definition for small and large weight matrices", T, float,
                   double) {
  struct Case {
    const char* name;
    ConvCfg cfg;
    int channels;
  };
  const Case cases[] = {
      {"small weights, transposed product", ConvCfg{8, 3, 3, 1, 1, 1, 1, 1, 1, 2}, 8},
      {"96x96x3x3 per group (82944 > 65536), direct product", ConvCfg{192, 3, 3, 1, 1, 1, 1, 1, 1, 2}, 192},
      {"one group of 80x96x3x3, strided", ConvCfg{80, 3, 3, 1, 1, 2, 2, 1, 1, 1}, 96},
  };
  for (const auto& k : cases) {
    CAPTURE(k.name);
    auto x = random_tensor<T>({2, k.channels, 5, 5}, -1, 1, 21);
    Tensor<CPU, T> y;
    ConvolutionLayer<CPU, T> conv(conv_param(k.cfg));
    Ctx ctx;
    conv.setup(ctx, {&x}, {&y});
    conv.forward(ctx, {&x}, {&y});
    auto dy = random_tensor<T>(y.shape(), -1, 1, 22);
    y.copy_diff_from_host(dy.data_span());
    conv.blobs()[0]->zero_diff();
    conv.blobs()[1]->zero_diff();
    conv.backward(ctx, {&y}, {true}, {&x});
    const auto ref = reference_weight_grad(x, dy, k.cfg);
    const auto dw = conv.blobs()[0]->diff_to_host();
    REQUIRE(dw.size() == ref.size());
    const double tol = std::is_same_v<T, float> ? 1e-4 : 1e-10;
    for (std::size_t i = 0; i < ref.size(); ++i) CHECK(double(dw[i]) == doctest::Approx(ref[i]).epsilon(tol));
    // The bias gradient: dy summed over samples and positions.
    const auto db = conv.blobs()[1]->diff_to_host();
    const int plane = dy.shape(2) * dy.shape(3);
    for (int o = 0; o < k.cfg.num_output; ++o) {
      double s = 0;
      for (int n = 0; n < 2; ++n)
        for (int p = 0; p < plane; ++p) s += double(dy.data()[dy.offset(n, o) + static_cast<std::size_t>(p)]);
      CHECK(double(db[static_cast<std::size_t>(o)]) == doctest::Approx(s).epsilon(tol));
    }
  }
}

namespace {

using Algo = ConvolutionLayer<CPU, float>::Algorithm;

// Output, bottom gradient, weight and bias gradients of one configuration under a forced
// algorithm, with the same input, weights and top gradient for every call.
template <class T>
std::vector<std::vector<T>> run_algorithm(const ConvCfg& c, const Shape& in, typename ConvolutionLayer<CPU, T>::Algorithm algo,
                                          int threads, typename ConvolutionLayer<CPU, T>::Algorithm* chosen = nullptr) {
  const int threads_before = omp_get_max_threads();
  Ctx ctx(threads);
  auto x = random_tensor<T>(in, -1, 1, 31);
  Tensor<CPU, T> y;
  ConvolutionLayer<CPU, T> conv(conv_param(c));
  conv.set_algorithm(algo);
  conv.setup(ctx, {&x}, {&y});
  conv.blobs()[0]->copy_data_from_host(random_tensor<T>(conv.blobs()[0]->shape(), -1, 1, 32).data_span());
  if (c.bias) conv.blobs()[1]->copy_data_from_host(random_tensor<T>(conv.blobs()[1]->shape(), -1, 1, 33).data_span());
  conv.forward(ctx, {&x}, {&y});
  y.copy_diff_from_host(random_tensor<T>(y.shape(), -1, 1, 34).data_span());
  for (auto& b : conv.blobs()) b->zero_diff();
  conv.backward(ctx, {&y}, {true}, {&x});
  if (chosen) *chosen = conv.algorithm();
  std::vector<std::vector<T>> out{y.data_to_host(), x.diff_to_host(), conv.blobs()[0]->diff_to_host()};
  if (c.bias) out.push_back(conv.blobs()[1]->diff_to_host());
  ctx.set_threads(threads_before);
  return out;
}

// |a - b| within tol of the larger tensor's largest magnitude: Winograd's rounding error scales
// with the magnitudes of a whole tile's terms, not with the (possibly cancelling) result.
template <class T>
void check_close(const std::vector<T>& a, const std::vector<T>& b, double tol) {
  REQUIRE(a.size() == b.size());
  double scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) scale = std::max({scale, std::abs(double(a[i])), std::abs(double(b[i]))});
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(std::abs(double(a[i]) - double(b[i])) <= tol * scale);
}

// Two backward passes over one forward pass: every parameter gradient must come out twice the
// first pass's (iter_size > 1 and shared parameters rely on parameter gradients accumulating, as
// Caffe's do).
void check_parameter_gradients_accumulate(ConvolutionLayer<CPU, float>& conv, Tensor<CPU, float>& x,
                                          bool propagate_down) {
  Ctx ctx;
  Tensor<CPU, float> y;
  conv.setup(ctx, {&x}, {&y});
  conv.forward(ctx, {&x}, {&y});
  y.copy_diff_from_host(random_tensor<float>(y.shape(), -1, 1, 4).data_span());
  for (auto& b : conv.blobs()) b->zero_diff();
  conv.backward(ctx, {&y}, {propagate_down}, {&x});
  std::vector<std::vector<float>> once;
  for (auto& b : conv.blobs()) once.push_back(b->diff_to_host());
  conv.backward(ctx, {&y}, {propagate_down}, {&x});
  for (std::size_t k = 0; k < once.size(); ++k) {
    CAPTURE(k);
    std::vector<float> doubled(once[k].size());
    for (std::size_t i = 0; i < doubled.size(); ++i) doubled[i] = 2 * once[k][i];
    check_close(conv.blobs()[k]->diff_to_host(), doubled, 1e-6);
  }
}

}  // namespace

TEST_CASE_TEMPLATE("Convolution with Winograd agrees with GEMM and the definition", T, float, double) {
  using A = typename ConvolutionLayer<CPU, T>::Algorithm;
  using Case = ConvCase;
  const std::vector<Case> cases = {
      {"5x5 pad 2 (CIFAR-10 quick conv3 in small)", {20, 5, 5, 2, 2}, Shape{3, 17, 8, 8}},
      {"5x5 pad 0, odd size", {3, 5, 5}, Shape{2, 2, 9, 11}},
      {"5x5 pad 1, no bias", {3, 5, 5, 1, 1, 1, 1, 1, 1, 1, false}, Shape{2, 3, 7, 6}},
      {"5x5 pad 4", {2, 5, 5, 4, 4}, Shape{2, 2, 5, 5}},
      {"3x3 pad 1 (AlexNet conv3-5 in small), groups 2", {8, 3, 3, 1, 1, 1, 1, 1, 1, 2}, Shape{2, 6, 13, 13}},
      {"3x3 pad 0, one sample", {4, 3, 3}, Shape{1, 3, 10, 7}},
      {"3x3 pad 2, image smaller than a tile", {3, 3, 3, 2, 2}, Shape{3, 2, 2, 3}},
      {"3x3 asymmetric pad", {3, 3, 3, 0, 1}, Shape{2, 2, 6, 9}},
  };
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-11;
  for (const auto& c : cases) {
    CAPTURE(std::string(c.name));
    const auto gemm = run_algorithm<T>(c.cfg, c.in, A::gemm, 1);
    for (int threads : {1, 2}) {
      CAPTURE(threads);
      A chosen = A::gemm;
      const auto wino = run_algorithm<T>(c.cfg, c.in, A::winograd, threads, &chosen);
      CHECK(chosen == A::winograd);
      REQUIRE(wino.size() == gemm.size());
      // Output, bottom gradient and weight gradient by Winograd; the bias gradient stays GEMM's.
      for (std::size_t k = 0; k < gemm.size(); ++k) check_close(wino[k], gemm[k], tol);
    }
  }
  // And against the definition, independently of the GEMM path.
  ConvCfg c{6, 5, 5, 2, 2};
  auto x = random_tensor<T>({2, 3, 9, 8}, -1, 1, 11);
  Tensor<CPU, T> y;
  ConvolutionLayer<CPU, T> conv(conv_param(c));
  conv.set_algorithm(A::winograd);
  Ctx ctx;
  conv.setup(ctx, {&x}, {&y});
  conv.forward(ctx, {&x}, {&y});
  CHECK(conv.algorithm() == A::winograd);
  const auto ref = reference_conv(x, *conv.blobs()[0], conv.blobs()[1]->data(), c);
  std::vector<T> refv(ref.begin(), ref.end());
  check_close(y.data_to_host(), refv, tol);
}

TEST_CASE_TEMPLATE("Convolution gradients through Winograd", T, float, double) {
  using A = typename ConvolutionLayer<CPU, T>::Algorithm;
  using Case = ConvCase;
  const std::vector<Case> cases = {
      {"5x5 pad 2", {3, 5, 5, 2, 2}, Shape{2, 2, 6, 5}},
      {"3x3 pad 1, groups 2, no bias", {4, 3, 3, 1, 1, 1, 1, 1, 1, 2, false}, Shape{2, 4, 5, 6}},
  };
  for (const auto& c : cases) {
    CAPTURE(std::string(c.name));
    auto x = random_tensor<T>(c.in, -1, 1, 5);
    Tensor<CPU, T> y;
    ConvolutionLayer<CPU, T> conv(conv_param(c.cfg));
    conv.set_algorithm(A::winograd);
    expect_gradients(conv, {&x}, {&y});
    CHECK(conv.algorithm() == A::winograd);
  }
}

TEST_CASE("Convolution through Winograd adds its parameter gradients to what is there, as Caffe does") {
  using A = ConvolutionLayer<CPU, float>::Algorithm;
  auto x = random_tensor<float>({2, 16, 9, 9}, -1, 1, 3);
  ConvolutionLayer<CPU, float> conv(conv_param(ConvCfg{16, 3, 3, 1, 1}));
  conv.set_algorithm(A::winograd);
  check_parameter_gradients_accumulate(conv, x, true);
  CHECK(conv.algorithm() == A::winograd);
}

TEST_CASE("Convolution by the direct loops agrees with GEMM: output and every gradient") {
  using Case = ConvCase;
  const std::vector<Case> cases = {
      {"CIFAR-10 quick conv1 (3 -> 32, 5x5 pad 2)", {32, 5, 5, 2, 2}, Shape{3, 3, 32, 32}},
      {"LeNet conv1 (1 -> 20, 5x5)", {20, 5, 5}, Shape{2, 1, 28, 28}},
      {"3x3 pad 1, no bias, ragged", {7, 3, 3, 1, 1, 1, 1, 1, 1, 1, false}, Shape{2, 2, 9, 13}},
      {"non-square 3x5, pad 0x2", {9, 3, 5, 0, 2}, Shape{1, 4, 6, 21}},
  };
  for (const auto& c : cases) {
    CAPTURE(std::string(c.name));
    const auto gemm = run_algorithm<float>(c.cfg, c.in, Algo::gemm, 1);
    for (int threads : {1, 2}) {
      CAPTURE(threads);
      Algo chosen = Algo::gemm;
      const auto direct = run_algorithm<float>(c.cfg, c.in, Algo::direct, threads, &chosen);
      CHECK(chosen == Algo::direct);
      REQUIRE(direct.size() == gemm.size());
      // Output, weight and bias gradients by the direct loops, the bottom gradient by GEMM.
      for (std::size_t k = 0; k < gemm.size(); ++k) check_close(direct[k], gemm[k], 2e-5);
    }
  }
}

TEST_CASE("Convolution gradients through the direct loops") {
  auto x = random_tensor<float>({2, 3, 6, 7}, -1, 1, 5);
  Tensor<CPU, float> y;
  ConvolutionLayer<CPU, float> conv(conv_param(ConvCfg{4, 3, 3, 1, 1}));
  conv.set_algorithm(Algo::direct);
  expect_gradients(conv, {&x}, {&y});
  CHECK(conv.algorithm() == Algo::direct);
  CHECK(conv.weight_gradient_algorithm() == Algo::direct);
  CHECK(conv.input_gradient_algorithm() == Algo::gemm);
}

TEST_CASE("Convolution through the direct loops adds its parameter gradients to what is there") {
  auto x = random_tensor<float>({2, 3, 16, 16}, -1, 1, 3);
  ConvolutionLayer<CPU, float> conv(conv_param(ConvCfg{8, 5, 5, 2, 2}));
  conv.set_algorithm(Algo::direct);
  check_parameter_gradients_accumulate(conv, x, false);
  CHECK(conv.weight_gradient_algorithm() == Algo::direct);
}

TEST_CASE("Convolution chooses Winograd where it applies and pays") {
  Ctx ctx;
  auto chosen = [&](const ConvCfg& c, const Shape& in, Algo forced) {
    auto x = random_tensor<float>(in);
    Tensor<CPU, float> y;
    ConvolutionLayer<CPU, float> conv(conv_param(c));
    conv.set_algorithm(forced);
    conv.setup(ctx, {&x}, {&y});
    conv.forward(ctx, {&x}, {&y});
    return conv.algorithm();
  };
  // CIFAR-10 quick's conv2 shape (at batch 2): 32 channels in and out.
  CHECK(chosen({32, 5, 5, 2, 2}, Shape{2, 32, 16, 16}, Algo::automatic) == Algo::winograd);
  CHECK(chosen({32, 5, 5, 2, 2}, Shape{2, 32, 16, 16}, Algo::gemm) == Algo::gemm);
  // LeNet's conv2 (20 -> 50): Winograd forward and weight gradient, GEMM input gradient (the
  // channels are not multiples of 16); CIFAR-10 quick's conv2 keeps Winograd for both gradients.
  {
    auto x = random_tensor<float>({2, 20, 12, 12});
    Tensor<CPU, float> y;
    ConvolutionLayer<CPU, float> conv(conv_param(ConvCfg{50, 5, 5}));
    conv.set_algorithm(Algo::automatic);
    conv.setup(ctx, {&x}, {&y});
    conv.forward(ctx, {&x}, {&y});
    conv.backward(ctx, {&y}, {true}, {&x});
    CHECK(conv.algorithm() == Algo::winograd);
    CHECK(conv.weight_gradient_algorithm() == Algo::winograd);
    CHECK(conv.input_gradient_algorithm() == Algo::gemm);
    conv.set_algorithm(Algo::winograd);
    conv.backward(ctx, {&y}, {true}, {&x});
    CHECK(conv.input_gradient_algorithm() == Algo::winograd);
    auto x2 = random_tensor<float>({2, 32, 16, 16});
    Tensor<CPU, float> y2;
    ConvolutionLayer<CPU, float> conv2(conv_param(ConvCfg{32, 5, 5, 2, 2}));
    conv2.set_algorithm(Algo::automatic);
    conv2.setup(ctx, {&x2}, {&y2});
    conv2.forward(ctx, {&x2}, {&y2});
    conv2.backward(ctx, {&y2}, {true}, {&x2});
    CHECK(conv2.weight_gradient_algorithm() == Algo::winograd);
    CHECK(conv2.input_gradient_algorithm() == Algo::winograd);
  }
  // conv1: 3 input channels, too few for Winograd: the direct loops where the CPU has AVX-512
  // (16 output columns, 32 channels), GEMM otherwise.
  const Algo few = math::DirectConvolution::fast() ? Algo::direct : Algo::gemm;
  CHECK(chosen({32, 5, 5, 2, 2}, Shape{2, 3, 16, 16}, Algo::automatic) == few);
  CHECK(chosen({32, 5, 5, 2, 2}, Shape{2, 3, 16, 16}, Algo::winograd) == Algo::winograd);
  CHECK(chosen({32, 5, 5, 2, 2}, Shape{2, 32, 16, 16}, Algo::direct) == Algo::direct);
  // Shapes that leave the direct loops' registers part empty stay on GEMM unless forced: LeNet's
  // conv1 (24 output columns, 20 channels), 5 input channels.
  CHECK(chosen({20, 5, 5}, Shape{2, 1, 28, 28}, Algo::automatic) == Algo::gemm);
  CHECK(chosen({20, 5, 5}, Shape{2, 1, 28, 28}, Algo::direct) == Algo::direct);
  CHECK(chosen({16, 3, 3, 1, 1}, Shape{2, 1, 16, 15}, Algo::automatic) == Algo::gemm);
  CHECK(chosen({16, 3, 3, 1, 1}, Shape{2, 5, 16, 16}, Algo::automatic) == Algo::gemm);
  // Out of the direct loops' reach, forced or not: stride 2, dilation, groups.
  CHECK(chosen({32, 5, 5, 2, 2, 2, 2}, Shape{1, 3, 16, 16}, Algo::direct) == Algo::gemm);
  CHECK(chosen({32, 3, 3, 2, 2, 1, 1, 2, 2}, Shape{1, 3, 16, 16}, Algo::direct) == Algo::gemm);
  CHECK(chosen({32, 3, 3, 1, 1, 1, 1, 1, 1, 2}, Shape{1, 4, 16, 16}, Algo::direct) == Algo::gemm);
  // Out of Winograd's reach, forced or not: stride 2, dilation, 7x7, pad >= kernel, 1x1.
  CHECK(chosen({32, 3, 3, 1, 1, 2, 2}, Shape{1, 32, 9, 9}, Algo::winograd) == Algo::gemm);
  CHECK(chosen({32, 3, 3, 2, 2, 1, 1, 2, 2}, Shape{1, 32, 9, 9}, Algo::winograd) == Algo::gemm);
  CHECK(chosen({32, 7, 7, 3, 3}, Shape{1, 32, 9, 9}, Algo::winograd) == Algo::gemm);
  CHECK(chosen({32, 3, 3, 3, 3}, Shape{1, 32, 9, 9}, Algo::winograd) == Algo::gemm);
  CHECK(chosen({32, 1, 1}, Shape{1, 32, 9, 9}, Algo::winograd) == Algo::gemm);
  // Double stays on GEMM unless forced (only float was measured).
  auto x = random_tensor<double>({2, 32, 8, 8});
  Tensor<CPU, double> y;
  ConvolutionLayer<CPU, double> conv(conv_param(ConvCfg{32, 3, 3, 1, 1}));
  conv.set_algorithm(ConvolutionLayer<CPU, double>::Algorithm::automatic);
  conv.setup(ctx, {&x}, {&y});
  CHECK(conv.algorithm() == ConvolutionLayer<CPU, double>::Algorithm::gemm);
}

TEST_CASE("POSEIDON_CONV_ALGO forces the convolution algorithm") {
  // The caller's value, put back at the end.
  const char* outer = std::getenv("POSEIDON_CONV_ALGO");
  const std::string saved = outer ? outer : "";
  const bool had = outer != nullptr;
  Ctx ctx;
  auto x = random_tensor<float>({2, 32, 8, 8});
  Tensor<CPU, float> y;
  const ConvCfg c{32, 3, 3, 1, 1};
  auto with_env = [&](const char* value) {
    ::setenv("POSEIDON_CONV_ALGO", value, 1);
    ConvolutionLayer<CPU, float> conv(conv_param(c));
    ::unsetenv("POSEIDON_CONV_ALGO");
    conv.setup(ctx, {&x}, {&y});
    return conv.algorithm();
  };
  CHECK(with_env("gemm") == Algo::gemm);
  CHECK(with_env("winograd") == Algo::winograd);
  CHECK(with_env("direct") == Algo::direct);
  CHECK(with_env("auto") == Algo::winograd);
  CHECK(with_env("") == Algo::winograd);
  ::setenv("POSEIDON_CONV_ALGO", "fast", 1);
  CHECK_THROWS_WITH_AS((ConvolutionLayer<CPU, float>{conv_param(c)}), doctest::Contains("POSEIDON_CONV_ALGO='fast'"), Error);
  if (had)
    ::setenv("POSEIDON_CONV_ALGO", saved.c_str(), 1);
  else
    ::unsetenv("POSEIDON_CONV_ALGO");
}
