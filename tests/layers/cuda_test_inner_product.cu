// InnerProduct on CUDA (cuBLAS through math::) against the CPU, and its gradients checked on the GPU.
#include <doctest/doctest.h>
#include <poseidon/layers/inner_product.hpp>

#include <type_traits>

#include "support/layer_params.hpp"
#include "support/cuda_layer_testing.hpp"

using namespace poseidon;
using namespace poseidon::testing;

namespace {
// cuBLAS and OpenBLAS sum the K products in different orders: float agrees to ~1e-6 per term.
template <class T>
double ip_eps() {
  return std::is_same_v<T, float> ? 1e-4 : 1e-12;
}
}  // namespace

TEST_CASE_TEMPLATE("CUDA InnerProduct matches the CPU", T, float, double) {
  CHECK(LayerRegistry<CUDA, T>::has("InnerProduct"));
  SUBCASE("with bias") { compare_with_cpu<T>(ip_param(13), {random_tensor<T>({7, 3, 4, 5})}, ip_eps<T>()); }
  SUBCASE("without bias") { compare_with_cpu<T>(ip_param(9, false), {random_tensor<T>({6, 20})}, ip_eps<T>()); }
  SUBCASE("transposed weights") {
    compare_with_cpu<T>(ip_param(11, true, true), {random_tensor<T>({5, 2, 8})}, ip_eps<T>());
  }
  SUBCASE("axis 2") { compare_with_cpu<T>(ip_param(4, true, false, 2), {random_tensor<T>({3, 5, 6})}, ip_eps<T>()); }
  SUBCASE("large enough for several cuBLAS tiles") {
    compare_with_cpu<T>(ip_param(300), {random_tensor<T>({64, 500})}, ip_eps<T>());
  }
}

TEST_CASE("CUDA InnerProduct gradients (double, on the GPU)") {
  SUBCASE("plain") { expect_gpu_gradients<double>(ip_param(5), {random_tensor<double>({3, 4, 2})}); }
  SUBCASE("transposed, no bias") {
    expect_gpu_gradients<double>(ip_param(4, false, true), {random_tensor<double>({2, 6})});
  }
}
