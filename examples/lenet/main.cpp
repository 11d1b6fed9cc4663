// Trains Caffe's LeNet on Fashion-MNIST with Caffe's solver settings and reports the test
// accuracy after every epoch; `--help` lists the options.
#include <poseidon.hpp>
#include <poseidon/solver/sgd.hpp>
#include <poseidon/solver/solver_config.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <string_view>

namespace pd = poseidon;
namespace fs = std::filesystem;

namespace {

struct Options {
  fs::path solver = POSEIDON_EXAMPLE_DIR "/lenet_solver.prototxt";
  fs::path data;
  double epochs = 10;
  int threads = 0;
};

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: poseidon_example_lenet [--epochs N] [--data DIR] [--solver FILE] [--threads N]\n"
               "  --epochs N     epochs of the 60000 training images (default 10; fractions allowed)\n"
               "  --data DIR     folder with Fashion-MNIST's four IDX files, plain or .gz\n"
               "                 (default: $POSEIDON_DATA_DIR, else /usr/share/datasets/fashion-mnist,\n"
               "                 which Debian's dataset-fashion-mnist package installs)\n"
               "  --solver FILE  solver prototxt (default: the one beside this example's source)\n"
               "  --threads N    CPU threads for BLAS and OpenMP (default: all cores)\n");
}

Options parse(int argc, char** argv) {
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

void check_data(const fs::path& dir) {
  for (const char* f : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                        "t10k-labels-idx1-ubyte"})
    if (!fs::exists(dir / (std::string(f) + ".gz")) && !fs::exists(dir / f))
      throw pd::Error("Fashion-MNIST file " + (dir / f).string() +
                      "[.gz] not found. Install Debian's dataset-fashion-mnist (scripts/install-deps does), or "
                      "point --data or POSEIDON_DATA_DIR at a folder holding the four IDX files.");
}

}  // namespace

int main(int argc, char** argv) try {
  const Options o = parse(argc, argv);
  check_data(o.data);
  // The net's IdxData layers resolve their relative file names in POSEIDON_DATA_DIR.
  ::setenv("POSEIDON_DATA_DIR", o.data.c_str(), 1);

  auto cfg = pd::SolverConfig::from_prototxt(o.solver);
  constexpr int train_images = 60000, batch = 64;
  const int iters_per_epoch = (train_images + batch - 1) / batch;
  cfg.max_iter = static_cast<int>(std::ceil(o.epochs * train_images / batch));
  cfg.test_interval = std::min(iters_per_epoch, cfg.max_iter);  // test once per epoch
  cfg.snapshot_after_train = false;  // a demo leaves no files behind

  auto ctx = std::make_shared<pd::DeviceContext<pd::CPU>>(o.threads, cfg.random_seed >= 0 ? cfg.random_seed : 1701);
  std::printf("LeNet on Fashion-MNIST: %.3g epochs = %d iterations of batch %d, %d threads, data in %s\n", o.epochs,
              cfg.max_iter, batch, ctx->threads(), o.data.c_str());
  std::fflush(stdout);

  auto solver = pd::make_solver<pd::CPU, float>(cfg, pd::SolverOptions().with_metrics_csv({}), ctx);
  const auto t0 = std::chrono::steady_clock::now();
  const auto tests = solver->solve();  // empty unless max_iter is a multiple of test_interval
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  double accuracy = -1;
  for (const auto& out : tests.empty() ? solver->test(0) : tests[0])
    if (out.name == "accuracy") accuracy = out.value;
  if (accuracy < 0) throw pd::Error("the test net has no 'accuracy' output");
  std::printf("Final test accuracy: %.2f%% after %.3g epochs (%d iterations) in %.1f s\n", accuracy * 100, o.epochs,
              cfg.max_iter, secs);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "poseidon_example_lenet: %s\n", e.what());
  return 1;
}
