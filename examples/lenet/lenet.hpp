// The LeNet example's options and its training loop, a template on the device: main.cpp runs it
// on the CPU, lenet_cuda.cu (compiled by nvcc when CUDA is built) instantiates it for the GPU.
#pragma once

#include <poseidon/core/context.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/data/idx_data_layer.hpp>
#include <poseidon/layers/all.hpp>
#include <poseidon/solver/sgd.hpp>
#include <poseidon/solver/solver_config.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace lenet_example {

namespace pd = poseidon;
namespace fs = std::filesystem;

struct Options {
  fs::path solver = POSEIDON_EXAMPLE_DIR "/lenet_solver.prototxt";
  fs::path data;
  double epochs = 10;
  int threads = 0;
  std::string device = "cpu";  // cpu or cuda
  int device_id = 0;
};

inline void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: poseidon_example_lenet [--epochs N] [--data DIR] [--solver FILE] [--threads N]\n"
               "                              [--device cpu|cuda] [--device-id N]\n"
               "  --epochs N     epochs of the 60000 training images (default 10; fractions allowed)\n"
               "  --data DIR     folder with Fashion-MNIST's four IDX files, plain or .gz\n"
               "                 (default: $POSEIDON_DATA_DIR, else /usr/share/datasets/fashion-mnist,\n"
               "                 which Debian's dataset-fashion-mnist package installs)\n"
               "  --solver FILE  solver prototxt (default: the one beside this example's source)\n"
               "  --threads N    CPU threads for BLAS and OpenMP (default: all cores)\n"
               "  --device D     cpu (default) or cuda; cuda needs a binary built with POSEIDON_WITH_CUDA\n"
               "  --device-id N  the GPU to train on with --device cuda (default 0)\n");
}

inline int non_negative(std::string_view flag, const std::string& v) {
  char* end = nullptr;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end || n < 0 || n > 1 << 20)
    throw pd::Error(std::string(flag) + " needs a non-negative integer, got '" + v + "'");
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
    } else if (a == "--epochs") {
      const std::string v = value();
      char* end = nullptr;
      o.epochs = std::strtod(v.c_str(), &end);
      if (*end || !(o.epochs > 0)) throw pd::Error("--epochs must be a positive number, got '" + v + "'");
    } else if (a == "--data") {
      o.data = value();
    } else if (a == "--solver") {
      o.solver = value();
    } else if (a == "--threads") {
      const std::string v = value();
      o.threads = std::atoi(v.c_str());
      if (o.threads <= 0) throw pd::Error("--threads must be a positive integer, got '" + v + "'");
    } else if (a == "--device") {
      o.device = value();
      if (o.device != "cpu" && o.device != "cuda")
        throw pd::Error("--device must be cpu or cuda, got '" + o.device + "'");
    } else if (a == "--device-id") {
      o.device_id = non_negative(a, value());
    } else {
      throw pd::Error("unknown option '" + std::string(a) + "' (see --help)");
    }
  }
  if (o.data.empty()) {
    const char* env = std::getenv("POSEIDON_DATA_DIR");
    o.data = env && *env ? fs::path(env) : fs::path("/usr/share/datasets/fashion-mnist");
  }
  return o;
}

inline void check_data(const fs::path& dir) {
  for (const char* f : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                        "t10k-labels-idx1-ubyte"})
    if (!fs::exists(dir / (std::string(f) + ".gz")) && !fs::exists(dir / f))
      throw pd::Error("Fashion-MNIST file " + (dir / f).string() +
                      "[.gz] not found. Install Debian's dataset-fashion-mnist (scripts/install-deps does), or "
                      "point --data or POSEIDON_DATA_DIR at a folder holding the four IDX files.");
}

/// The solver settings of the run: the prototxt's, with max_iter from --epochs and one test per epoch.
inline pd::SolverConfig solver_config(const Options& o) {
  auto cfg = pd::SolverConfig::from_prototxt(o.solver);
  constexpr int train_images = 60000, batch = 64;
  const int iters_per_epoch = (train_images + batch - 1) / batch;
  cfg.max_iter = static_cast<int>(std::ceil(o.epochs * train_images / batch));
  cfg.test_interval = std::min(iters_per_epoch, cfg.max_iter);  // test once per epoch
  cfg.snapshot_after_train = false;  // a demo leaves no files behind
  cfg.device_id = o.device_id;
  return cfg;
}

inline std::uint64_t seed_of(const pd::SolverConfig& cfg) {
  return cfg.random_seed >= 0 ? static_cast<std::uint64_t>(cfg.random_seed) : 1701;
}

/// Trains on device D with the given context; `where` says in words what it runs on.
template <class D>
int train(const Options& o, const pd::SolverConfig& cfg, std::shared_ptr<pd::DeviceContext<D>> ctx,
          const std::string& where) {
  std::printf("LeNet on Fashion-MNIST: %.3g epochs = %d iterations of batch 64, %s, data in %s\n", o.epochs,
              cfg.max_iter, where.c_str(), o.data.c_str());
  std::fflush(stdout);

  auto solver = pd::make_solver<D, float>(cfg, pd::SolverOptions().with_metrics_csv({}), ctx);
  const auto t0 = std::chrono::steady_clock::now();
  const auto tests = solver->solve();  // empty unless max_iter is a multiple of test_interval
  ctx->synchronize();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  double accuracy = -1;
  for (const auto& out : tests.empty() ? solver->test(0) : tests[0])
    if (out.name == "accuracy") accuracy = out.value;
  if (accuracy < 0) throw pd::Error("the test net has no 'accuracy' output");
  std::printf("Final test accuracy: %.2f%% after %.3g epochs (%d iterations) in %.1f s\n", accuracy * 100, o.epochs,
              cfg.max_iter, secs);
  return 0;
}

/// --device cuda; defined in lenet_cuda.cu, present only when the binary was built with CUDA.
int train_cuda(const Options& o, const pd::SolverConfig& cfg);

}  // namespace lenet_example
