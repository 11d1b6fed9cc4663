#include <doctest/doctest.h>
#include <poseidon.hpp>

#include "cifar10/cifar10_quick.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

using namespace poseidon;
namespace fs = std::filesystem;
namespace cx = cifar10_example;

namespace {

const fs::path example_dir = fs::path(POSEIDON_EXAMPLES_DIR) / "cifar10";

Message example_net() { return read_prototxt(example_dir / "cifar10_quick_train_test.prototxt"); }

/// The example's solver with its net replaced and a short, quiet schedule.
std::unique_ptr<Solver<CPU, float>> short_solver(const Message& net, int test_iter) {
  auto cfg = SolverConfig::from_prototxt(example_dir / "cifar10_quick_solver.prototxt");
  cfg.net.clear();
  cfg.net_param = net;
  cfg.test_iter = {test_iter};
  cfg.test_interval = 1000;
  cfg.test_initialization = false;
  cfg.display = 0;
  cfg.snapshot = 0;
  cfg.snapshot_after_train = false;
  static std::ostringstream quiet;
  return make_solver<CPU, float>(cfg, SolverOptions().log_to(quiet).with_metrics_csv({}),
                                 std::make_shared<DeviceContext<CPU>>(2, 1701));
}

/// Fake CIFAR-10 files whose classes are learnable: class k lights rows 3k..3k+2 of channel k % 3.
std::vector<int> write_fake_cifar10(const fs::path& dir, int records) {
  fs::create_directories(dir);
  std::uint32_t s = 12345;
  auto next = [&s] { return s = s * 1664525u + 1013904223u; };
  std::vector<int> first_labels;
  for (std::string name : {"data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"}) {
    std::ofstream f(dir / (name + ".bin"), std::ios::binary);
    for (int r = 0; r < records; ++r) {
      const int k = static_cast<int>((next() >> 16) % 10);
      if (name == "data_batch_1") first_labels.push_back(k);
      std::vector<char> px(Cifar10Dataset::image_bytes);
      for (auto& p : px) p = static_cast<char>(next() >> 24);
      for (int y = 3 * k; y < 3 * k + 3; ++y)
        for (int x = 0; x < 32; ++x) px[static_cast<std::size_t>((k % 3) * 1024 + y * 32 + x)] = static_cast<char>(255);
      f.put(static_cast<char>(k));
      f.write(px.data(), static_cast<std::streamsize>(px.size()));
    }
  }
  return first_labels;
}

}  // namespace

TEST_CASE("the CIFAR-10 example's prototxt builds Caffe's quick net") {
  const Message net = example_net();
  CHECK(cx::train_batch_size(net) == 100);
  const Message synthetic = cx::with_synthetic_data(net);
  for (const Message* l : synthetic.children("layer")) CHECK(l->get<std::string>("type", "") != "Cifar10Data");

  NetState train_state;
  train_state.phase = Phase::train;
  Net<CPU, float> train(synthetic, train_state);
  // The shapes of Caffe's log for cifar10_quick (its pooling rounds up).
  CHECK(train.blob("data").shape() == Shape{100, 3, 32, 32});
  CHECK(train.blob("label").shape() == Shape{100});
  CHECK(train.blob("pool1").shape() == Shape{100, 32, 16, 16});
  CHECK(train.blob("pool2").shape() == Shape{100, 32, 8, 8});
  CHECK(train.blob("pool3").shape() == Shape{100, 64, 4, 4});
  CHECK(train.blob("ip2").shape() == Shape{100, 10});
  std::size_t weights = 0;
  for (const auto& p : train.learnable_params()) weights += p.tensor->count();
  CHECK(train.learnable_params().size() == 10);
  // conv1 2432 + conv2 25632 + conv3 51264 + ip1 65600 + ip2 650
  CHECK(weights == 145578);
  CHECK(train.output_blob_names() == std::vector<std::string>{"loss"});

  NetState test_state;
  test_state.phase = Phase::test;
  Net<CPU, float> test(synthetic, test_state);
  CHECK(test.output_blob_names() == std::vector<std::string>{"accuracy", "loss"});

  const Message pointed = cx::with_data_dir(net, "/some/where");
  int sources = 0;
  for (const Message* l : pointed.children("layer"))
    if (l->get<std::string>("type", "") == "Cifar10Data") {
      CHECK(l->child("cifar10_data_param").get<std::string>("source", "") == "/some/where");
      CHECK(l->child("cifar10_data_param").count("source") == 1);
      ++sources;
    }
  CHECK(sources == 2);
  CHECK_THROWS_WITH_AS(cx::with_synthetic_data(synthetic), doctest::Contains("no Cifar10Data layer"), Error);
}

TEST_CASE("the CIFAR-10 example trains on synthetic data with its solver settings") {
  auto solver = short_solver(cx::with_synthetic_data(example_net()), 1);
  CHECK(solver->config().base_lr == doctest::Approx(0.001));
  CHECK(solver->config().momentum == doctest::Approx(0.9));
  CHECK(solver->config().weight_decay == doctest::Approx(0.004));
  solver->step(1);
  const float first = solver->smoothed_loss();
  CHECK(first == doctest::Approx(std::log(10.0f)).epsilon(0.01));  // tiny initial weights: uniform scores
  solver->step(11);
  CHECK(solver->smoothed_loss() < 0.5f * first);  // the constant label is learnt
}

TEST_CASE("the CIFAR-10 example reads binary files through its rewritten data layers") {
  const fs::path dir = fs::temp_directory_path() / ("poseidon_cifar_example_" + std::to_string(::getpid()));
  const std::vector<int> labels = write_fake_cifar10(dir, 100);
  CHECK(cx::find_cifar10_dir(dir).value() == dir);
  CHECK(cx::find_cifar10_dir(dir.parent_path()) == std::nullopt);
  fs::rename(dir / "test_batch.bin", dir / "test.bin");
  CHECK_FALSE(cx::find_cifar10_dir(dir).has_value());
  fs::rename(dir / "test.bin", dir / "test_batch.bin");

  auto solver = short_solver(cx::with_data_dir(example_net(), dir), 1);
  solver->step(1);
  const float first = solver->smoothed_loss();
  // Not shuffled (as Caffe's Data layer): the first batch is data_batch_1.bin in file order.
  const auto served = solver->net().blob("label").data_to_host();
  REQUIRE(served.size() == labels.size());
  for (std::size_t i = 0; i < labels.size(); ++i) CHECK(served[i] == static_cast<float>(labels[i]));
  solver->step(29);
  CHECK(solver->smoothed_loss() < 0.5f * first);
  float accuracy = -1;
  for (const auto& out : solver->test(0))
    if (out.name == "accuracy") accuracy = out.value;
  CHECK(accuracy > 0.5f);  // chance is 0.1
  fs::remove_all(dir);
}
