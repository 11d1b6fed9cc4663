// Full training steps (forward, backward, SGD momentum update) on the GPU: AlexNet B128 and B256,
// CIFAR-10 quick B100 and LeNet B64 on Net<CUDA>/Solver<CUDA>; compare_pytorch_gpu.py runs the
// same nets in PyTorch. The GPU counterpart of bench_train.cpp.
//
// Each timed iteration is one Solver::step(1) followed by cudaDeviceSynchronize, on the wall clock
// (UseRealTime): the host's launch overhead is part of a step, as it is for PyTorch. Without a
// CUDA device the program says so and exits 0 without running anything.
//
// Environment: POSEIDON_BENCH_DEVICE (default 0), POSEIDON_BENCH_NETS_DIR (default: the nets/
// folder beside this file).
#include <benchmark/benchmark.h>
#include <poseidon.hpp>
#include <poseidon/solver/sgd.hpp>
#include <poseidon/solver/solver_config.hpp>

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace pd = poseidon;
namespace fs = std::filesystem;

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw pd::Error(std::string(what) + ": " + cudaGetErrorString(e));
}

fs::path nets_dir() {
  if (const char* v = std::getenv("POSEIDON_BENCH_NETS_DIR"); v && *v) return v;
#ifdef POSEIDON_SOURCE_DIR
  return fs::path(POSEIDON_SOURCE_DIR) / "benchmarks" / "nets";
#else
  return fs::path(__FILE__).parent_path() / "nets";  // nvcc is given this file's absolute path by CMake
#endif
}

/// benchmarks/nets/<name>.prototxt with $BATCH replaced, as bench_train.cpp reads it.
std::string net_text(const std::string& name, int batch) {
  const fs::path file = nets_dir() / (name + ".prototxt");
  std::ifstream in(file);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.empty()) throw pd::Error(file.string() + " not found (set POSEIDON_BENCH_NETS_DIR to benchmarks/nets)");
  for (std::size_t p; (p = text.find("$BATCH")) != std::string::npos;) text.replace(p, 6, std::to_string(batch));
  return text;
}

// Caffe's usual settings for these nets, as bench_train.cpp: SGD with momentum and weight decay.
void bm_train_step(benchmark::State& state, const std::string& name, int batch) {
  std::unique_ptr<pd::Solver<pd::CUDA, float>> s;
  std::ostringstream quiet;
  try {
    pd::Message solver;
    solver.add("net_param", pd::parse_prototxt(net_text(name, batch), name + ".prototxt"));
    solver.set("base_lr", 0.001).set("momentum", 0.9).set("weight_decay", 0.0005).set("lr_policy", "fixed");
    solver.set("max_iter", 1000000).set("display", 0);
    auto cfg = pd::SolverConfig::from_message(solver);
    auto ctx = std::make_shared<pd::DeviceContext<pd::CUDA>>(env_int("POSEIDON_BENCH_DEVICE", 0));
    s = pd::make_solver<pd::CUDA, float>(cfg, pd::SolverOptions().log_to(quiet).with_metrics_csv({}), ctx);
    s->step(3);  // warm-up: allocations, cuDNN algorithm choice and workspaces, cuBLAS handles
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  for (auto _ : state) {
    try {
      s->step(1);
      check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    } catch (const std::exception& e) {
      state.SkipWithError(e.what());
      break;
    }
  }
  state.counters["images/s"] = benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(name + " B" + std::to_string(batch));
}

}  // namespace

int main(int argc, char** argv) {
  if (pd::cuda_device_count() == 0) {
    std::printf("poseidon_cuda_bench_train: no CUDA device available; nothing was measured\n");
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, env_int("POSEIDON_BENCH_DEVICE", 0)) == cudaSuccess)
    std::fprintf(stderr, "GPU: %s (%d SMs)\n", prop.name, prop.multiProcessorCount);  // stdout may be JSON
  const std::vector<std::pair<std::string, int>> configs = {
      {"lenet", 64}, {"cifar10_quick", 100}, {"alexnet", 128}, {"alexnet", 256}};
  for (const auto& [name, batch] : configs)
    benchmark::RegisterBenchmark(("BM_train_step/" + name + "/" + std::to_string(batch)).c_str(), bm_train_step, name,
                                 batch)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();  // --benchmark_min_time sets the time per benchmark
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
