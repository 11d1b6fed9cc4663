// The CIFAR-10 example's options, its choice of data and its training run, a template on the device:
// main.cpp runs it on the CPU, cifar10_cuda.cu (compiled by nvcc when CUDA is built) on a GPU.
#pragma once

#include "cifar10_quick.hpp"

#include <poseidon/core/context.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/data/cifar10.hpp>
#include <poseidon/data/dummy_data_layer.hpp>
#include <poseidon/layers/all.hpp>
#include <poseidon/net/prototxt.hpp>
#include <poseidon/solver/sgd.hpp>
#include <poseidon/solver/solver_config.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace cifar10_example {

inline constexpr int train_images = 50000;

struct Options {
  fs::path solver = POSEIDON_EXAMPLE_DIR "/cifar10_quick_solver.prototxt";
  fs::path data;
  std::optional<int> iters;
  std::optional<double> epochs;
  int threads = 0;
  bool synthetic = false;
  std::string device = "cpu";  // cpu or cuda
  int device_id = 0;
};

inline void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: poseidon_example_cifar10 [--iters N | --epochs N] [--data DIR | --synthetic]\n"
               "                                [--solver FILE] [--threads N] [--device cpu|cuda] [--device-id N]\n"
               "  --iters N      training iterations of batch 100 (default: the solver's max_iter, 4000)\n"
               "  --epochs N     or epochs of the 50000 training images (500 iterations each; fractions allowed)\n"
               "  --data DIR     folder with CIFAR-10's binary version (data_batch_1.bin .. data_batch_5.bin,\n"
               "                 test_batch.bin), or the folder holding its cifar-10-batches-bin/\n"
               "                 (default: $POSEIDON_DATA_DIR, else ./cifar-10-batches-bin; without the files\n"
               "                 the example trains on synthetic data and says so)\n"
               "  --synthetic    train on synthetic DummyData batches (Gaussian images, label 0) even when\n"
               "                 the files are there: for timing, the accuracy means nothing\n"
               "  --solver FILE  solver prototxt (default: the one beside this example's source)\n"
               "  --threads N    CPU threads for BLAS and OpenMP (default: all cores)\n"
               "  --device D     cpu (default) or cuda; cuda needs a binary built with POSEIDON_WITH_CUDA\n"
               "  --device-id N  the GPU to train on with --device cuda (default 0)\n");
}

inline int int_flag(std::string_view flag, const std::string& v, long min) {
  char* end = nullptr;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end || n < min || n > 1L << 30)
    throw pd::Error(std::string(flag) + " needs " + (min > 0 ? "a positive" : "a non-negative") + " integer, got '" +
                    v + "'");
  return static_cast<int>(n);
}

inline Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw pd::Error(std::string(a) + " needs a value (see --help)");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      usage(stdout);
      std::exit(0);
    } else if (a == "--iters" || a == "--iterations") {
      o.iters = int_flag(a, value(), 1);
    } else if (a == "--epochs") {
      const std::string v = value();
      char* end = nullptr;
      const double e = std::strtod(v.c_str(), &end);
      if (v.empty() || *end || !(e > 0) || e > 1e6) throw pd::Error("--epochs must be a positive number, got '" + v + "'");
      o.epochs = e;
    } else if (a == "--data") {
      o.data = value();
      if (o.data.empty()) throw pd::Error("--data needs a folder (see --help)");
    } else if (a == "--synthetic") {
      o.synthetic = true;
    } else if (a == "--solver") {
      o.solver = value();
    } else if (a == "--threads") {
      o.threads = int_flag(a, value(), 1);
    } else if (a == "--device") {
      o.device = value();
      if (o.device != "cpu" && o.device != "cuda") throw pd::Error("--device must be cpu or cuda, got '" + o.device + "'");
    } else if (a == "--device-id") {
      o.device_id = int_flag(a, value(), 0);
    } else {
      throw pd::Error("unknown option '" + std::string(a) + "' (see --help)");
    }
  }
  if (o.iters && o.epochs) throw pd::Error("give --iters or --epochs, not both");
  if (o.synthetic && !o.data.empty()) throw pd::Error("give --data or --synthetic, not both");
  return o;
}

/// Where the CIFAR-10 files are, or why the run is synthetic.
struct DataChoice {
  std::optional<fs::path> dir;
  std::string why_synthetic;
};

inline DataChoice choose_data(const Options& o) {
  if (o.synthetic) return {std::nullopt, "--synthetic"};
  if (!o.data.empty()) {
    if (auto d = find_cifar10_dir(o.data)) return {d, {}};
    throw pd::Error("--data " + o.data.string() +
                    ": no CIFAR-10 binary files there (data_batch_1.bin .. data_batch_5.bin and test_batch.bin, "
                    "directly or in cifar-10-batches-bin/). Get the \"CIFAR-10 binary version\" archive from the "
                    "CIFAR-10 page (https://www.cs.toronto.edu/~kriz/cifar.html) and unpack it, or run with --synthetic.");
  }
  std::string looked;
  if (const char* env = std::getenv("POSEIDON_DATA_DIR"); env && *env) {
    if (auto d = find_cifar10_dir(env)) return {d, {}};
    looked = std::string("$POSEIDON_DATA_DIR (") + env + ") and ";
  }
  if (auto d = find_cifar10_dir(fs::current_path())) return {d, {}};
  return {std::nullopt, "no CIFAR-10 binary files in " + looked + "the working directory; see --help"};
}

/// The run's solver settings: the prototxt's, with the data layers rewritten for `data` (in
/// memory), max_iter from --iters/--epochs, a closing test, and no snapshots. Sets `batch`.
inline pd::SolverConfig solver_config(const Options& o, const DataChoice& data, int& batch) {
  auto cfg = pd::SolverConfig::from_prototxt(o.solver);
  if (!cfg.net_param && cfg.net.empty())
    throw pd::Error(o.solver.string() + ": the example needs one net with TRAIN and TEST phases (net or net_param)");
  const pd::Message net = cfg.net_param ? *cfg.net_param : pd::read_prototxt(cfg.resolve(cfg.net, "net"));
  batch = train_batch_size(net);
  cfg.net_param = data.dir ? with_data_dir(net, *data.dir) : with_synthetic_data(net);
  cfg.net.clear();
  if (o.iters) cfg.max_iter = *o.iters;
  if (o.epochs) cfg.max_iter = std::max(1, static_cast<int>(std::ceil(*o.epochs * train_images / batch)));
  if (cfg.test_interval > cfg.max_iter) cfg.test_interval = cfg.max_iter;  // a short run still ends with a test
  cfg.snapshot = 0;
  cfg.snapshot_after_train = false;  // a demo leaves no files behind
  cfg.device_id = o.device_id;
  return cfg;
}

inline std::uint64_t seed_of(const pd::SolverConfig& cfg) {
  return cfg.random_seed >= 0 ? static_cast<std::uint64_t>(cfg.random_seed) : 1701;
}

/// Trains on device D with the given context; `where` says in words what it runs on.
template <class D>
int train(const pd::SolverConfig& cfg, const DataChoice& data, int batch, std::shared_ptr<pd::DeviceContext<D>> ctx,
          const std::string& where) {
  const double epochs = double(cfg.max_iter) * batch / train_images;
  std::printf("CIFAR-10 quick: %d iterations of batch %d (%.3g epochs), %s\n", cfg.max_iter, batch, epochs,
              where.c_str());
  if (data.dir)
    std::printf("Data: CIFAR-10 binary files in %s\n", data.dir->c_str());
  else
    std::printf("Data: SYNTHETIC (%s): DummyData Gaussian images, every label 0; the loss and accuracy say "
                "nothing about CIFAR-10\n",
                data.why_synthetic.c_str());
  std::fflush(stdout);

  auto solver = pd::make_solver<D, float>(cfg, pd::SolverOptions().with_metrics_csv({}), ctx);
  const auto t0 = std::chrono::steady_clock::now();
  const auto tests = solver->solve();  // empty unless test_interval divides max_iter
  ctx->synchronize();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  double accuracy = -1;
  for (const auto& out : tests.empty() ? solver->test(0) : tests[0])
    if (out.name == "accuracy") accuracy = out.value;
  if (accuracy < 0) throw pd::Error("the test net has no 'accuracy' output");
  std::printf("Final test accuracy: %.2f%% after %d iterations (%.3g epochs) in %.1f s (%.0f training images/s "
              "including tests)%s\n",
              accuracy * 100, cfg.max_iter, epochs, secs, double(cfg.max_iter) * batch / secs,
              data.dir ? "" : " [synthetic data]");
  return 0;
}

/// --device cuda; defined in cifar10_cuda.cu, present only when the binary was built with CUDA.
int train_cuda(const Options& o, const pd::SolverConfig& cfg, const DataChoice& data, int batch);

}  // namespace cifar10_example
