// Data layers on CUDA: each is registered for the GPU and serves, batch after batch, exactly the
// tops the CPU layer serves from the same seed (they are assembled on the host; pinned staging
// and the asynchronous upload must not change a bit), and keeps its position across devices.
#include <doctest/doctest.h>
#include <poseidon/data/cifar10.hpp>
#include <poseidon/data/dummy_data_layer.hpp>
#include <poseidon/data/idx_data_layer.hpp>
#include <poseidon/data/memory_data_layer.hpp>
#include <poseidon/layers/input.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

using namespace poseidon;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const char* name) {
  const fs::path d = fs::temp_directory_path() / detail::concat("poseidon_cuda_data_", name, "_", ::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// An uncompressed IDX file of unsigned bytes.
void write_idx(const fs::path& file, const std::vector<int>& dims, const std::vector<std::uint8_t>& bytes) {
  std::ofstream f(file, std::ios::binary);
  f.put(0).put(0).put(0x08).put(static_cast<char>(dims.size()));
  for (int d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) f.put(static_cast<char>((static_cast<unsigned>(d) >> shift) & 0xff));
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// Runs the layer `p` on both devices for `passes` forwards and requires identical tops.
template <class T>
void same_tops_on_both_devices(const LayerParameter& p, int tops, int passes,
                               void (*prepare)(Layer<CPU, T>&, Layer<CUDA, T>&) = nullptr) {
  REQUIRE(LayerRegistry<CUDA, T>::has(p.type));
  DeviceContext<CPU> cpu_ctx(0, 1234);
  DeviceContext<CUDA> gpu_ctx(0, 1234);
  auto cpu = make_layer<CPU, T>(p);
  auto gpu = make_layer<CUDA, T>(p);
  std::vector<Tensor<CPU, T>> ct(static_cast<std::size_t>(tops));
  std::vector<Tensor<CUDA, T>> gt(static_cast<std::size_t>(tops));
  std::vector<Tensor<CPU, T>*> cv;
  std::vector<Tensor<CUDA, T>*> gv;
  for (int i = 0; i < tops; ++i) {
    cv.push_back(&ct[static_cast<std::size_t>(i)]);
    gv.push_back(&gt[static_cast<std::size_t>(i)]);
  }
  cpu->setup(cpu_ctx, {}, cv);
  gpu->setup(gpu_ctx, {}, gv);
  if (prepare) prepare(*cpu, *gpu);
  for (int pass = 0; pass < passes; ++pass) {
    CAPTURE(pass);
    cpu->forward(cpu_ctx, {}, cv);
    gpu->forward(gpu_ctx, {}, gv);
    for (int i = 0; i < tops; ++i) {
      CAPTURE(i);
      REQUIRE(gt[std::size_t(i)].shape() == ct[std::size_t(i)].shape());
      CHECK(gt[std::size_t(i)].data_to_host() == ct[std::size_t(i)].data_to_host());
    }
  }
  // The position carries across devices: the GPU layer resumes where the CPU one is.
  auto* rc = dynamic_cast<ResumableLayer*>(cpu.get());
  auto* rg = dynamic_cast<ResumableLayer*>(gpu.get());
  if (rc && rg) {
    rg->load_state(rc->save_state());
    cpu->forward(cpu_ctx, {}, cv);
    gpu->forward(gpu_ctx, {}, gv);
    CHECK(gt[0].data_to_host() == ct[0].data_to_host());
  }
}

}  // namespace

TEST_CASE_TEMPLATE("IdxData on CUDA serves the CPU's batches (shuffle, crop, mirror)", T, float, double) {
  const fs::path dir = temp_dir("idx");
  const int n = 13, h = 9, w = 7;
  std::vector<std::uint8_t> pixels(std::size_t(n) * h * w), labels(n);
  for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<std::uint8_t>((i * 37 + 11) % 256);
  for (int i = 0; i < n; ++i) labels[std::size_t(i)] = static_cast<std::uint8_t>(i % 10);
  write_idx(dir / "images", {n, h, w}, pixels);
  write_idx(dir / "labels", {n}, labels);
  LayerParameter p("idx", "IdxData");
  p.with("idx_data_param", Message()
                               .set("images", (dir / "images").string())
                               .set("labels", (dir / "labels").string())
                               .set("batch_size", 5)
                               .set("shuffle", true));
  p.with("transform_param", Message().set("scale", 0.5).set("mirror", true).set("crop_size", 5));
  same_tops_on_both_devices<T>(p, 2, 6);  // 30 samples of 13: wraps and reshuffles twice
  fs::remove_all(dir);
}

TEST_CASE("Cifar10Data on CUDA serves the CPU's batches") {
  const fs::path dir = temp_dir("cifar");
  {
    std::ofstream f(dir / "test_batch.bin", std::ios::binary);
    for (int r = 0; r < 4; ++r) {
      f.put(static_cast<char>(r * 3 % 10));
      for (std::size_t i = 0; i < Cifar10Dataset::image_bytes; ++i) f.put(static_cast<char>((i * 7 + std::size_t(r)) % 251));
    }
  }
  LayerParameter p("cifar", "Cifar10Data");
  p.phase = Phase::test;
  p.with("cifar10_data_param",
         Message().set("source", dir.string()).set("train", false).set("batch_size", 3).set("shuffle", true));
  p.with("transform_param", Message().set("scale", 0.00390625).set("crop_size", 28));
  same_tops_on_both_devices<float>(p, 2, 3);
  fs::remove_all(dir);
}

TEST_CASE("MemoryData on CUDA serves the handed-in arrays through pinned staging") {
  LayerParameter p("mem", "MemoryData");
  p.with("memory_data_param", Message().set("batch_size", 2).set("channels", 1).set("height", 2).set("width", 3));
  same_tops_on_both_devices<double>(p, 2, 5, [](Layer<CPU, double>& c, Layer<CUDA, double>& g) {
    std::vector<double> x(36), y(6);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = 0.25 * double(i) - 3;
    for (std::size_t i = 0; i < y.size(); ++i) y[i] = double(i % 3);
    dynamic_cast<MemoryDataLayer<CPU, double>&>(c).reset(x, y);
    dynamic_cast<MemoryDataLayer<CUDA, double>&>(g).reset(x, y);
  });
}

TEST_CASE("DummyData on CUDA draws the CPU's numbers") {
  LayerParameter p("dummy", "DummyData");
  Message dp;
  dp.add("shape", Message().set("dim", 4).set("dim", 3));
  dp.add("shape", Message().set("dim", 4));
  dp.add("data_filler", Message().set("type", "gaussian").set("std", 0.5));
  dp.add("data_filler", Message().set("type", "constant").set("value", 2));
  p.with("dummy_data_param", dp);
  same_tops_on_both_devices<float>(p, 2, 3);
}

TEST_CASE("Input on CUDA shapes its tops and leaves them to the user") {
  LayerParameter p("input", "Input");
  Message ip;
  ip.add("shape", Message().set("dim", 2).set("dim", 3));
  p.with("input_param", ip);
  REQUIRE(LayerRegistry<CUDA, float>::has("Input"));
  DeviceContext<CUDA> ctx;
  auto layer = make_layer<CUDA, float>(p);
  Tensor<CUDA, float> a, b;
  layer->setup(ctx, {}, {&a, &b});
  CHECK(a.shape() == Shape{2, 3});
  CHECK(b.shape() == Shape{2, 3});
  const std::vector<float> v{1, 2, 3, 4, 5, 6};
  a.copy_data_from_host(v);
  layer->forward(ctx, {}, {&a, &b});
  CHECK(a.data_to_host() == v);  // forward leaves the user's values alone
}

TEST_CASE("BatchStaging<CUDA>: pinned, reused, and the next batch waits for the previous upload") {
  DeviceContext<CUDA> ctx;
  detail::BatchStaging<CUDA, float> staging;
  Tensor<CUDA, float> dst{6};
  auto h = staging.host(6);
  cudaPointerAttributes attr{};
  POSEIDON_CUDA_CHECK(cudaPointerGetAttributes(&attr, h.data()));
  CHECK(attr.type == cudaMemoryTypeHost);
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = float(i) + 0.5f;
  staging.upload(dst, ctx);
  // Overwriting through host() must not reach the batch already uploaded.
  auto h2 = staging.host(6);
  CHECK(h2.data() == h.data());  // same pinned memory, reused
  for (auto& x : h2) x = -1;
  CHECK(dst.data_to_host() == std::vector<float>{0.5f, 1.5f, 2.5f, 3.5f, 4.5f, 5.5f});
  Tensor<CUDA, float> big{7};
  CHECK_THROWS_WITH_AS(staging.upload(big, ctx), doctest::Contains("6 values staged for a blob of shape"), Error);
  const std::vector<float> v{9, 8, 7, 6, 5, 4};
  staging.upload(v, dst, ctx);
  CHECK(dst.data_to_host() == v);
}
