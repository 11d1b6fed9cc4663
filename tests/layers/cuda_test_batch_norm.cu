// BatchNorm on CUDA (cuDNN, with Caffe's running sums kept by the layer) against the CPU: batch
// statistics with the running averages (several passes), stored statistics, 2-d to 5-d inputs, in
// place, the own-kernel fallback (one value per channel); and its gradients checked on the GPU.
#include <doctest/doctest.h>
#include <poseidon/layers/batch_norm.hpp>

#include <memory>
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
// Whether the CUDA layer of p runs a bottom of shape s on cuDNN.
template <class T>
bool runs_on_cudnn(const LayerParameter& p, const Shape& s) {
  auto layer = make_layer<CUDA, T>(p);
  GpuCtx ctx;
  Tensor<CUDA, T> x(s), y;
  layer->setup(ctx, {&x}, {&y});
  auto* l = dynamic_cast<BatchNormLayer<CUDA, T>*>(layer.get());
  REQUIRE(l != nullptr);
  return l->uses_cudnn();
}
}  // namespace

TEST_CASE_TEMPLATE("CUDA BatchNorm runs on cuDNN where cuDNN can take it", T, float, double) {
  CHECK(runs_on_cudnn<T>(bn_param(Phase::train), {4, 3, 5, 6}));
  CHECK(runs_on_cudnn<T>(bn_param(Phase::train), {16, 7}));
  CHECK(runs_on_cudnn<T>(bn_param(Phase::test), {4, 3, 5, 6}));
  CHECK(runs_on_cudnn<T>(bn_param(Phase::test), {1, 3}));
  // One value per channel: cuDNN's unbiased variance would divide by m - 1 = 0; the kernels take it.
  CHECK_FALSE(runs_on_cudnn<T>(bn_param(Phase::train), {1, 3}));
  CHECK_FALSE(runs_on_cudnn<T>(bn_param(Phase::train), {0, 3}));
}

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
  SUBCASE("5-d") { both(random_tensor<T>({3, 4, 2, 3, 5}, -2, 2, 41)); }
  SUBCASE("two values per channel") { both(random_tensor<T>({2, 5}, -1, 1, 42)); }
}

TEST_CASE_TEMPLATE("CUDA BatchNorm running statistics follow the CPU over many passes", T, float, double) {
  // Caffe's unnormalised sums: each pass adds the batch mean and the unbiased variance to the
  // f-scaled sums, and the factor grows as f factor + 1; every pass's blobs are compared.
  for (double maf : {0.0, 0.5, 0.999, 1.0}) {
    CAPTURE(maf);
    for (double eps : {1e-5, 1e-3, 0.5}) {
      CAPTURE(eps);
      CompareOptions o;
      o.passes = 5;
      compare_with_cpu<T>(bn_param(Phase::train, std::nullopt, maf, eps), {random_tensor<T>({6, 3, 4, 5}, -2, 4, 43)},
                          bn_eps<T>(), o);
    }
  }
}

TEST_CASE_TEMPLATE("CUDA BatchNorm with stored statistics matches the CPU", T, float, double) {
  auto x = random_tensor<T>({4, 3, 5, 6}, -1, 3, 38);
  for (bool in_place : {false, true}) {
    CAPTURE(in_place);
    CompareOptions o;
    o.in_place = in_place;
    compare_with_cpu<T>(bn_param(Phase::test), {x}, bn_eps<T>(), o, set_stats<T>);
    compare_with_cpu<T>(bn_param(Phase::train, true), {x}, bn_eps<T>(), o, set_stats<T>);
    compare_with_cpu<T>(bn_param(Phase::test, std::nullopt, 0.999, 1e-2), {x}, bn_eps<T>(), o, set_stats<T>);
    compare_with_cpu<T>(bn_param(Phase::test), {random_tensor<T>({5, 3}, -2, 2, 44)}, bn_eps<T>(), o, set_stats<T>);
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
  SUBCASE("batch statistics, 2-d, larger eps") {
    expect_gpu_gradients<double>(bn_param(Phase::train, false, 0.9, 1e-2), {random_tensor<double>({6, 3}, -1, 2, 45)},
                                 no_params);
  }
}
