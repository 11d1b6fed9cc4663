// SoftmaxWithLoss (probabilities by cuDNN) and EuclideanLoss on CUDA against the CPU (normalisations,
// ignore_label, loss weights, the probability top, several axes), label validation on the device,
// and gradients checked on the GPU.
#include <doctest/doctest.h>
#include <poseidon/core/error.hpp>
#include <poseidon/layers/euclidean_loss.hpp>
#include <poseidon/layers/softmax_loss.hpp>

#include <optional>
#include <type_traits>
#include <vector>

#include "support/layer_params.hpp"
#include "support/cuda_layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {
LayerParameter softmax_loss_param(Message loss_param = {}, int axis = 1, bool prob_top = false,
                                  std::vector<float> loss_weight = {}) {
  LayerParameter p("loss", "SoftmaxWithLoss");
  p.bottom = {"score", "label"};
  p.top = {"loss"};
  if (prob_top) p.top.push_back("prob");
  p.loss_weight = std::move(loss_weight);
  p.with("softmax_param", Message().set("axis", axis));
  if (!loss_param.empty()) p.with("loss_param", std::move(loss_param));
  return p;
}
/// Integer labels in [0, classes), every `every`-th one replaced by `ignore` when given.
template <class T>
Tensor<CPU, T> labels(const Shape& s, int classes, std::optional<int> ignore = {}, int every = 5,
                      std::uint64_t seed = 3) {
  Tensor<CPU, T> t(s);
  Rng r(seed);
  for (std::size_t i = 0; i < t.count(); ++i)
    t.data()[i] = static_cast<T>(ignore && i % static_cast<std::size_t>(every) == 0
                                     ? *ignore
                                     : static_cast<int>(r.uniform_index(static_cast<std::uint64_t>(classes))));
  return t;
}
// The loss sums logs in double on both devices but in different orders; probabilities as Softmax.
template <class T>
double loss_eps() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-12;
}
}  // namespace

TEST_CASE_TEMPLATE("CUDA SoftmaxWithLoss matches the CPU", T, float, double) {
  CHECK(LayerRegistry<CUDA, T>::has("SoftmaxWithLoss"));
  SUBCASE("classes on axis 1, VALID") {
    compare_with_cpu<T>(softmax_loss_param(), {random_tensor<T>({16, 10}, -3, 3), labels<T>({16}, 10)}, loss_eps<T>());
  }
  SUBCASE("spatial, ignore_label, every normalisation") {
    for (const char* norm : {"FULL", "VALID", "BATCH_SIZE", "NONE"}) {
      CAPTURE(norm);
      Message m;
      m.set("ignore_label", 255).set_enum("normalization", norm);
      compare_with_cpu<T>(softmax_loss_param(m), {random_tensor<T>({3, 5, 4, 6}, -3, 3), labels<T>({3, 4, 6}, 5, 255)},
                          loss_eps<T>());
    }
  }
  SUBCASE("probability top and a loss weight") {
    compare_with_cpu<T>(softmax_loss_param({}, 1, true, {2.5f, 0.0f}),
                        {random_tensor<T>({6, 7, 3}, -4, 4), labels<T>({6, 3}, 7)}, loss_eps<T>());
  }
  SUBCASE("last axis") {
    compare_with_cpu<T>(softmax_loss_param({}, -1), {random_tensor<T>({4, 3, 9}, -3, 3), labels<T>({4, 3}, 9)},
                        loss_eps<T>());
  }
  SUBCASE("axis 2 of 4, with the probability top") {
    compare_with_cpu<T>(softmax_loss_param({}, 2, true), {random_tensor<T>({2, 3, 6, 4}, -3, 3), labels<T>({2, 3, 4}, 6)},
                        loss_eps<T>());
  }
  SUBCASE("axis 0") {
    compare_with_cpu<T>(softmax_loss_param({}, 0), {random_tensor<T>({5, 3, 2}, -3, 3), labels<T>({3, 2}, 5)},
                        loss_eps<T>());
  }
  SUBCASE("large logits do not overflow") {
    compare_with_cpu<T>(softmax_loss_param(), {random_tensor<T>({8, 10}, -500, 500), labels<T>({8}, 10)},
                        loss_eps<T>());
  }
  SUBCASE("every label ignored: loss 0, not NaN") {
    Message m;
    m.set("ignore_label", 1);
    compare_with_cpu<T>(softmax_loss_param(m), {random_tensor<T>({4, 3}), labels<T>({4}, 3, 1, 1)}, loss_eps<T>());
  }
}

TEST_CASE_TEMPLATE("CUDA SoftmaxWithLoss rejects a bad label found on the device", T, float, double) {
  for (double bad : {-1.0, 5.0, 2.5}) {
    CAPTURE(bad);
    auto score = to_gpu(random_tensor<T>({6, 5}));
    auto lab = labels<T>({6}, 5);
    lab.data()[4] = static_cast<T>(bad);
    lab.data()[5] = static_cast<T>(bad);
    auto glab = to_gpu(lab);
    Tensor<CUDA, T> loss;
    auto layer = make_layer<CUDA, T>(softmax_loss_param());
    GpuCtx ctx;
    layer->setup(ctx, {&score, &glab}, {&loss});
    CHECK_THROWS_WITH_AS(layer->forward(ctx, {&score, &glab}, {&loss}), doctest::Contains("at index 4"), Error);
  }
}

TEST_CASE_TEMPLATE("CUDA EuclideanLoss matches the CPU", T, float, double) {
  CHECK(LayerRegistry<CUDA, T>::has("EuclideanLoss"));
  compare_with_cpu<T>(euclidean_param(), {random_tensor<T>({8, 3, 5}, -1, 1, 1), random_tensor<T>({8, 3, 5}, -1, 1, 2)},
                      loss_eps<T>());
  compare_with_cpu<T>(euclidean_param({0.5f}), {random_tensor<T>({5, 7}, -2, 2, 3), random_tensor<T>({5, 7}, -2, 2, 4)},
                      loss_eps<T>());
}

TEST_CASE_TEMPLATE("CUDA SoftmaxWithLoss takes its probabilities from cuDNN", T, float, double) {
  auto score = to_gpu(random_tensor<T>({6, 5, 2}));
  auto lab = to_gpu(labels<T>({6, 2}, 5));
  Tensor<CUDA, T> loss;
  auto layer = make_layer<CUDA, T>(softmax_loss_param());
  GpuCtx ctx;
  layer->setup(ctx, {&score, &lab}, {&loss});
  auto* l = dynamic_cast<SoftmaxWithLossLayer<CUDA, T>*>(layer.get());
  REQUIRE(l != nullptr);
  CHECK(l->uses_cudnn());
  layer->forward(ctx, {&score, &lab}, {&loss});
  // Every distribution of the probabilities sums to 1.
  const std::vector<T> p = l->prob().data_to_host();
  for (std::size_t n = 0; n < 6; ++n)
    for (std::size_t k = 0; k < 2; ++k) {
      double sum = 0;
      for (std::size_t c = 0; c < 5; ++c) sum += static_cast<double>(p[(n * 5 + c) * 2 + k]);
      CHECK(sum == doctest::Approx(1.0).epsilon(1e-5));
    }
}

TEST_CASE("CUDA loss gradients (double, on the GPU)") {
  SUBCASE("SoftmaxWithLoss") {
    Message m;
    m.set("ignore_label", 4);
    expect_gpu_gradients<double>(softmax_loss_param(m),
                                 {random_tensor<double>({3, 5, 2}, -2, 2), labels<double>({3, 2}, 5, 4, 4)},
                                 [](auto& o) { o.bottoms = {0}; });
  }
  SUBCASE("SoftmaxWithLoss over axis 2") {
    expect_gpu_gradients<double>(softmax_loss_param({}, 2),
                                 {random_tensor<double>({2, 2, 4, 3}, -2, 2), labels<double>({2, 2, 3}, 4)},
                                 [](auto& o) { o.bottoms = {0}; });
  }
  SUBCASE("EuclideanLoss") {
    expect_gpu_gradients<double>(euclidean_param(),
                                 {random_tensor<double>({4, 6}, -1, 1, 5), random_tensor<double>({4, 6}, -1, 1, 6)});
  }
}
