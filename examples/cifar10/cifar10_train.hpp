// The CIFAR-10 example's options, its choice of data and its training run, a template on the device:
// main.cpp runs it on the CPU, cifar10_cuda.cu (compiled by nvcc when CUDA is built) on a GPU.
#pragma once

#include "cifar10_quick.hpp"
#include "example_support.hpp"

#include <poseidon/core/context.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/data/cifar10.hpp>
#include <poseidon/data/dummy_data_layer.hpp>
#include <poseidon/layers/all.hpp>
#include <poseidon/net/prototxt.hpp>
#include <poseidon/solver/solver_config.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

namespace cifar10_example {

namespace ex = example_support;

inline constexpr int train_images = 50000;

struct Options : ex::DeviceFlags {
  fs::path solver = POSEIDON_EXAMPLE_DIR "/cifar10_quick_solver.prototxt";
  fs::path data;
  std::optional<int> iters;
  std::optional<double> epochs;
  int threads = 0;
  bool synthetic = false;
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
               "  --threads N    CPU threads for BLAS and OpenMP (default: all cores)\n");
  ex::DeviceFlags::print_help(out, 17);
}

inline Options parse(int argc, char** argv) {
  Options o;
  for (ex::Args args(argc, argv, usage, 1L << 30); args.next();) {
    if (o.read(args)) continue;
    const auto a = args.flag();
    if (a == "--iters" || a == "--iterations") {
      o.iters = args.integer(1);
    } else if (a == "--epochs") {
      o.epochs = args.positive_number(1e6);
    } else if (a == "--data") {
      o.data = args.value();
      if (o.data.empty()) throw pd::Error("--data needs a folder (see --help)");
    } else if (a == "--synthetic") {
      o.synthetic = true;
    } else if (a == "--solver") {
      o.solver = args.value();
    } else if (a == "--threads") {
      o.threads = args.integer(1);
    } else {
      args.unknown();
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
  if (const auto env = ex::data_dir_from_env()) {
    if (auto d = find_cifar10_dir(*env)) return {d, {}};
    looked = "$POSEIDON_DATA_DIR (" + env->string() + ") and ";
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
  const ex::SolveResult r = ex::solve_and_test(cfg, ctx);
  std::printf("Final test accuracy: %.2f%% after %d iterations (%.3g epochs) in %.1f s (%.0f training images/s "
              "including tests)%s\n",
              r.accuracy * 100, cfg.max_iter, epochs, r.seconds, double(cfg.max_iter) * batch / r.seconds,
              data.dir ? "" : " [synthetic data]");
  return 0;
}

/// --device cuda; defined in cifar10_cuda.cu, present only when the binary was built with CUDA.
int train_cuda(const Options& o, const pd::SolverConfig& cfg, const DataChoice& data, int batch);

}  // namespace cifar10_example
