// The LeNet example's options and its training loop, a template on the device: main.cpp runs it
// on the CPU, lenet_cuda.cu (compiled by nvcc when CUDA is built) instantiates it for the GPU.
#pragma once

#include "example_support.hpp"

#include <poseidon/core/context.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/data/idx_data_layer.hpp>
#include <poseidon/layers/all.hpp>
#include <poseidon/solver/solver_config.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

namespace lenet_example {

namespace pd = poseidon;
namespace fs = std::filesystem;
namespace ex = example_support;

struct Options : ex::DeviceFlags {
  fs::path solver = POSEIDON_EXAMPLE_DIR "/lenet_solver.prototxt";
  fs::path data;
  double epochs = 10;
  int threads = 0;
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
               "  --threads N    CPU threads for BLAS and OpenMP (default: all cores)\n");
  ex::DeviceFlags::print_help(out, 17);
}

inline Options parse(int argc, char** argv) {
  Options o;
  for (ex::Args args(argc, argv, usage); args.next();) {
    if (o.read(args)) continue;
    const auto a = args.flag();
    if (a == "--epochs") {
      o.epochs = args.positive_number();
    } else if (a == "--data") {
      o.data = args.value();
    } else if (a == "--solver") {
      o.solver = args.value();
    } else if (a == "--threads") {
      // atoi, as this example always had it: "--threads 2x" is 2 here, refused by the others.
      const std::string v = args.value();
      o.threads = std::atoi(v.c_str());
      if (o.threads <= 0) throw pd::Error("--threads must be a positive integer, got '" + v + "'");
    } else {
      args.unknown();
    }
  }
  if (o.data.empty()) o.data = ex::data_dir_from_env().value_or("/usr/share/datasets/fashion-mnist");
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

/// Trains on device D with the given context; `where` says in words what it runs on.
template <class D>
int train(const Options& o, const pd::SolverConfig& cfg, std::shared_ptr<pd::DeviceContext<D>> ctx,
          const std::string& where) {
  std::printf("LeNet on Fashion-MNIST: %.3g epochs = %d iterations of batch 64, %s, data in %s\n", o.epochs,
              cfg.max_iter, where.c_str(), o.data.c_str());
  std::fflush(stdout);
  const ex::SolveResult r = ex::solve_and_test(cfg, ctx);
  std::printf("Final test accuracy: %.2f%% after %.3g epochs (%d iterations) in %.1f s\n", r.accuracy * 100, o.epochs,
              cfg.max_iter, r.seconds);
  return 0;
}

/// --device cuda; defined in lenet_cuda.cu, present only when the binary was built with CUDA.
int train_cuda(const Options& o, const pd::SolverConfig& cfg);

}  // namespace lenet_example
