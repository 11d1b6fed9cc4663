// Trains BVLC AlexNet (grouped convolutions, LRN, dropout) on synthetic ImageNet-shaped batches,
// or on a user's IDX files, and prints images/s; shows how to feed a net from your own source.
#include <poseidon.hpp>
#include <poseidon/solver/sgd.hpp>
#include <poseidon/solver/solver_config.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace pd = poseidon;

namespace {

struct Options {
  std::string net = POSEIDON_EXAMPLE_DIR "/alexnet.prototxt";
  int batch = 32;
  int iterations = 10;
  int threads = 0;
  std::string images, labels;
};

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: poseidon_example_alexnet [--batch N] [--iterations N] [--threads N]\n"
               "                                [--images FILE --labels FILE] [--net FILE]\n"
               "  --batch N        images per iteration (default 32)\n"
               "  --iterations N   training iterations to time after 2 warm-up ones (default 10)\n"
               "  --threads N      CPU threads (default: all cores)\n"
               "  --images/--labels  IDX files (plain or .gz) of 3x227x227 images and their labels;\n"
               "                     without them the batches are synthetic (ImageNet-shaped noise)\n");
}

int positive(std::string_view flag, const char* v) {
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*end || n <= 0 || n > 1 << 20) throw pd::Error(std::string(flag) + " needs a positive integer, got '" + v + "'");
  return static_cast<int>(n);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&] {
      if (i + 1 >= argc) throw pd::Error(std::string(a) + " needs a value (see --help)");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      usage(stdout);
      std::exit(0);
    } else if (a == "--batch") {
      o.batch = positive(a, value());
    } else if (a == "--iterations") {
      o.iterations = positive(a, value());
    } else if (a == "--threads") {
      o.threads = positive(a, value());
    } else if (a == "--images") {
      o.images = value();
    } else if (a == "--labels") {
      o.labels = value();
    } else if (a == "--net") {
      o.net = value();
    } else {
      throw pd::Error("unknown option '" + std::string(a) + "' (see --help)");
    }
  }
  if (o.images.empty() != o.labels.empty()) throw pd::Error("--images and --labels go together");
  return o;
}

/// A data source is anything that fills a batch: here, synthetic noise or IDX files. A user's
/// own source (a database, a decoder) plugs in the same way.
using DataSource = std::function<void(pd::Tensor<pd::CPU, float>& data, pd::Tensor<pd::CPU, float>& labels)>;

DataSource synthetic(std::uint64_t seed) {
  auto rng = std::make_shared<pd::Rng>(seed);
  return [rng](pd::Tensor<pd::CPU, float>& data, pd::Tensor<pd::CPU, float>& labels) {
    for (auto& x : data.data_span()) x = rng->gaussian(0.0f, 1.0f);
    for (auto& l : labels.data_span()) l = static_cast<float>(rng->uniform_index(1000));
  };
}

DataSource idx_files(const std::string& images, const std::string& labels) {
  auto ds = std::make_shared<pd::IdxDataset>(images, labels, 1.0f / 256);
  if (ds->image_shape() != std::vector<int>{3, 227, 227})
    throw pd::Error(images + ": AlexNet needs 3x227x227 images; this file holds " +
                    std::to_string(ds->image_shape()[0]) + "x" + std::to_string(ds->image_shape()[1]) + "x" +
                    std::to_string(ds->image_shape()[2]));
  auto next = std::make_shared<std::size_t>(0);
  return [ds, next](pd::Tensor<pd::CPU, float>& data, pd::Tensor<pd::CPU, float>& labels) {
    pd::Tensor<pd::CPU, float> d, l;
    ds->batch(*next, data.shape(0), d, l);
    *next += static_cast<std::size_t>(data.shape(0));
    data.copy_from(d);
    labels.copy_from(l);
  };
}

}  // namespace

int main(int argc, char** argv) try {
  const Options o = parse(argc, argv);
  pd::Message solver;
  solver.set("net", o.net).set("base_lr", 0.01).set("momentum", 0.9).set("weight_decay", 0.0005);
  solver.set("lr_policy", "fixed").set("max_iter", o.iterations + 2).set("display", 1);
  auto cfg = pd::SolverConfig::from_message(solver);
  auto ctx = std::make_shared<pd::DeviceContext<pd::CPU>>(o.threads);
  auto s = pd::make_solver<pd::CPU, float>(cfg, pd::SolverOptions().with_metrics_csv({}), ctx);

  auto& net = s->net();
  auto& data = net.blob("data");
  auto& labels = net.blob("label");
  data.reshape({o.batch, 3, 227, 227});
  labels.reshape({o.batch});
  const DataSource source = o.images.empty() ? synthetic(7) : idx_files(o.images, o.labels);
  std::printf("AlexNet, batch %d, %d threads, %s data\n", o.batch, ctx->threads(),
              o.images.empty() ? "synthetic" : "IDX");

  double busy = 0;
  for (int it = 0; it < o.iterations + 2; ++it) {
    source(data, labels);  // filling the batch is not part of the timed step
    const auto t0 = std::chrono::steady_clock::now();
    s->step(1);
    if (it >= 2) busy += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  std::printf("%.1f images/s (%.1f ms per iteration of %d images, %d iterations after 2 warm-up)\n",
              o.iterations * o.batch / busy, busy / o.iterations * 1e3, o.batch, o.iterations);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "poseidon_example_alexnet: %s\n", e.what());
  return 1;
}
