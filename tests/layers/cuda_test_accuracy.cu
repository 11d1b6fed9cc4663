// Accuracy on CUDA against the CPU (top-k, axis, ignore_label, per-class top) and label
// validation on the device.
#include <doctest/doctest.h>
#include <poseidon/core/error.hpp>
#include <poseidon/layers/accuracy.hpp>

#include <optional>

#include "support/cuda_layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {
LayerParameter accuracy_param(int top_k = 1, int axis = 1, std::optional<int> ignore = {}, bool per_class = false) {
  LayerParameter p("acc", "Accuracy");
  p.bottom = {"score", "label"};
  p.top = {"accuracy"};
  if (per_class) p.top.push_back("per_class");
  Message m;
  m.set("top_k", top_k).set("axis", axis);
  if (ignore) m.set("ignore_label", *ignore);
  return p.with("accuracy_param", m);
}
template <class T>
Tensor<CPU, T> labels(const Shape& s, int classes, std::optional<int> ignore = {}, std::uint64_t seed = 9) {
  Tensor<CPU, T> t(s);
  Rng r(seed);
  for (std::size_t i = 0; i < t.count(); ++i)
    t.data()[i] = static_cast<T>(
        ignore && i % 4 == 0 ? *ignore : static_cast<int>(r.uniform_index(static_cast<std::uint64_t>(classes))));
  return t;
}
}  // namespace

TEST_CASE_TEMPLATE("CUDA Accuracy matches the CPU exactly", T, float, double) {
  CHECK(LayerRegistry<CUDA, T>::has("Accuracy"));
  // Integer counts and one division: the same bits on both devices.
  for (int k : {1, 3}) {
    CAPTURE(k);
    compare_with_cpu<T>(accuracy_param(k), {random_tensor<T>({200, 10}), labels<T>({200}, 10)}, 0.0);
    compare_with_cpu<T>(accuracy_param(k, 1, -1, true), {random_tensor<T>({4, 6, 3, 5}), labels<T>({4, 3, 5}, 6, -1)},
                        0.0);
    compare_with_cpu<T>(accuracy_param(k, -1, {}, true), {random_tensor<T>({7, 2, 8}), labels<T>({7, 2}, 8)}, 0.0);
  }
  // Ties with the true class rank it behind them, as on the CPU: scores of few distinct values.
  compare_with_cpu<T>(accuracy_param(2, 1, {}, true), {random_tensor<T>({50, 5}, 0, 1, 77), labels<T>({50}, 5)}, 0.0);
  auto tied = random_tensor<T>({50, 5});
  for (std::size_t i = 0; i < tied.count(); ++i) tied.data()[i] = static_cast<T>(static_cast<int>(tied.data()[i] * 2));
  compare_with_cpu<T>(accuracy_param(2, 1, {}, true), {tied, labels<T>({50}, 5)}, 0.0);
}

TEST_CASE_TEMPLATE("CUDA Accuracy rejects a bad label found on the device", T, float, double) {
  auto score = to_gpu(random_tensor<T>({6, 5}));
  auto lab = labels<T>({6}, 5);
  lab.data()[3] = T(7);
  auto glab = to_gpu(lab);
  Tensor<CUDA, T> acc;
  auto layer = make_layer<CUDA, T>(accuracy_param());
  GpuCtx ctx;
  layer->setup(ctx, {&score, &glab}, {&acc});
  CHECK_THROWS_WITH_AS(layer->forward(ctx, {&score, &glab}, {&acc}), doctest::Contains("at index 3"), Error);
}
