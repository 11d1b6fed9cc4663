// Tensor<CUDA, T>: device allocation, explicit host/device copies, views and the context.
#include <doctest/doctest.h>
#include <poseidon/core/context.hpp>
#include <poseidon/core/tensor.hpp>

#include <numeric>
#include <vector>

using namespace poseidon;

TEST_CASE_TEMPLATE("Tensor<CUDA> round-trips through the host", T, float, double) {
  DeviceContext<CUDA> ctx;
  Tensor<CUDA, T> t{2, 3, 4};
  CHECK(t.count() == 24);
  CHECK(t.data_to_host() == std::vector<T>(24, T(0)));  // zeroed on allocation
  std::vector<T> v(24);
  std::iota(v.begin(), v.end(), T(1));
  t.copy_data_from_host(v);
  CHECK(t.data_to_host() == v);
  t.copy_diff_from_host(v);
  t.zero_data();
  CHECK(t.data_to_host() == std::vector<T>(24, T(0)));
  CHECK(t.diff_to_host() == v);
}

TEST_CASE("Tensor copies across devices, clones and views on the GPU") {
  Tensor<CPU, float> host{3, 2};
  for (std::size_t i = 0; i < host.count(); ++i) host.data()[i] = float(i) * 0.5f;
  Tensor<CUDA, float> dev;
  dev.copy_from(host);
  CHECK(dev.shape() == host.shape());
  Tensor<CUDA, float> dev2 = dev.clone();
  CHECK(dev2.data() != dev.data());
  Tensor<CPU, float> back;
  back.copy_from(dev2);
  CHECK(back.data_to_host() == host.data_to_host());
  auto view = dev.view(Shape{6});
  CHECK(view.data() == dev.data());
  const float* p = dev.data();
  dev.reshape({2, 3});
  CHECK(dev.data() == p);  // fits: no reallocation
}

TEST_CASE("DeviceContext<CUDA> rejects a device that does not exist") {
  CHECK_THROWS_WITH_AS(DeviceContext<CUDA>(cuda_device_count() + 3), doctest::Contains("CUDA device(s) are visible"), Error);
}

TEST_CASE("an impossible allocation is a clear error, and the device stays usable") {
  CHECK_THROWS_WITH_AS((Tensor<CUDA, float>{1 << 30, 1 << 1}), doctest::Contains("more than INT_MAX"), Error);
  CHECK_THROWS_WITH_AS(Buffer<CUDA>(std::size_t(1) << 50), doctest::Contains("CUDA out of memory"), Error);
  Tensor<CUDA, float> ok{4};
  CHECK(ok.data_to_host().size() == 4);
}
