// BatchNorm on CUDA against the CPU: batch statistics with the running averages (several passes),
// stored statistics, 2-d to 4-d inputs, in place; and its gradients checked on the GPU.
#include <doctest/doctest.h>
#include <poseidon/layers/batch_norm.hpp>

#include <optional>
#include <type_traits>
#include <vector>

#include "support/layer_params.hpp"
#include "support/cuda_layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {
// Statistics are summed in double on both devices (in different orders) and rounded once to T;
// normalised values reach a few units and their gradients carry 1 / std, so float keeps ~1e-5.
template <class T>
double bn_eps() {
  return std::is_same_v<T, float> ? 1e-4 : 1e-10;
}
// Stored statistics as a trained net would have them: mean sums, positive variance sums, factor.
template <class T>
void set_stats(Layer<CPU, T>& l) {
  auto& b = l.blobs();
  const int c = static_cast<int>(b[0]->count());
  b[0]->copy_data_from_host(random_tensor<T>({c}, -1, 1, 31).data_span());
  b[1]->copy_data_from_host(random_tensor<T>({c}, 0.5, 3, 32).data_span());
  b[2]->copy_data_from_host(std::vector<T>{T(1.7)});
}
}  // namespace

TEST_CASE_TEMPLATE("CUDA BatchNorm with batch statistics matches the CPU, running averages included", T, float,
                   double) {
  CHECK(LayerRegistry<CUDA, T>::has("BatchNorm"));
  auto both = [](const Tensor<CPU, T>& x) {
    for (bool in_place : {false, true}) {
      CAPTURE(in_place);
      CompareOptions o;
      o.in_place = in_place;
      o.passes = 3;
      compare_with_cpu<T>(bn_param(Phase::train, std::nullopt, 0.9), {x}, bn_eps<T>(), o);
    }
  };
  SUBCASE("4-d") { both(random_tensor<T>({4, 3, 5, 6}, -1, 3, 33)); }
  SUBCASE("2-d") { both(random_tensor<T>({16, 7}, -2, 2, 34)); }
  SUBCASE("3-d") { both(random_tensor<T>({5, 4, 9}, -2, 2, 35)); }
  SUBCASE("large channels") { both(random_tensor<T>({8, 2, 64, 64}, -1, 5, 36)); }
  SUBCASE("one value per channel") { both(random_tensor<T>({1, 3}, -1, 1, 37)); }
}

TEST_CASE_TEMPLATE("CUDA BatchNorm with stored statistics matches the CPU", T, float, double) {
  auto x = random_tensor<T>({4, 3, 5, 6}, -1, 3, 38);
  for (bool in_place : {false, true}) {
    CAPTURE(in_place);
    CompareOptions o;
    o.in_place = in_place;
    compare_with_cpu<T>(bn_param(Phase::test), {x}, bn_eps<T>(), o, set_stats<T>);
    compare_with_cpu<T>(bn_param(Phase::train, true), {x}, bn_eps<T>(), o, set_stats<T>);
    // No statistics seen yet (factor 0): mean and variance read as 0, on both devices.
    compare_with_cpu<T>(bn_param(Phase::test), {x}, bn_eps<T>(), o);
  }
}

TEST_CASE("CUDA BatchNorm gradients (double, on the GPU)") {
  auto no_params = [](GradientCheckOptions& o) { o.check_params = false; };
  SUBCASE("batch statistics") {
    expect_gpu_gradients<double>(bn_param(Phase::train, false), {random_tensor<double>({3, 2, 3, 4}, -1, 2, 39)},
                                 no_params);
  }
  SUBCASE("stored statistics") {
    expect_gpu_gradients<double>(bn_param(Phase::test), {random_tensor<double>({3, 2, 4}, -1, 2, 40)}, no_params);
  }
}
