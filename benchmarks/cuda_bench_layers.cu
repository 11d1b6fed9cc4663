// Forward and backward of every AlexNet layer kind on the GPU at batch 128 (conv1..5, LRN, pooling,
// fc6..8, ReLU, Dropout, SoftmaxWithLoss), in GFLOP/s or GB/s, next to the cuBLAS sgemm peak.
//
// The GPU counterpart of bench_layers.cpp. Each iteration is timed with CUDA events around the
// layer's launches and waited for (UseManualTime), so the time is the device's, not the launch
// queue's. Without a CUDA device the program says so and exits 0 without running anything.
//
// Environment: POSEIDON_BENCH_ALEXNET_BATCH (default 128), POSEIDON_BENCH_MIN_TIME (seconds per
// benchmark, default 0.2), POSEIDON_BENCH_REPETITIONS (default 3; the summary keeps the best),
// POSEIDON_BENCH_DEVICE (default 0).
#include <benchmark/benchmark.h>
#include <poseidon/core/context.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/convolution.hpp>
#include <poseidon/layers/dropout.hpp>
#include <poseidon/layers/inner_product.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/lrn.hpp>
#include <poseidon/layers/pooling.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/layers/relu.hpp>
#include <poseidon/layers/softmax_loss.hpp>
#include <poseidon/math/blas.hpp>

#include <cuda_runtime.h>

#include "layer_specs.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace pd = poseidon;

namespace {

using Ctx = pd::DeviceContext<pd::CUDA>;
using Tensor = pd::Tensor<pd::CUDA, float>;
using LayerPtr = std::unique_ptr<pd::Layer<pd::CUDA, float>>;

enum class Pass { forward, backward, forward_backward };
const char* pass_name(Pass p) { return p == Pass::forward ? "fwd" : p == Pass::backward ? "bwd" : "fwd+bwd"; }

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw pd::Error(std::string(what) + ": " + cudaGetErrorString(e));
}

/// The one context every benchmark shares (cuDNN/cuBLAS handles are expensive to make).
Ctx& context() {
  static Ctx ctx(pd::bench::env_int("POSEIDON_BENCH_DEVICE", 0));
  return ctx;
}

/// Times device work between two events on the legacy default stream: it is ordered with every
/// blocking stream, so the context's stream (cuBLAS, cuDNN) and the layer kernels (legacy stream)
/// are both inside the interval.
class EventTimer {
 public:
  EventTimer() {
    check(cudaEventCreate(&start_), "cudaEventCreate");
    check(cudaEventCreate(&stop_), "cudaEventCreate");
  }
  ~EventTimer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;
  void start() { check(cudaEventRecord(start_, cudaStreamLegacy), "cudaEventRecord"); }
  /// Waits for the work since start() and returns its seconds.
  double stop() {
    check(cudaEventRecord(stop_, cudaStreamLegacy), "cudaEventRecord");
    check(cudaEventSynchronize(stop_), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start_, stop_), "cudaEventElapsedTime");
    return ms * 1e-3;
  }

 private:
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

/// One layer on its device tensors, set up once and reused by every pass.
struct Workload : pd::bench::LayerSpec {
  explicit Workload(pd::bench::LayerSpec spec) : LayerSpec(std::move(spec)) {}
  LayerPtr instance;
  Tensor bottom, label, top;

  [[nodiscard]] std::vector<Tensor*> bottoms() { return labels ? std::vector<Tensor*>{&bottom, &label} : std::vector<Tensor*>{&bottom}; }
  [[nodiscard]] std::vector<bool> propagate() const { return labels ? std::vector<bool>{true, false} : std::vector<bool>{true}; }

  void prepare(Ctx& ctx) {
    if (instance) return;
    pd::LayerParameter p("alexnet_" + layer, "");
    p.bottom = labels ? std::vector<std::string>{"in", "label"} : std::vector<std::string>{"in"};
    p.top = {"out"};
    p.phase = pd::Phase::train;
    configure(p);
    instance = pd::make_layer<pd::CUDA, float>(p);
    try {
      set_up(ctx);
    } catch (...) {
      instance.reset();  // the next pass of this layer tries again rather than running a half-made layer
      throw;
    }
  }
  void set_up(Ctx& ctx) {
    bottom.reshape(input);
    bottom.copy_data_from_host(pd::bench::pattern(bottom.count(), 7));
    if (labels) {
      label.reshape({input[0]});
      std::vector<float> l(label.count());
      for (std::size_t i = 0; i < l.size(); ++i) l[i] = static_cast<float>((i * 37) % static_cast<std::size_t>(labels));
      label.copy_data_from_host(l);
    }
    instance->setup(ctx, bottoms(), {&top});
    for (auto& b : instance->blobs()) b->copy_data_from_host(pd::bench::pattern(b->count(), 13));
    // A loss layer's top diff is its loss weight (set by setup); others get a pattern.
    if (!labels) top.copy_diff_from_host(pd::bench::pattern(top.count(), 17));
    // Warm-up: cuDNN algorithm choice and workspace allocation happen on the first passes.
    for (int i = 0; i < 2; ++i) run(ctx, Pass::forward_backward);
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  }
  void run(Ctx& ctx, Pass pass) {
    if (pass != Pass::backward) instance->forward(ctx, bottoms(), {&top});
    if (pass != Pass::forward) instance->backward(ctx, {&top}, propagate(), bottoms());
  }
  [[nodiscard]] double flops(Pass pass) const {
    return pass == Pass::forward ? forward_flops : pass == Pass::backward ? backward_flops : forward_flops + backward_flops;
  }
  [[nodiscard]] double bytes(Pass pass) const {
    return pass == Pass::forward ? forward_bytes : pass == Pass::backward ? backward_bytes : forward_bytes + backward_bytes;
  }
};

std::vector<std::unique_ptr<Workload>>& workloads() {
  static std::vector<std::unique_ptr<Workload>> w;
  return w;
}

void define_workloads() {
  // BVLC AlexNet, every layer kind at its largest shape.
  for (auto& spec : pd::bench::alexnet_specs(pd::bench::env_int("POSEIDON_BENCH_ALEXNET_BATCH", 128), true))
    workloads().push_back(std::make_unique<Workload>(std::move(spec)));
}

void bm_sgemm_peak(benchmark::State& state) {
  auto& ctx = context();
  const int n = static_cast<int>(state.range(0));
  try {
    Tensor a{n, n}, bm{n, n}, c{n, n};
    a.copy_data_from_host(pd::bench::pattern(a.count(), 1));
    bm.copy_data_from_host(pd::bench::pattern(bm.count(), 2));
    auto gemm = [&] {
      pd::math::gemm(ctx, pd::math::Trans::no, pd::math::Trans::no, n, n, n, 1.0f, a.data(), bm.data(), 0.0f, c.data());
    };
    gemm();
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    EventTimer timer;
    for (auto _ : state) {
      timer.start();
      gemm();
      state.SetIterationTime(timer.stop());
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());  // before or between iterations: the loop has ended
    return;
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * n * n * n * static_cast<double>(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

void bm_layer(benchmark::State& state, Workload* wl, Pass pass) {
  auto& ctx = context();
  std::unique_ptr<EventTimer> timer;
  try {
    wl->prepare(ctx);
    timer = std::make_unique<EventTimer>();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  for (auto _ : state) {
    try {
      timer->start();
      wl->run(ctx, pass);
      state.SetIterationTime(timer->stop());
    } catch (const std::exception& e) {
      state.SkipWithError(e.what());
      break;
    }
  }
  const double it = static_cast<double>(state.iterations());
  if (wl->flops(pass) > 0)
    state.counters["GFLOP/s"] = benchmark::Counter(wl->flops(pass) * it / 1e9, benchmark::Counter::kIsRate);
  if (wl->bytes(pass) > 0)
    state.counters["GB/s"] = benchmark::Counter(wl->bytes(pass) * it / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(wl->shape);
}

/// Adds "%peak" (of the best BM_sgemm_peak in this run) to the GEMM-bound rows and prints a
/// summary of the best repetition of every benchmark at the end.
class PeakReporter : public benchmark::ConsoleReporter {
 public:
  struct Row {
    std::string name, label;
    double ms = 0, gflops = 0, gbps = 0;
  };
  void ReportRuns(const std::vector<Run>& reports) override {
    std::vector<Run> runs = reports;
    for (auto& r : runs) {
      if (r.error_occurred || r.run_type != Run::RT_Iteration) continue;
      const auto g = r.counters.find("GFLOP/s");
      const auto m = r.counters.find("GB/s");
      std::string name = r.benchmark_name();
      for (const char* suffix : {"/manual_time", "/min_time:", "/repeats:"})
        if (const auto at = name.find(suffix); at != std::string::npos) {
          const auto next = name.find('/', at + 1);
          name.erase(at, next == std::string::npos ? std::string::npos : next - at);
        }
      const double gflops = g != r.counters.end() ? g->second.value : 0;
      if (name.rfind("BM_sgemm_peak", 0) == 0)
        peak_ = std::max(peak_, gflops);
      else if (peak_ > 0 && gflops > 0 && is_gemm_bound(name))
        r.counters["%peak"] = benchmark::Counter(100.0 * gflops / peak_);
      const double ms = r.GetAdjustedRealTime();  // every benchmark here reports in milliseconds
      auto it = std::find_if(rows_.begin(), rows_.end(), [&](const Row& row) { return row.name == name; });
      if (it == rows_.end()) {
        rows_.push_back({name, r.report_label, ms, gflops, m != r.counters.end() ? m->second.value : 0});
      } else if (ms < it->ms) {
        *it = {name, r.report_label, ms, gflops, m != r.counters.end() ? m->second.value : 0};
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }
  void summary() const {
    std::printf("\nSummary (best repetition; sgemm peak in this run: %.0f GFLOP/s)\n", peak_);
    std::printf("  %-30s %-44s %9s %9s %7s %8s\n", "benchmark", "shape", "ms", "GFLOP/s", "%peak", "GB/s");
    for (const auto& r : rows_) {
      if (r.name.rfind("BM_sgemm_peak", 0) == 0) continue;
      const bool pct = peak_ > 0 && r.gflops > 0 && is_gemm_bound(r.name);
      std::printf("  %-30s %-44s %9.3f %9.0f %6.1f%% %8.0f\n", r.name.c_str(), r.label.c_str(), r.ms, r.gflops,
                  pct ? 100.0 * r.gflops / peak_ : 0.0, r.gbps);
    }
  }

 private:
  static bool is_gemm_bound(const std::string& name) {
    for (const auto& wl : workloads())
      if (wl->gemm_bound && name.rfind("BM_alexnet_" + wl->layer + "/", 0) == 0) return true;
    return false;
  }
  double peak_ = 0;
  std::vector<Row> rows_;
};

}  // namespace

int main(int argc, char** argv) {
  const int devices = pd::cuda_device_count();
  if (devices == 0) {
    std::printf("poseidon_cuda_bench_layers: no CUDA device available; nothing was measured\n");
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  try {
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, pd::bench::env_int("POSEIDON_BENCH_DEVICE", 0)), "cudaGetDeviceProperties");
    std::fprintf(stderr, "GPU: %s (%d SMs), batch %d\n", prop.name, prop.multiProcessorCount,
                pd::bench::env_int("POSEIDON_BENCH_ALEXNET_BATCH", 128));
    (void)context();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "poseidon_cuda_bench_layers: %s\n", e.what());
    return 1;
  }
  define_workloads();
  const double min_time = pd::bench::env_double("POSEIDON_BENCH_MIN_TIME", 0.2);
  const int repetitions = std::max(1, pd::bench::env_int("POSEIDON_BENCH_REPETITIONS", 3));
  benchmark::RegisterBenchmark("BM_sgemm_peak", bm_sgemm_peak)
      ->Arg(4096)
      ->Arg(8192)
      ->Unit(benchmark::kMillisecond)
      ->UseManualTime()
      ->MinTime(min_time)
      ->Repetitions(repetitions);
  for (auto& wl : workloads())
    for (Pass pass : {Pass::forward, Pass::backward, Pass::forward_backward})
      benchmark::RegisterBenchmark(("BM_alexnet_" + wl->layer + "/" + pass_name(pass)).c_str(), bm_layer, wl.get(), pass)
          ->Unit(benchmark::kMillisecond)
          ->UseManualTime()
          ->MinTime(min_time)
          ->Repetitions(repetitions);
  PeakReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.summary();
  benchmark::Shutdown();
  workloads().clear();  // device tensors go before the context's handles
  return 0;
}
