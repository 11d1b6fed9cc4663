// Forward and backward of the heavy layers (Convolution, InnerProduct, Pooling, LRN) at AlexNet
// and LeNet shapes, in GFLOP/s and as a share of the sgemm peak measured in the same run.
//
// Environment: POSEIDON_BENCH_THREADS (default "1,2"), POSEIDON_BENCH_ALEXNET_BATCH (default 32),
// POSEIDON_BENCH_CONV_PARALLEL and POSEIDON_BENCH_CONV_BATCH (see conv_parallel below),
// POSEIDON_BENCH_CONV_ALGOS (a comma-separated list of gemm, winograd, direct, auto: every convolution is
// timed once per algorithm, named ..._conv2_gemm, ..._conv2_winograd; default: the layer's own
// choice, which POSEIDON_CONV_ALGO can force),
// POSEIDON_BENCH_FC_BATCH (AlexNet's fc layers once more at BVLC's training batch, default 256;
// 0 skips them), POSEIDON_BENCH_MIN_TIME (seconds per benchmark, default 0.05: most iterations
// are long), POSEIDON_BENCH_REPETITIONS (default 2; the summary keeps each benchmark's best
// repetition, which filters out the noise of a shared machine).
#include <benchmark/benchmark.h>
#include <poseidon/core/context.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/convolution.hpp>
#include <poseidon/layers/inner_product.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/lrn.hpp>
#include <poseidon/layers/pooling.hpp>
#include <poseidon/math/blas.hpp>

#include "layer_specs.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace pd = poseidon;

namespace {

using Ctx = pd::DeviceContext<pd::CPU>;
using Tensor = pd::Tensor<pd::CPU, float>;
using LayerPtr = std::unique_ptr<pd::Layer<pd::CPU, float>>;

enum class Pass { forward, backward, forward_backward };
const char* pass_name(Pass p) {
  return p == Pass::forward ? "fwd" : p == Pass::backward ? "bwd" : "fwd+bwd";
}

// POSEIDON_BENCH_CONV_PARALLEL=gemm|samples forces Convolution's threading scheme (default: its own
// choice) and POSEIDON_BENCH_CONV_BATCH its samples per GEMM, to compare them on one machine.
pd::ConvolutionLayer<pd::CPU, float>::Parallel conv_parallel() {
  using P = pd::ConvolutionLayer<pd::CPU, float>::Parallel;
  const char* v = std::getenv("POSEIDON_BENCH_CONV_PARALLEL");
  const std::string s = v ? v : "";
  return s == "gemm" ? P::gemm : s == "samples" ? P::samples : P::automatic;
}

std::vector<std::string> split_list(const char* v) {
  std::vector<std::string> out;
  const std::string s = v ? v : "";
  std::size_t pos = 0;
  while (pos < s.size()) {
    const std::size_t end = s.find(',', pos);
    out.push_back(s.substr(pos, end == std::string::npos ? std::string::npos : end - pos));
    if (end == std::string::npos) break;
    pos = end + 1;
  }
  return out;
}

std::vector<int> thread_counts() {
  std::vector<int> out;
  const char* v = std::getenv("POSEIDON_BENCH_THREADS");
  for (const auto& item : split_list(v && *v ? v : "1,2"))
    if (const int n = std::atoi(item.c_str()); n > 0) out.push_back(n);
  return out.empty() ? std::vector<int>{1} : out;
}

using Algorithm = pd::ConvolutionLayer<pd::CPU, float>::Algorithm;

// POSEIDON_BENCH_CONV_ALGOS: the algorithms every convolution is timed with, side by side.
std::vector<std::pair<std::string, Algorithm>> conv_algorithms() {
  std::vector<std::pair<std::string, Algorithm>> out;
  for (const auto& a : split_list(std::getenv("POSEIDON_BENCH_CONV_ALGOS"))) {
    if (a == "gemm") out.emplace_back(a, Algorithm::gemm);
    else if (a == "winograd") out.emplace_back(a, Algorithm::winograd);
    else if (a == "direct") out.emplace_back(a, Algorithm::direct);
    else if (a == "auto") out.emplace_back(a, Algorithm::automatic);
    else {
      std::fprintf(stderr, "POSEIDON_BENCH_CONV_ALGOS: unknown algorithm '%s' (gemm, winograd, direct, auto)\n",
                   a.c_str());
      std::exit(1);
    }
  }
  return out;
}

// The shared deterministic pattern (layer_specs.hpp), written straight into a host tensor.
void fill_pattern(Tensor& t, std::uint32_t salt) {
  const auto v = pd::bench::pattern(t.count(), salt);
  std::copy(v.begin(), v.end(), t.data());
}

/// One layer on its tensors, set up once and reused by every pass and thread count.
struct Workload : pd::bench::LayerSpec {
  explicit Workload(pd::bench::LayerSpec spec) : LayerSpec(std::move(spec)) {}
  LayerPtr instance;
  std::optional<Algorithm> algorithm;  // a convolution's forced algorithm
  Tensor bottom, top;
  Ctx* ctx = nullptr;

  void prepare(Ctx& c) {
    ctx = &c;
    if (instance) return;
    pd::LayerParameter p(net + "_" + layer, "");
    p.bottom = {"in"};
    p.top = {"out"};
    configure(p);
    instance = pd::make_layer<pd::CPU, float>(p);
    if (auto* conv = dynamic_cast<pd::ConvolutionLayer<pd::CPU, float>*>(instance.get())) {
      conv->set_parallel(conv_parallel());
      conv->set_batch_samples(pd::bench::env_int("POSEIDON_BENCH_CONV_BATCH", 0));
      if (algorithm) conv->set_algorithm(*algorithm);
    }
    bottom.reshape(input);
    fill_pattern(bottom, 7);
    instance->setup(c, {&bottom}, {&top});
    fill_pattern(top, 11);  // top diff is written below; data is overwritten by forward
    for (auto& b : instance->blobs()) fill_pattern(*b, 13);
    Tensor dy(top.shape());
    fill_pattern(dy, 17);
    top.copy_diff_from_host(dy.data_span());
    // Warm up: touches every buffer once so page faults are not timed.
    run(Pass::forward_backward);
  }
  void run(Pass pass) {
    if (pass != Pass::backward) instance->forward(*ctx, {&bottom}, {&top});
    if (pass != Pass::forward) instance->backward(*ctx, {&top}, {true}, {&bottom});
  }
  [[nodiscard]] double flops(Pass pass) const {
    return pass == Pass::forward ? forward_flops : pass == Pass::backward ? backward_flops : forward_flops + backward_flops;
  }
};

std::vector<std::unique_ptr<Workload>>& workloads() {
  static std::vector<std::unique_ptr<Workload>> w;
  return w;
}

// A convolution once per algorithm of POSEIDON_BENCH_CONV_ALGOS (suffixed _gemm, _winograd, _auto).
void add(pd::bench::LayerSpec spec) {
  static const auto algorithms = conv_algorithms();
  if (!spec.gemm_bound || spec.layer.rfind("conv", 0) != 0 || algorithms.empty()) {
    workloads().push_back(std::make_unique<Workload>(std::move(spec)));
    return;
  }
  for (const auto& [name, algo] : algorithms) {
    auto w = std::make_unique<Workload>(spec);
    w->layer += "_" + name;
    w->algorithm = algo;
    workloads().push_back(std::move(w));
  }
}

void define_workloads() {
  const int b = pd::bench::env_int("POSEIDON_BENCH_ALEXNET_BATCH", 32);
  for (auto& spec : pd::bench::alexnet_specs(b, false)) add(std::move(spec));
  if (const int fb = pd::bench::env_int("POSEIDON_BENCH_FC_BATCH", 256); fb > 0 && fb != b) {
    const std::string suffix = "_b" + std::to_string(fb);
    add(pd::bench::ip_spec("alexnet", "fc6" + suffix, fb, 9216, 4096));
    add(pd::bench::ip_spec("alexnet", "fc7" + suffix, fb, 4096, 4096));
    add(pd::bench::ip_spec("alexnet", "fc8" + suffix, fb, 4096, 1000));
  }
  // Caffe's CIFAR-10 quick, batch 100: small channel counts, where the GEMMs are narrow.
  for (auto& spec : pd::bench::cifar10_quick_specs(100)) add(std::move(spec));
  // Caffe's LeNet (examples/mnist/lenet_train_test.prototxt), batch 64.
  add(pd::bench::conv_spec("lenet", "conv1", 64, 1, 28, 28, 20, 5, 1, 0, 1));
  add(pd::bench::pool_spec("lenet", "pool1", 64, 20, 24, 24, 2, 2));
  add(pd::bench::conv_spec("lenet", "conv2", 64, 20, 12, 12, 50, 5, 1, 0, 1));
  add(pd::bench::pool_spec("lenet", "pool2", 64, 50, 8, 8, 2, 2));
  add(pd::bench::ip_spec("lenet", "ip1", 64, 800, 500));
  add(pd::bench::ip_spec("lenet", "ip2", 64, 500, 10));
}

void bm_sgemm_peak(benchmark::State& state, int threads) {
  Ctx ctx(threads);
  const int n = static_cast<int>(state.range(0));
  std::vector<float> a(static_cast<std::size_t>(n) * n), bm(a.size()), c(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    a[i] = static_cast<float>(i % 7) * 0.1f;
    bm[i] = static_cast<float>(i % 5) * 0.1f;
  }
  pd::math::gemm(ctx, pd::math::Trans::no, pd::math::Trans::no, n, n, n, 1.0f, a.data(), bm.data(), 0.0f, c.data());
  for (auto _ : state) {
    pd::math::gemm(ctx, pd::math::Trans::no, pd::math::Trans::no, n, n, n, 1.0f, a.data(), bm.data(), 0.0f, c.data());
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * n * n * n * static_cast<double>(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
  state.counters["threads"] = threads;
}

void bm_layer(benchmark::State& state, Workload* wl, Pass pass, int threads) {
  Ctx ctx(threads);
  wl->prepare(ctx);
  for (auto _ : state) {
    wl->run(pass);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(wl->flops(pass) * static_cast<double>(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
  state.counters["threads"] = threads;
  state.SetLabel(wl->shape);
}

/// Adds "%peak" (of the best BM_sgemm_peak at the same thread count) to every run, and keeps the
/// rows for the summary printed at the end.
class PeakReporter : public benchmark::ConsoleReporter {
 public:
  struct Row {
    std::string name, label;
    int threads;
    double gflops;
  };
  void ReportRuns(const std::vector<Run>& reports) override {
    std::vector<Run> runs = reports;
    for (auto& r : runs) {
      if (r.error_occurred || r.run_type != Run::RT_Iteration) continue;
      const auto g = r.counters.find("GFLOP/s");
      const auto t = r.counters.find("threads");
      if (g == r.counters.end() || t == r.counters.end()) continue;
      const int threads = static_cast<int>(t->second.value);
      const double gflops = g->second.value;
      std::string name = r.benchmark_name();
      // Drop the suffixes every run shares, keep the sgemm size.
      for (const char* suffix : {"/real_time", "/min_time:", "/repeats:"})
        if (const auto at = name.find(suffix); at != std::string::npos) {
          const auto next = name.find('/', at + 1);
          name.erase(at, next == std::string::npos ? std::string::npos : next - at);
        }
      if (name.rfind("BM_sgemm_peak", 0) == 0) {
        peak_[threads] = std::max(peak_[threads], gflops);
      } else if (peak_.count(threads)) {
        r.counters["%peak"] = benchmark::Counter(100.0 * gflops / peak_[threads]);
      }
      // Repetitions of one benchmark: keep the best.
      auto it = std::find_if(rows_.begin(), rows_.end(), [&](const Row& row) { return row.name == name; });
      if (it == rows_.end())
        rows_.push_back({name, r.report_label, threads, gflops});
      else
        it->gflops = std::max(it->gflops, gflops);
    }
    ConsoleReporter::ReportRuns(runs);
  }
  void summary() const {
    std::printf("\nSummary (best repetition; GFLOP/s; %%peak = share of the best BM_sgemm_peak at the same "
                "thread count in this run)\n");
    for (const auto& [t, p] : peak_) std::printf("  sgemm peak, %d thread(s): %.1f GFLOP/s\n", t, p);
    std::printf("  %-40s %-46s %7s %9s %7s\n", "benchmark", "shape", "threads", "GFLOP/s", "%peak");
    for (const auto& r : rows_) {
      const auto it = peak_.find(r.threads);
      const double pct = it != peak_.end() && it->second > 0 ? 100.0 * r.gflops / it->second : 0.0;
      std::printf("  %-40s %-46s %7d %9.1f %6.1f%%\n", r.name.c_str(), r.label.c_str(), r.threads, r.gflops, pct);
    }
  }

 private:
  std::map<int, double> peak_;
  std::vector<Row> rows_;
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  define_workloads();
  const double min_time = pd::bench::env_double("POSEIDON_BENCH_MIN_TIME", 0.05);
  const int repetitions = std::max(1, pd::bench::env_int("POSEIDON_BENCH_REPETITIONS", 2));
  const auto threads = thread_counts();
  // The peak first, so that every later row can be put against it.
  for (int t : threads)
    benchmark::RegisterBenchmark(("BM_sgemm_peak/threads:" + std::to_string(t)).c_str(), bm_sgemm_peak, t)
        ->Arg(2048)
        ->Arg(4096)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MinTime(min_time)
        ->Repetitions(repetitions);
  for (int t : threads)
    for (auto& wl : workloads())
      for (Pass pass : {Pass::forward, Pass::backward, Pass::forward_backward}) {
        const std::string name =
            "BM_" + wl->net + "_" + wl->layer + "/" + pass_name(pass) + "/threads:" + std::to_string(t);
        benchmark::RegisterBenchmark(name.c_str(), bm_layer, wl.get(), pass, t)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime()
            ->MinTime(min_time)
            ->Repetitions(repetitions);
      }
  PeakReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.summary();
  benchmark::Shutdown();
  return 0;
}
