// Eltwise on CUDA against the CPU (PROD with both gradients, SUM with coefficients, MAX with its
// tie rules over two to four bottoms), and gradients checked on the GPU.
#include <doctest/doctest.h>
#include <poseidon/layers/eltwise.hpp>

#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "support/layer_params.hpp"
#include "support/cuda_layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {
template <class T>
std::vector<Tensor<CPU, T>> inputs(int n, double lo = -2, double hi = 2) {
  std::vector<Tensor<CPU, T>> v;
  for (int i = 0; i < n; ++i) v.push_back(random_tensor<T>({3, 4, 5, 6}, lo, hi, 50 + static_cast<std::uint64_t>(i)));
  return v;
}
// PROD and SUM are math:: calls: cuBLAS axpy and nvcc's fused multiply-adds round a little differently.
template <class T>
double eltwise_eps() {
  return std::is_same_v<T, float> ? 1e-6 : 1e-14;
}
}  // namespace

TEST_CASE_TEMPLATE("CUDA Eltwise matches the CPU", T, float, double) {
  CHECK(LayerRegistry<CUDA, T>::has("Eltwise"));
  for (int n : {2, 3, 4}) {
    CAPTURE(n);
    compare_with_cpu<T>(eltwise_param("PROD", {}, n), inputs<T>(n), eltwise_eps<T>());
    compare_with_cpu<T>(eltwise_param("PROD", {}, n, false), inputs<T>(n, 0.5, 2), eltwise_eps<T>());
    compare_with_cpu<T>(eltwise_param("SUM", {}, n), inputs<T>(n), eltwise_eps<T>());
    std::vector<double> coeff{1.5, -0.5, 2, 0.25};
    coeff.resize(static_cast<std::size_t>(n));
    compare_with_cpu<T>(eltwise_param("SUM", coeff, n), inputs<T>(n), eltwise_eps<T>());
    // MAX only selects: identical bits.
    compare_with_cpu<T>(eltwise_param("MAX", {}, n), inputs<T>(n), 0.0);
  }
  // Ties everywhere: the winner (and so the gradient's route) must follow the CPU's rule.
  auto tied = inputs<T>(3, 0, 3);
  for (auto& t : tied)
    for (std::size_t i = 0; i < t.count(); ++i) t.data()[i] = static_cast<T>(static_cast<int>(t.data()[i]));
  compare_with_cpu<T>(eltwise_param("MAX", {}, 3), tied, 0.0);
}

TEST_CASE("CUDA Eltwise gradients (double, on the GPU)") {
  SUBCASE("PROD") { expect_gpu_gradients<double>(eltwise_param("PROD", {}, 3), inputs<double>(3)); }
  SUBCASE("SUM with coeff") { expect_gpu_gradients<double>(eltwise_param("SUM", {2, -1}, 2), inputs<double>(2)); }
  SUBCASE("MAX") { expect_gpu_gradients<double>(eltwise_param("MAX", {}, 3), inputs<double>(3)); }
}
