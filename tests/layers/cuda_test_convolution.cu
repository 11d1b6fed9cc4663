// Convolution on CUDA (cuDNN) against the CPU over pad, stride, dilation, groups, bias and several
// bottoms; algorithm choice per shape, the workspace limit, reproducibility, TF32, the CPU's
// parameter errors; and its gradients checked on the GPU in double.
#include <doctest/doctest.h>
#include <poseidon/layers/convolution.hpp>

#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "support/cuda_layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {

struct ConvCfg {
  int num_output = 4;
  int kh = 3, kw = 3;
  int pad_h = 0, pad_w = 0;
  int stride_h = 1, stride_w = 1;
  int dil_h = 1, dil_w = 1;
  int group = 1;
  bool bias = true;
};

LayerParameter conv_param(const ConvCfg& c, int bottoms = 1) {
  Message m;
  m.set("num_output", c.num_output).set("bias_term", c.bias).set("group", c.group);
  m.set("kernel_h", c.kh).set("kernel_w", c.kw);
  m.set("pad_h", c.pad_h).set("pad_w", c.pad_w);
  m.set("stride_h", c.stride_h).set("stride_w", c.stride_w);
  m.set("dilation", c.dil_h).set("dilation", c.dil_w);
  m.add("weight_filler", Message().set("type", "gaussian").set("std", 0.5));
  m.add("bias_filler", Message().set("type", "uniform").set("min", -1).set("max", 1));
  LayerParameter p("conv", "Convolution");
  const std::vector<std::string> in{"a", "b", "c"}, out{"ya", "yb", "yc"};
  p.bottom.assign(in.begin(), in.begin() + bottoms);
  p.top.assign(out.begin(), out.begin() + bottoms);
  return p.with("convolution_param", m);
}

// cuDNN and OpenBLAS sum the C*KH*KW products (forward, backward data) and the N*OH*OW products
// (weight gradient) in different orders, and cuDNN may pick Winograd or FFT algorithms, whose
// transforms round differently again: float agrees to ~1e-5 of the largest terms.
template <class T>
double conv_eps() {
  return std::is_same_v<T, float> ? 5e-4 : 1e-10;
}

}  // namespace

TEST_CASE_TEMPLATE("CUDA Convolution matches the CPU", T, float, double) {
  CHECK(LayerRegistry<CUDA, T>::has("Convolution"));
  const double eps = conv_eps<T>();
  SUBCASE("3x3, pad 1, bias") {
    ConvCfg c;
    c.pad_h = c.pad_w = 1;
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({2, 3, 9, 8})}, eps);
  }
  SUBCASE("rectangular 5x3 kernel, stride 2, no bias") {
    ConvCfg c;
    c.num_output = 5;
    c.kh = 5;
    c.kw = 3;
    c.stride_h = c.stride_w = 2;
    c.bias = false;
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({3, 4, 11, 10})}, eps);
  }
  SUBCASE("asymmetric pad and stride") {
    ConvCfg c;
    c.pad_h = 2;
    c.pad_w = 0;
    c.stride_h = 1;
    c.stride_w = 3;
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({2, 2, 8, 13})}, eps);
  }
  SUBCASE("dilation 2, pad 2") {
    ConvCfg c;
    c.pad_h = c.pad_w = 2;
    c.dil_h = c.dil_w = 2;
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({2, 3, 10, 10})}, eps);
  }
  SUBCASE("dilation 3x1 with stride 2") {
    ConvCfg c;
    c.dil_h = 3;
    c.stride_h = c.stride_w = 2;
    c.pad_w = 1;
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({2, 2, 12, 9})}, eps);
  }
  SUBCASE("2 groups, pad 1, stride 2") {
    ConvCfg c;
    c.num_output = 6;
    c.group = 2;
    c.pad_h = c.pad_w = 1;
    c.stride_h = c.stride_w = 2;
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({2, 4, 9, 9})}, eps);
  }
  SUBCASE("depthwise (group = channels)") {
    ConvCfg c;
    c.num_output = 6;
    c.group = 6;
    c.pad_h = c.pad_w = 1;
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({2, 6, 7, 7})}, eps);
  }
  SUBCASE("1x1") {
    ConvCfg c;
    c.num_output = 6;
    c.kh = c.kw = 1;
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({4, 8, 5, 5})}, eps);
  }
  SUBCASE("AlexNet-like conv1: 11x11, stride 4") {
    ConvCfg c;
    c.num_output = 8;
    c.kh = c.kw = 11;
    c.stride_h = c.stride_w = 4;
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({2, 3, 35, 35})}, eps);
  }
  SUBCASE("AlexNet-like conv2: 5x5, pad 2, 2 groups") {
    ConvCfg c;
    c.num_output = 16;
    c.kh = c.kw = 5;
    c.pad_h = c.pad_w = 2;
    c.group = 2;
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({2, 8, 13, 13})}, eps);
  }
  SUBCASE("AlexNet-like conv3: 3x3, pad 1, wider channels") {
    ConvCfg c;
    c.num_output = 24;
    c.pad_h = c.pad_w = 1;
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({4, 32, 6, 6})}, eps);
  }
  SUBCASE("kernel as large as the padded input") {
    ConvCfg c;
    c.kh = 5;
    c.kw = 4;
    c.pad_h = 1;
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({2, 2, 3, 4})}, eps);
  }
  SUBCASE("two bottoms share the weights; gradients add up over both") {
    ConvCfg c;
    c.pad_h = c.pad_w = 1;
    compare_with_cpu<T>(conv_param(c, 2), {random_tensor<T>({2, 3, 6, 5}, -1, 1, 5), random_tensor<T>({2, 3, 6, 5}, -1, 1, 6)},
                        eps);
  }
  SUBCASE("three passes accumulate the parameter gradients") {
    ConvCfg c;
    c.group = 2;
    c.num_output = 4;
    CompareOptions o;
    o.passes = 3;
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({3, 2, 7, 6})}, eps, o);
  }
}

TEST_CASE_TEMPLATE("CUDA Convolution chooses algorithms per shape and keeps matching the CPU", T, float, double) {
  // One layer per device, fed batches of changing shape: each shape has its own algorithms (chosen
  // once, then taken from the cache), and the outputs keep agreeing with the CPU's.
  ConvCfg c;
  c.num_output = 6;
  c.pad_h = c.pad_w = 1;
  c.group = 2;
  const LayerParameter p = conv_param(c);
  auto cpu = make_layer<CPU, T>(p);
  auto gpu = make_layer<CUDA, T>(p);
  Ctx cctx(0, 3);
  GpuCtx gctx(0, 3);
  Tensor<CPU, T> cx = random_tensor<T>({2, 4, 8, 8}), cy;
  Tensor<CUDA, T> gx = to_gpu(cx), gy;
  cpu->setup(cctx, {&cx}, {&cy});
  gpu->setup(gctx, {&gx}, {&gy});
  gpu->blobs()[0]->copy_from(*cpu->blobs()[0], true);
  gpu->blobs()[1]->copy_from(*cpu->blobs()[1], true);
  auto* conv = dynamic_cast<ConvolutionLayer<CUDA, T>*>(gpu.get());
  REQUIRE(conv != nullptr);
  const std::vector<Shape> shapes{{2, 4, 8, 8}, {5, 4, 8, 8}, {2, 4, 11, 6}, {2, 4, 8, 8}};
  for (std::size_t s = 0; s < shapes.size(); ++s) {
    CAPTURE(s);
    cx = random_tensor<T>(shapes[s], -1, 1, 100 + s);
    gx = to_gpu(cx);
    cpu->forward(cctx, {&cx}, {&cy});
    gpu->forward(gctx, {&gx}, {&gy});
    REQUIRE(gy.shape() == cy.shape());
    expect_close("top", gy.data_to_host(), cy.data_to_host(), conv_eps<T>());
    const auto a = conv->algorithms();
    CHECK(a.forward.algo >= 0);
    CHECK(a.workspace() <= conv->cudnn_options().workspace_limit);
    CHECK(conv->workspace_bytes() >= a.forward.workspace);
    std::vector<T> dy(cy.count());
    Rng r(200 + s);
    for (auto& v : dy) v = static_cast<T>(r.uniform<double>(-1, 1));
    cy.copy_diff_from_host(dy);
    gy.copy_diff_from_host(dy);
    for (auto& b : cpu->blobs()) b->zero_diff();
    for (auto& b : gpu->blobs()) b->zero_diff();
    cpu->backward(cctx, {&cy}, {true}, {&cx});
    gpu->backward(gctx, {&gy}, {true}, {&gx});
    expect_close("bottom diff", gx.diff_to_host(), cx.diff_to_host(), conv_eps<T>());
    expect_close("weight diff", gpu->blobs()[0]->diff_to_host(), cpu->blobs()[0]->diff_to_host(), conv_eps<T>());
    expect_close("bias diff", gpu->blobs()[1]->diff_to_host(), cpu->blobs()[1]->diff_to_host(), conv_eps<T>());
    const auto b = conv->algorithms();
    CHECK(b.backward_data.algo >= 0);
    CHECK(b.backward_filter.algo >= 0);
    CHECK(conv->workspace_bytes() >= b.workspace());
  }
}

TEST_CASE_TEMPLATE("CUDA Convolution within a zero workspace limit still matches the CPU", T, float, double) {
  ConvCfg c;
  c.num_output = 8;
  c.pad_h = c.pad_w = 1;
  ConvolutionCudnnOptions o;
  o.workspace_limit = 0;
  o.deterministic = false;  // a limit of 0 may leave only atomics-based backward algorithms
  auto set_zero = [&](Layer<CUDA, T>& l) {
    auto* conv = dynamic_cast<ConvolutionLayer<CUDA, T>*>(&l);
    REQUIRE(conv != nullptr);
    conv->set_cudnn_options(o);
  };
  // compare_with_cpu builds its own GPU layer; run the comparison by hand with the option set.
  const LayerParameter p = conv_param(c);
  auto cpu = make_layer<CPU, T>(p);
  auto gpu = make_layer<CUDA, T>(p);
  set_zero(*gpu);
  Ctx cctx(0, 4);
  GpuCtx gctx(0, 4);
  Tensor<CPU, T> cx = random_tensor<T>({2, 5, 9, 9}), cy;
  Tensor<CUDA, T> gx = to_gpu(cx), gy;
  cpu->setup(cctx, {&cx}, {&cy});
  gpu->setup(gctx, {&gx}, {&gy});
  for (std::size_t i = 0; i < cpu->blobs().size(); ++i) gpu->blobs()[i]->copy_from(*cpu->blobs()[i], true);
  cpu->forward(cctx, {&cx}, {&cy});
  gpu->forward(gctx, {&gx}, {&gy});
  expect_close("top", gy.data_to_host(), cy.data_to_host(), conv_eps<T>());
  std::vector<T> dy(cy.count());
  Rng r(9);
  for (auto& v : dy) v = static_cast<T>(r.uniform<double>(-1, 1));
  cy.copy_diff_from_host(dy);
  gy.copy_diff_from_host(dy);
  cpu->backward(cctx, {&cy}, {true}, {&cx});
  gpu->backward(gctx, {&gy}, {true}, {&gx});
  expect_close("bottom diff", gx.diff_to_host(), cx.diff_to_host(), conv_eps<T>());
  expect_close("weight diff", gpu->blobs()[0]->diff_to_host(), cpu->blobs()[0]->diff_to_host(), conv_eps<T>());
  auto* conv = dynamic_cast<ConvolutionLayer<CUDA, T>*>(gpu.get());
  CHECK(conv->algorithms().workspace() == 0);
  CHECK(conv->workspace_bytes() == 0);
}

TEST_CASE("CUDA Convolution with deterministic algorithms gives the same bits on every run") {
  ConvCfg c;
  c.num_output = 16;
  c.pad_h = c.pad_w = 1;
  c.group = 2;
  const LayerParameter p = conv_param(c);
  auto run = [&] {
    auto gpu = make_layer<CUDA, float>(p);
    GpuCtx ctx(0, 5);
    Tensor<CUDA, float> x = to_gpu(random_tensor<float>({8, 8, 16, 16})), y;
    gpu->setup(ctx, {&x}, {&y});
    gpu->forward(ctx, {&x}, {&y});
    y.copy_diff_from_host(random_tensor<float>(y.shape(), -1, 1, 6).data_span());
    gpu->backward(ctx, {&y}, {true}, {&x});
    auto* conv = dynamic_cast<ConvolutionLayer<CUDA, float>*>(gpu.get());
    REQUIRE(conv != nullptr);
    CHECK(conv->algorithms().backward_filter.deterministic);
    CHECK(conv->algorithms().backward_data.deterministic);
    return std::vector<std::vector<float>>{y.data_to_host(), x.diff_to_host(), gpu->blobs()[0]->diff_to_host(),
                                           gpu->blobs()[1]->diff_to_host()};
  };
  const auto a = run(), b = run();
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    CAPTURE(i);
    expect_close("run-to-run", a[i], b[i], 0);
  }
}

TEST_CASE("CUDA Convolution with TF32 allowed stays close to the CPU (float)") {
  ConvCfg c;
  c.num_output = 16;
  c.pad_h = c.pad_w = 1;
  const LayerParameter p = conv_param(c);
  auto cpu = make_layer<CPU, float>(p);
  auto gpu = make_layer<CUDA, float>(p);
  auto* conv = dynamic_cast<ConvolutionLayer<CUDA, float>*>(gpu.get());
  REQUIRE(conv != nullptr);
  ConvolutionCudnnOptions o;
  o.allow_tf32 = true;
  conv->set_cudnn_options(o);
  Ctx cctx(0, 8);
  GpuCtx gctx(0, 8);
  Tensor<CPU, float> cx = random_tensor<float>({4, 16, 12, 12}), cy;
  Tensor<CUDA, float> gx = to_gpu(cx), gy;
  cpu->setup(cctx, {&cx}, {&cy});
  gpu->setup(gctx, {&gx}, {&gy});
  for (std::size_t i = 0; i < cpu->blobs().size(); ++i) gpu->blobs()[i]->copy_from(*cpu->blobs()[i], true);
  cpu->forward(cctx, {&cx}, {&cy});
  gpu->forward(gctx, {&gx}, {&gy});
  // TF32 keeps 10 mantissa bits of each factor: ~5e-4 per product, ~1e-3 over 144-term sums.
  expect_close("top (TF32)", gy.data_to_host(), cy.data_to_host(), 1e-2);
}

TEST_CASE("CUDA Convolution rejects bad parameters with the CPU layer's messages") {
  auto first_error = [](auto& layer, auto& ctx, auto& x, auto& y) -> std::string {
    try {
      layer->setup(ctx, {&x}, {&y});
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  auto same_error = [&](const ConvCfg& c, const Shape& in) {
    const LayerParameter p = conv_param(c);
    auto cpu = make_layer<CPU, float>(p);
    auto gpu = make_layer<CUDA, float>(p);
    Ctx cctx;
    GpuCtx gctx;
    Tensor<CPU, float> cx(in), cy;
    Tensor<CUDA, float> gx(in), gy;
    const std::string ce = first_error(cpu, cctx, cx, cy), ge = first_error(gpu, gctx, gx, gy);
    CHECK(!ce.empty());
    CHECK(ge == ce);
  };
  ConvCfg c;
  c.group = 3;  // does not divide 4 channels
  same_error(c, {1, 4, 5, 5});
  c = ConvCfg{};
  c.num_output = 5;
  c.group = 2;  // does not divide num_output
  same_error(c, {1, 4, 5, 5});
  c = ConvCfg{};
  c.kh = c.kw = 7;  // larger than the input
  same_error(c, {1, 2, 5, 5});
  c = ConvCfg{};
  c.dil_h = c.dil_w = 3;  // dilated extent 7 > 5 + 2 * pad
  same_error(c, {1, 2, 5, 5});
  c = ConvCfg{};
  same_error(c, {2, 3, 5});  // not 4-d
}

TEST_CASE("CUDA Convolution gradients (double, on the GPU)") {
  SUBCASE("groups, stride, pad, bias") {
    ConvCfg c;
    c.num_output = 4;
    c.group = 2;
    c.pad_h = c.pad_w = 1;
    c.stride_h = c.stride_w = 2;
    expect_gpu_gradients<double>(conv_param(c), {random_tensor<double>({2, 4, 5, 5})});
  }
  SUBCASE("dilation, rectangular kernel, no bias") {
    ConvCfg c;
    c.num_output = 3;
    c.kh = 2;
    c.kw = 3;
    c.dil_h = c.dil_w = 2;
    c.pad_w = 1;
    c.bias = false;
    expect_gpu_gradients<double>(conv_param(c), {random_tensor<double>({2, 2, 6, 5})});
  }
  SUBCASE("two bottoms") {
    ConvCfg c;
    c.num_output = 2;
    expect_gpu_gradients<double>(conv_param(c, 2),
                                 {random_tensor<double>({1, 2, 4, 4}, -1, 1, 1), random_tensor<double>({1, 2, 4, 4}, -1, 1, 2)});
  }
}
