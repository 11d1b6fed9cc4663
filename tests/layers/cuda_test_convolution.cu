// Convolution on CUDA (cuDNN) against the CPU over pad, stride, dilation, groups, bias and several
// bottoms; algorithm choice per shape (heuristics and find mode), the workspace limit,
// reproducibility, TF32, the CPU's parameter errors; and its gradients checked on the GPU in double.
#include <doctest/doctest.h>
#include <poseidon/layers/convolution.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "support/cuda_layer_testing.hpp"
#include "support/layer_params.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {

// cuDNN and OpenBLAS sum the C*KH*KW products (forward, backward data) and the N*OH*OW products
// (weight gradient) in different orders, and cuDNN may pick Winograd or FFT algorithms, whose
// transforms round differently again: float agrees to ~1e-5 of the largest terms.
template <class T>
double conv_eps() {
  return std::is_same_v<T, float> ? 5e-4 : 1e-10;
}

// Sets an environment variable for one scope and restores what was there.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_, old_->c_str(), 1);
    else
      ::unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// One forward and backward of `p` on the CPU and on the GPU from the same weights, input (of
// shape `in`) and top gradient, the GPU layer with cuDNN `options`; checks top, bottom diff and
// weight diff agree, and returns the GPU layer for the caller's checks on its choices.
template <class T>
std::unique_ptr<Layer<CUDA, T>> pass_with_options(const LayerParameter& p, const ConvolutionCudnnOptions& options,
                                                  const Shape& in, std::uint64_t seed) {
  auto cpu = make_layer<CPU, T>(p);
  auto gpu = make_layer<CUDA, T>(p);
  auto* conv = dynamic_cast<ConvolutionLayer<CUDA, T>*>(gpu.get());
  REQUIRE(conv != nullptr);
  conv->set_cudnn_options(options);
  Ctx cctx(0, seed);
  GpuCtx gctx(0, seed);
  Tensor<CPU, T> cx = random_tensor<T>(in), cy;
  Tensor<CUDA, T> gx = to_gpu(cx), gy;
  cpu->setup(cctx, {&cx}, {&cy});
  gpu->setup(gctx, {&gx}, {&gy});
  for (std::size_t i = 0; i < cpu->blobs().size(); ++i) gpu->blobs()[i]->copy_from(*cpu->blobs()[i], true);
  cpu->forward(cctx, {&cx}, {&cy});
  gpu->forward(gctx, {&gx}, {&gy});
  expect_close("top", gy.data_to_host(), cy.data_to_host(), conv_eps<T>());
  std::vector<T> dy(cy.count());
  Rng r(seed + 1);
  for (auto& v : dy) v = static_cast<T>(r.uniform<double>(-1, 1));
  cy.copy_diff_from_host(dy);
  gy.copy_diff_from_host(dy);
  cpu->backward(cctx, {&cy}, {true}, {&cx});
  gpu->backward(gctx, {&gy}, {true}, {&gx});
  expect_close("bottom diff", gx.diff_to_host(), cx.diff_to_host(), conv_eps<T>());
  expect_close("weight diff", gpu->blobs()[0]->diff_to_host(), cpu->blobs()[0]->diff_to_host(), conv_eps<T>());
  return gpu;
}

}  // namespace

TEST_CASE_TEMPLATE("CUDA Convolution matches the CPU", T, float, double) {
  CHECK(LayerRegistry<CUDA, T>::has("Convolution"));
  const double eps = conv_eps<T>();
  SUBCASE("3x3, pad 1, bias") {
    compare_with_cpu<T>(conv_param(ConvCfg{.pad_h = 1, .pad_w = 1}), {random_tensor<T>({2, 3, 9, 8})}, eps);
  }
  SUBCASE("rectangular 5x3 kernel, stride 2, no bias") {
    const ConvCfg c{.num_output = 5, .kh = 5, .kw = 3, .stride_h = 2, .stride_w = 2, .bias = false};
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({3, 4, 11, 10})}, eps);
  }
  SUBCASE("asymmetric pad and stride") {
    const ConvCfg c{.pad_h = 2, .pad_w = 0, .stride_h = 1, .stride_w = 3};
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({2, 2, 8, 13})}, eps);
  }
  SUBCASE("dilation 2, pad 2") {
    const ConvCfg c{.pad_h = 2, .pad_w = 2, .dil_h = 2, .dil_w = 2};
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({2, 3, 10, 10})}, eps);
  }
  SUBCASE("dilation 3x1 with stride 2") {
    const ConvCfg c{.pad_w = 1, .stride_h = 2, .stride_w = 2, .dil_h = 3};
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({2, 2, 12, 9})}, eps);
  }
  SUBCASE("2 groups, pad 1, stride 2") {
    const ConvCfg c{.num_output = 6, .pad_h = 1, .pad_w = 1, .stride_h = 2, .stride_w = 2, .group = 2};
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({2, 4, 9, 9})}, eps);
  }
  SUBCASE("depthwise (group = channels)") {
    const ConvCfg c{.num_output = 6, .pad_h = 1, .pad_w = 1, .group = 6};
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({2, 6, 7, 7})}, eps);
  }
  SUBCASE("1x1") {
    compare_with_cpu<T>(conv_param(ConvCfg{.num_output = 6, .kh = 1, .kw = 1}), {random_tensor<T>({4, 8, 5, 5})}, eps);
  }
  SUBCASE("AlexNet-like conv1: 11x11, stride 4") {
    const ConvCfg c{.num_output = 8, .kh = 11, .kw = 11, .stride_h = 4, .stride_w = 4};
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({2, 3, 35, 35})}, eps);
  }
  SUBCASE("AlexNet-like conv2: 5x5, pad 2, 2 groups") {
    const ConvCfg c{.num_output = 16, .kh = 5, .kw = 5, .pad_h = 2, .pad_w = 2, .group = 2};
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({2, 8, 13, 13})}, eps);
  }
  SUBCASE("AlexNet-like conv3: 3x3, pad 1, wider channels") {
    const ConvCfg c{.num_output = 24, .pad_h = 1, .pad_w = 1};
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({4, 32, 6, 6})}, eps);
  }
  SUBCASE("kernel as large as the padded input") {
    compare_with_cpu<T>(conv_param(ConvCfg{.kh = 5, .kw = 4, .pad_h = 1}), {random_tensor<T>({2, 2, 3, 4})}, eps);
  }
  SUBCASE("two bottoms share the weights; gradients add up over both") {
    compare_with_cpu<T>(conv_param(ConvCfg{.pad_h = 1, .pad_w = 1}, 2),
                        {random_tensor<T>({2, 3, 6, 5}, -1, 1, 5), random_tensor<T>({2, 3, 6, 5}, -1, 1, 6)}, eps);
  }
  SUBCASE("three passes accumulate the parameter gradients") {
    CompareOptions o;
    o.passes = 3;
    compare_with_cpu<T>(conv_param(ConvCfg{.num_output = 4, .group = 2}), {random_tensor<T>({3, 2, 7, 6})}, eps, o);
  }
}

TEST_CASE_TEMPLATE("CUDA Convolution chooses algorithms per shape and keeps matching the CPU", T, float, double) {
  // One layer per device, fed batches of changing shape: each shape has its own algorithms (chosen
  // once, then taken from the cache), and the outputs keep agreeing with the CPU's.
  const LayerParameter p = conv_param(ConvCfg{.num_output = 6, .pad_h = 1, .pad_w = 1, .group = 2});
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
  ConvolutionCudnnOptions o;
  o.workspace_limit = 0;
  o.deterministic = false;  // a limit of 0 may leave only atomics-based backward algorithms
  const auto gpu = pass_with_options<T>(conv_param(ConvCfg{.num_output = 8, .pad_h = 1, .pad_w = 1}), o,
                                        Shape{2, 5, 9, 9}, 4);
  auto* conv = dynamic_cast<ConvolutionLayer<CUDA, T>*>(gpu.get());
  CHECK(conv->algorithms().workspace() == 0);
  CHECK(conv->workspace_bytes() == 0);
}

TEST_CASE("CUDA Convolution with deterministic algorithms gives the same bits on every run") {
  const LayerParameter p = conv_param(ConvCfg{.num_output = 16, .pad_h = 1, .pad_w = 1, .group = 2});
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
  const LayerParameter p = conv_param(ConvCfg{.num_output = 16, .pad_h = 1, .pad_w = 1});
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

TEST_CASE_TEMPLATE("CUDA Convolution in find mode (POSEIDON_CUDNN_FIND=1) matches the CPU", T, float, double) {
  // The variable is read when a layer is constructed: compare_with_cpu's layers see it.
  const ScopedEnv find("POSEIDON_CUDNN_FIND", "1");
  CHECK(ConvolutionCudnnOptions::from_env().find);
  const double eps = conv_eps<T>();
  SUBCASE("3x3, pad 1, bias, three passes") {
    CompareOptions o;
    o.passes = 3;
    compare_with_cpu<T>(conv_param(ConvCfg{.pad_h = 1, .pad_w = 1}), {random_tensor<T>({2, 3, 9, 8})}, eps, o);
  }
  SUBCASE("groups, stride, dilation") {
    const ConvCfg c{.num_output = 6, .pad_h = 2, .pad_w = 2, .stride_h = 2, .stride_w = 2, .dil_h = 2, .dil_w = 2,
                    .group = 2};
    compare_with_cpu<T>(conv_param(c), {random_tensor<T>({3, 4, 11, 10})}, eps);
  }
  SUBCASE("two bottoms") {
    compare_with_cpu<T>(conv_param(ConvCfg{.num_output = 5}, 2),
                        {random_tensor<T>({2, 3, 7, 6}, -1, 1, 5), random_tensor<T>({2, 3, 7, 6}, -1, 1, 6)}, eps);
  }
  SUBCASE("timed choices per shape, cached, within the limit, deterministic") {
    const LayerParameter p = conv_param(ConvCfg{.num_output = 8, .pad_h = 1, .pad_w = 1});
    auto cpu = make_layer<CPU, T>(p);
    auto gpu = make_layer<CUDA, T>(p);
    auto* conv = dynamic_cast<ConvolutionLayer<CUDA, T>*>(gpu.get());
    REQUIRE(conv != nullptr);
    CHECK(conv->cudnn_options().find);
    CHECK(conv->cudnn_options().deterministic);
    Ctx cctx(0, 12);
    GpuCtx gctx(0, 12);
    Tensor<CPU, T> cx = random_tensor<T>({2, 5, 9, 9}), cy;
    Tensor<CUDA, T> gx = to_gpu(cx), gy;
    cpu->setup(cctx, {&cx}, {&cy});
    gpu->setup(gctx, {&gx}, {&gy});
    for (std::size_t i = 0; i < cpu->blobs().size(); ++i) gpu->blobs()[i]->copy_from(*cpu->blobs()[i], true);
    for (const Shape& s : {Shape{2, 5, 9, 9}, Shape{4, 5, 7, 12}, Shape{2, 5, 9, 9}}) {
      const std::string shape = s.str();
      CAPTURE(shape);
      cx = random_tensor<T>(s, -1, 1, 300);
      gx = to_gpu(cx);
      cpu->forward(cctx, {&cx}, {&cy});
      gpu->forward(gctx, {&gx}, {&gy});
      expect_close("top", gy.data_to_host(), cy.data_to_host(), eps);
      std::vector<T> dy(cy.count());
      Rng r(301);
      for (auto& v : dy) v = static_cast<T>(r.uniform<double>(-1, 1));
      cy.copy_diff_from_host(dy);
      gy.copy_diff_from_host(dy);
      for (auto& b : cpu->blobs()) b->zero_diff();
      for (auto& b : gpu->blobs()) b->zero_diff();
      cpu->backward(cctx, {&cy}, {true}, {&cx});
      gpu->backward(gctx, {&gy}, {true}, {&gx});
      // The search wrote only scratch: the diffs are the real passes' alone.
      expect_close("bottom diff", gx.diff_to_host(), cx.diff_to_host(), eps);
      expect_close("weight diff", gpu->blobs()[0]->diff_to_host(), cpu->blobs()[0]->diff_to_host(), eps);
      expect_close("bias diff", gpu->blobs()[1]->diff_to_host(), cpu->blobs()[1]->diff_to_host(), eps);
      const auto a = conv->algorithms();
      for (const auto* c : {&a.forward, &a.backward_data, &a.backward_filter}) {
        CHECK(c->algo >= 0);
        CHECK(c->time_ms >= 0);  // measured, not a heuristic choice
        CHECK(c->deterministic);
      }
      CHECK(a.workspace() <= conv->cudnn_options().workspace_limit);
      CHECK(conv->workspace_bytes() >= a.workspace());
    }
  }
}

TEST_CASE_TEMPLATE("CUDA Convolution find mode set by options, with a zero workspace limit", T, float, double) {
  const LayerParameter p = conv_param(ConvCfg{.num_output = 4, .pad_h = 1, .pad_w = 1, .group = 2});
  const auto fresh = make_layer<CUDA, T>(p);
  auto* plain = dynamic_cast<ConvolutionLayer<CUDA, T>*>(fresh.get());
  REQUIRE(plain != nullptr);
  CHECK_FALSE(plain->cudnn_options().find);  // heuristics by default
  ConvolutionCudnnOptions o;
  o.find = true;
  o.workspace_limit = 0;
  o.deterministic = false;  // a limit of 0 may leave only atomics-based backward algorithms
  const auto gpu = pass_with_options<T>(p, o, Shape{3, 4, 8, 7}, 13);
  auto* conv = dynamic_cast<ConvolutionLayer<CUDA, T>*>(gpu.get());
  CHECK(conv->algorithms().forward.time_ms >= 0);
  CHECK(conv->algorithms().workspace() == 0);
  CHECK(conv->workspace_bytes() == 0);
}

TEST_CASE("CUDA Convolution rejects a POSEIDON_CUDNN_FIND that is neither 0 nor 1") {
  const ScopedEnv find("POSEIDON_CUDNN_FIND", "yes");
  auto build = [] { return make_layer<CUDA, float>(conv_param(ConvCfg{})); };
  CHECK_THROWS_WITH_AS(build(), doctest::Contains("POSEIDON_CUDNN_FIND"), Error);
}

TEST_CASE("CUDA Convolution rejects bad parameters with the CPU layer's messages") {
  expect_same_setup_error(conv_param(ConvCfg{.group = 3}), {1, 4, 5, 5});                   // does not divide 4 channels
  expect_same_setup_error(conv_param(ConvCfg{.num_output = 5, .group = 2}), {1, 4, 5, 5});  // does not divide num_output
  expect_same_setup_error(conv_param(ConvCfg{.kh = 7, .kw = 7}), {1, 2, 5, 5});             // larger than the input
  expect_same_setup_error(conv_param(ConvCfg{.dil_h = 3, .dil_w = 3}), {1, 2, 5, 5});  // dilated extent 7 > 5 + 2 * pad
  expect_same_setup_error(conv_param(ConvCfg{}), {2, 3, 5});                           // not 4-d
}

TEST_CASE("CUDA Convolution gradients (double, on the GPU)") {
  SUBCASE("groups, stride, pad, bias") {
    const ConvCfg c{.num_output = 4, .pad_h = 1, .pad_w = 1, .stride_h = 2, .stride_w = 2, .group = 2};
    expect_gpu_gradients<double>(conv_param(c), {random_tensor<double>({2, 4, 5, 5})});
  }
  SUBCASE("dilation, rectangular kernel, no bias") {
    const ConvCfg c{.num_output = 3, .kh = 2, .kw = 3, .pad_w = 1, .dil_h = 2, .dil_w = 2, .bias = false};
    expect_gpu_gradients<double>(conv_param(c), {random_tensor<double>({2, 2, 6, 5})});
  }
  SUBCASE("find mode") {
    const ScopedEnv find("POSEIDON_CUDNN_FIND", "1");
    const ConvCfg c{.num_output = 3, .pad_h = 1, .pad_w = 1, .group = 1};
    expect_gpu_gradients<double>(conv_param(c), {random_tensor<double>({2, 2, 5, 4})});
  }
  SUBCASE("two bottoms") {
    expect_gpu_gradients<double>(conv_param(ConvCfg{.num_output = 2}, 2),
                                 {random_tensor<double>({1, 2, 4, 4}, -1, 1, 1), random_tensor<double>({1, 2, 4, 4}, -1, 1, 2)});
  }
}
