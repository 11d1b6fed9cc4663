// What the example programs share: reading their flags (--help, --device cpu|cuda, --device-id),
// refusing --device cuda where CUDA was not built, a timed solve, and main's report of an error.
#pragma once

#include <poseidon/core/context.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/rng.hpp>
#include <poseidon/solver/sgd.hpp>
#include <poseidon/solver/solver_config.hpp>

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/core/cuda/check.cuh>

#include <cuda_runtime.h>
#endif

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace example_support {

namespace pd = poseidon;

/// Walks argv's flags in order. --help and -h print the example's usage and exit 0 where they
/// stand, so that a bad flag before them is still reported.
class Args {
 public:
  using Usage = void (*)(std::FILE*);

  /// Integer values above max_int are refused as bad values.
  Args(int argc, char** argv, Usage usage, long max_int = 1L << 20)
      : argc_(argc), argv_(argv), usage_(usage), max_int_(max_int) {}

  /// Moves to the next flag; false past the last one.
  bool next() {
    if (++i_ >= argc_) return false;
    flag_ = argv_[i_];
    if (flag_ == "--help" || flag_ == "-h") {
      usage_(stdout);
      std::exit(0);
    }
    return true;
  }

  [[nodiscard]] std::string_view flag() const { return flag_; }

  /// The flag's value: the argument after it.
  std::string value() {
    if (i_ + 1 >= argc_) throw pd::Error(std::string(flag_) + " needs a value (see --help)");
    return argv_[++i_];
  }

  /// The value as a whole number of at least min (0 or 1).
  int integer(long min) {
    const std::string v = value();
    char* end = nullptr;
    const long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end || n < min || n > max_int_)
      throw pd::Error(std::string(flag_) + " needs " + (min > 0 ? "a positive" : "a non-negative") + " integer, got '" +
                      v + "'");
    return static_cast<int>(n);
  }

  /// The value as a number above 0 and at most max (fractions allowed).
  double positive_number(double max = std::numeric_limits<double>::infinity()) {
    const std::string v = value();
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end || !(x > 0) || x > max)
      throw pd::Error(std::string(flag_) + " must be a positive number, got '" + v + "'");
    return x;
  }

  [[noreturn]] void unknown() const { throw pd::Error("unknown option '" + std::string(flag_) + "' (see --help)"); }

 private:
  int argc_;
  char** argv_;
  Usage usage_;
  long max_int_;
  int i_ = 0;
  std::string_view flag_;
};

/// --device cpu|cuda and --device-id N, which every example takes; its Options derive from this.
struct DeviceFlags {
  std::string device = "cpu";  // cpu or cuda
  int device_id = 0;

  /// Reads the current flag when it is one of the two; false for any other.
  bool read(Args& args) {
    if (args.flag() == "--device") {
      device = args.value();
      if (device != "cpu" && device != "cuda") throw pd::Error("--device must be cpu or cuda, got '" + device + "'");
      return true;
    }
    if (args.flag() == "--device-id") {
      device_id = args.integer(0);
      return true;
    }
    return false;
  }

  /// The two flags' lines of --help, with their descriptions starting at `column`.
  static void print_help(std::FILE* out, int column) {
    std::fprintf(out, "  %-*scpu (default) or cuda; cuda needs a binary built with POSEIDON_WITH_CUDA\n", column - 2,
                 "--device D");
    std::fprintf(out, "  %-*sthe GPU to train on with --device cuda (default 0)\n", column - 2, "--device-id N");
  }

  /// Refuses --device cuda before any work when this binary has no CUDA side to run it.
  void check_built() const {
#if !defined(POSEIDON_WITH_CUDA)
    if (device == "cuda")
      throw pd::Error("--device cuda: this binary was built without CUDA (POSEIDON_WITH_CUDA is OFF); rebuild with "
                      "nvcc installed and -DPOSEIDON_WITH_CUDA=ON, or use --device cpu");
#endif
  }
};

/// $POSEIDON_DATA_DIR, where an example looks for its data without --data; none when unset or empty.
inline std::optional<std::filesystem::path> data_dir_from_env() {
  const char* env = std::getenv("POSEIDON_DATA_DIR");
  if (env && *env) return std::filesystem::path(env);
  return std::nullopt;
}

/// The contexts' seed: the solver's random_seed, or a fixed one so that runs repeat.
inline std::uint64_t seed_of(const pd::SolverConfig& cfg) {
  return cfg.random_seed >= 0 ? static_cast<std::uint64_t>(cfg.random_seed) : 1701;
}

/// What the start-up line says a run trains on: "4 threads", or "GPU 0 (its name)".
inline std::string describe(const pd::DeviceContext<pd::CPU>& ctx) { return std::to_string(ctx.threads()) + " threads"; }

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
inline std::string describe(const pd::DeviceContext<pd::CUDA>& ctx) {
  cudaDeviceProp prop{};
  POSEIDON_CUDA_CHECK(cudaGetDeviceProperties(&prop, ctx.device()));
  return "GPU " + std::to_string(ctx.device()) + " (" + prop.name + ")";
}
#endif

/// How a solve ended.
struct SolveResult {
  double accuracy;  // of the closing test, 0 to 1
  double seconds;   // training and its tests, up to the device's last kernel
};

/// Trains to cfg.max_iter on ctx and reads the test net's "accuracy" from the closing test, or
/// from one more test (not timed) when the schedule did not end on one.
template <class D>
SolveResult solve_and_test(const pd::SolverConfig& cfg, std::shared_ptr<pd::DeviceContext<D>> ctx) {
  auto solver = pd::make_solver<D, float>(cfg, pd::SolverOptions().with_metrics_csv({}), ctx);
  const auto t0 = std::chrono::steady_clock::now();
  const auto tests = solver->solve();  // empty unless test_interval divides max_iter
  ctx->synchronize();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  double accuracy = -1;
  for (const auto& out : tests.empty() ? solver->test(0) : tests[0])
    if (out.name == "accuracy") accuracy = out.value;
  if (accuracy < 0) throw pd::Error("the test net has no 'accuracy' output");
  return {accuracy, secs};
}

/// Runs main's body and reports what it throws as "<program>: <what>" on stderr, exit status 1.
template <class Body>
int run_main(const char* program, Body&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 1;
  }
}

}  // namespace example_support
