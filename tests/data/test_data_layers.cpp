#include <doctest/doctest.h>
#include <poseidon/data/cifar10.hpp>
#include <poseidon/data/dummy_data_layer.hpp>
#include <poseidon/data/idx_data_layer.hpp>
#include <poseidon/data/memory_data_layer.hpp>
#include <poseidon/data/transform.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>

using namespace poseidon;
namespace fs = std::filesystem;

TEST_CASE("transform_param: scale, mean, centre crop in TEST, mirror and random crop in TRAIN") {
  // 1 channel, 3x4 image with values 0..11
  std::vector<std::uint8_t> img(12);
  for (int i = 0; i < 12; ++i) img[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i);
  Rng rng(1);
  {
    TransformParam p;
    p.scale = 0.5f;
    p.mean_value = {2};
    DataTransformer t(p, Phase::test, "t");
    std::vector<float> out(12);
    t.apply(img.data(), 1, 3, 4, out.data(), rng);
    CHECK(out[0] == -1.0f);
    CHECK(out[11] == 4.5f);
  }
  {
    TransformParam p;
    p.crop_size = 2;
    DataTransformer t(p, Phase::test, "t");
    CHECK(t.output_shape(1, 3, 4) == std::vector<int>{1, 2, 2});
    std::vector<float> out(4);
    t.apply(img.data(), 1, 3, 4, out.data(), rng);
    CHECK(out == std::vector<float>{1, 2, 5, 6});  // centre: y0 = 0, x0 = 1
  }
  {
    TransformParam p;
    p.mirror = true;
    DataTransformer t(p, Phase::train, "t");
    int flipped = 0;
    for (int i = 0; i < 200; ++i) {
      std::vector<float> out(12);
      t.apply(img.data(), 1, 3, 4, out.data(), rng);
      if (out[0] == 3.0f) {
        ++flipped;
        CHECK(out[3] == 0.0f);
      } else {
        CHECK(out[0] == 0.0f);
      }
    }
    CHECK(flipped > 50);
    CHECK(flipped < 150);
  }
  TransformParam big;
  big.crop_size = 5;
  CHECK_THROWS_WITH_AS((void)DataTransformer(big, Phase::test, "layer 'd'").output_shape(1, 3, 4),
                       doctest::Contains("layer 'd': crop_size 5 exceeds the image size 3x4"), Error);
  TransformParam means;
  means.mean_value = {1, 2};
  CHECK_THROWS_WITH_AS((void)DataTransformer(means, Phase::test, "d").output_shape(3, 4, 4),
                       doctest::Contains("2 mean_value entries for 3 channels"), Error);
  Message mf;
  mf.set("mean_file", "mean.binaryproto");
  CHECK_THROWS_WITH_AS(TransformParam::from_message(mf, "x"), doctest::Contains("mean_file (binaryproto) is not supported"), Error);
}

TEST_CASE("DummyData fills its tops; constant once, random every forward") {
  LayerParameter p("dummy", "DummyData");
  Message dp;
  dp.add("shape", Message().set("dim", 2).set("dim", 3));
  dp.add("shape", Message().set("dim", 2));
  dp.add("data_filler", Message().set("type", "gaussian"));
  dp.add("data_filler", Message().set("type", "constant").set("value", 7));
  p.with("dummy_data_param", dp);
  DummyDataLayer<CPU, float> layer(p);
  DeviceContext<CPU> ctx;
  Tensor<CPU, float> a, b;
  layer.setup(ctx, {}, {&a, &b});
  CHECK(a.shape() == Shape{2, 3});
  CHECK(b.data_to_host() == std::vector<float>{7, 7});
  const auto first = a.data_to_host();
  layer.forward(ctx, {}, {&a, &b});
  CHECK(a.data_to_host() != first);
  CHECK(b.data_to_host() == std::vector<float>{7, 7});

  LayerParameter bad("dummy", "DummyData");
  Message three;
  three.add("shape", Message().set("dim", 1));
  three.add("shape", Message().set("dim", 1));
  bad.with("dummy_data_param", three);
  DummyDataLayer<CPU, float> l2(bad);
  Tensor<CPU, float> c, d, e;
  CHECK_THROWS_WITH_AS(l2.setup(ctx, {}, {&c, &d, &e}), doctest::Contains("has 2 shapes for 3 tops"), Error);
}

TEST_CASE("MemoryData serves handed-in arrays batch by batch") {
  LayerParameter p("mem", "MemoryData");
  p.with("memory_data_param", Message().set("batch_size", 2).set("channels", 1).set("height", 1).set("width", 2));
  MemoryDataLayer<CPU, double> layer(p);
  DeviceContext<CPU> ctx;
  Tensor<CPU, double> data, label;
  layer.setup(ctx, {}, {&data, &label});
  CHECK_THROWS_WITH_AS(layer.forward(ctx, {}, {&data, &label}), doctest::Contains("forward before reset()"), Error);
  std::vector<double> x{1, 2, 3, 4, 5, 6, 7, 8}, y{0, 1, 2, 3};
  layer.reset(x, y);
  layer.forward(ctx, {}, {&data, &label});
  CHECK(data.data_to_host() == std::vector<double>{1, 2, 3, 4});
  layer.forward(ctx, {}, {&data, &label});
  CHECK(label.data_to_host() == std::vector<double>{2, 3});
  layer.forward(ctx, {}, {&data, &label});  // wraps around
  CHECK(label.data_to_host() == std::vector<double>{0, 1});
  CHECK_THROWS_WITH_AS(layer.reset(std::vector<double>{1, 2, 3}, std::vector<double>{0, 1}),
                       doctest::Contains("expected 2 values per label"), Error);
  CHECK_THROWS_WITH_AS(layer.reset(std::vector<double>{1, 2}, std::vector<double>{0}),
                       doctest::Contains("not a multiple of batch_size 2"), Error);
}

TEST_CASE("IdxData resolves paths through POSEIDON_DATA_DIR and names what it could not find") {
  LayerParameter p("mnist", "IdxData");
  p.with("idx_data_param", Message().set("images", "no-such-images.gz").set("labels", "no-such-labels.gz").set("batch_size", 4));
  IdxDataLayer<CPU, float> layer(p);
  DeviceContext<CPU> ctx;
  Tensor<CPU, float> data, label;
  ::setenv("POSEIDON_DATA_DIR", "/nonexistent-dir", 1);
  CHECK_THROWS_WITH_AS(layer.setup(ctx, {}, {&data, &label}),
                       doctest::Contains("data file 'no-such-images.gz' not found in POSEIDON_DATA_DIR (/nonexistent-dir)"), Error);
  ::unsetenv("POSEIDON_DATA_DIR");

  const fs::path dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir / "t10k-images-idx3-ubyte.gz")) return;
  ::setenv("POSEIDON_DATA_DIR", dir.c_str(), 1);
  LayerParameter q("mnist", "IdxData");
  q.phase = Phase::test;
  q.with("idx_data_param", Message().set("images", "t10k-images-idx3-ubyte.gz").set("labels", "t10k-labels-idx1-ubyte.gz").set("batch_size", 8));
  q.with("transform_param", Message().set("scale", 0.00390625));
  IdxDataLayer<CPU, float> real(q);
  real.setup(ctx, {}, {&data, &label});
  CHECK(data.shape() == Shape{8, 1, 28, 28});
  real.forward(ctx, {}, {&data, &label});
  CHECK(real.cursor() == 8);
  for (float v : data.data_span()) REQUIRE((v >= 0 && v < 1));
  real.shard(1, 4);
  CHECK(real.size() == 2500);
  ::unsetenv("POSEIDON_DATA_DIR");
}

TEST_CASE("CIFAR-10 binary files are validated and served") {
  const fs::path dir = fs::temp_directory_path() / ("poseidon_cifar_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    std::ofstream f(dir / "test_batch.bin", std::ios::binary);
    for (int r = 0; r < 3; ++r) {
      f.put(static_cast<char>(r + 1));
      for (std::size_t i = 0; i < Cifar10Dataset::image_bytes; ++i) f.put(static_cast<char>(r));
    }
  }
  Cifar10Dataset test(dir, false);
  CHECK(test.size() == 3);
  CHECK(test.label(2) == 3);
  CHECK(test.image(1)[100] == 1);
  CHECK_THROWS_WITH_AS(Cifar10Dataset(dir, true), doctest::Contains("data_batch_1.bin: no such file"), Error);
  {
    std::ofstream f(dir / "test_batch.bin", std::ios::binary | std::ios::app);
    f.put('x');
  }
  CHECK_THROWS_WITH_AS(Cifar10Dataset(dir, false), doctest::Contains("not a multiple of the 3073-byte"), Error);
  fs::remove_all(dir);
}

TEST_CASE("Data layers save and restore their position") {
  LayerParameter p("mem", "MemoryData");
  p.with("memory_data_param", Message().set("batch_size", 1).set("channels", 1).set("height", 1).set("width", 1));
  MemoryDataLayer<CPU, float> a(p), b(p);
  DeviceContext<CPU> ctx;
  Tensor<CPU, float> d, l;
  std::vector<float> x{1, 2, 3}, y{0, 1, 2};
  for (auto* m : {&a, &b}) {
    m->setup(ctx, {}, {&d, &l});
    m->reset(x, y);
  }
  a.forward(ctx, {}, {&d, &l});
  a.forward(ctx, {}, {&d, &l});
  b.load_state(a.save_state());
  a.forward(ctx, {}, {&d, &l});
  const float next_a = d.data()[0];
  b.forward(ctx, {}, {&d, &l});
  CHECK(d.data()[0] == next_a);
  CHECK(next_a == 3.0f);
  CHECK_THROWS_WITH_AS(b.load_state("pos 99"), doctest::Contains("does not fit the 3 samples"), Error);
  CHECK_THROWS_WITH_AS(b.load_state("garbage"), doctest::Contains("no MemoryData position"), Error);

  // IdxData keeps its cursor and shuffled order.
  const fs::path dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir / "t10k-images-idx3-ubyte.gz")) return;
  ::setenv("POSEIDON_DATA_DIR", dir.c_str(), 1);
  LayerParameter q("mnist", "IdxData");
  q.with("idx_data_param", Message().set("images", "t10k-images-idx3-ubyte.gz").set("labels", "t10k-labels-idx1-ubyte.gz").set("batch_size", 5).set("shuffle", true));
  IdxDataLayer<CPU, float> li(q), lj(q);
  DeviceContext<CPU> c1(0, 1), c2(0, 2);  // different seeds: different shuffles until restored
  Tensor<CPU, float> xd, xl, yd, yl;
  li.setup(c1, {}, {&xd, &xl});
  lj.setup(c2, {}, {&yd, &yl});
  li.forward(c1, {}, {&xd, &xl});
  lj.load_state(li.save_state());
  li.forward(c1, {}, {&xd, &xl});
  lj.forward(c2, {}, {&yd, &yl});
  CHECK(yl.data_to_host() == xl.data_to_host());
  CHECK(yd.data_to_host() == xd.data_to_host());
  CHECK_THROWS_WITH_AS(lj.load_state("cursor 1 order 5 1 2"), doctest::Contains("layer 'mnist' (IdxData): snapshot data position is truncated"), Error);
  CHECK_THROWS_WITH_AS(lj.load_state("cursor 1 order 2 1 2"), doctest::Contains("snapshot was taken over 2 samples"), Error);
  ::unsetenv("POSEIDON_DATA_DIR");
}
