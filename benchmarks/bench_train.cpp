// Full training steps (forward, backward, SGD update) of LeNet B64, CIFAR-10 quick B100 and
// AlexNet B8/B32 on 1 and 2 threads; compare_pytorch.py runs the same nets in PyTorch.
//
// POSEIDON_PROFILE=net:batch:threads[:steps] prints, instead, where one step's time goes: each
// layer's forward and backward, the diff clearing and the update, medians over the steps. With
// one thread it counts the process's CPU time, which a busy shared machine disturbs far less
// than wall time; with more, wall time.
#include <benchmark/benchmark.h>
#include <poseidon.hpp>
#include <poseidon/solver/sgd.hpp>
#include <poseidon/solver/solver_config.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

namespace pd = poseidon;

namespace {

std::string net_text(const std::string& name, int batch) {
  std::ifstream in(std::string(POSEIDON_SOURCE_DIR "/benchmarks/nets/") + name + ".prototxt");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.empty()) throw pd::Error("benchmarks/nets/" + name + ".prototxt not found");
  for (std::size_t p; (p = text.find("$BATCH")) != std::string::npos;) text.replace(p, 6, std::to_string(batch));
  return text;
}

// Caffe's usual settings for these nets: SGD with momentum and weight decay.
std::unique_ptr<pd::Solver<pd::CPU, float>> make_train_solver(const std::string& name, int batch,
                                                              std::shared_ptr<pd::DeviceContext<pd::CPU>> ctx,
                                                              std::ostream& log) {
  pd::Message solver;
  solver.add("net_param", pd::parse_prototxt(net_text(name, batch), name + ".prototxt"));
  solver.set("base_lr", 0.001).set("momentum", 0.9).set("weight_decay", 0.0005).set("lr_policy", "fixed");
  solver.set("max_iter", 1000000).set("display", 0);
  auto cfg = pd::SolverConfig::from_message(solver);
  auto s = pd::make_solver<pd::CPU, float>(cfg, pd::SolverOptions().log_to(log).with_metrics_csv({}), std::move(ctx));
  s->step(2);  // warm-up: first-touch allocations, BLAS buffers
  return s;
}

void BM_train_step(benchmark::State& state, const std::string& name) {
  const int batch = static_cast<int>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  auto ctx = std::make_shared<pd::DeviceContext<pd::CPU>>(threads);
  std::ostringstream quiet;
  auto s = make_train_solver(name, batch, ctx, quiet);
  for (auto _ : state) s->step(1);
  state.counters["images/s"] = benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(name + " B" + std::to_string(batch) + " T" + std::to_string(threads));
}

void args_lenet(benchmark::internal::Benchmark* b) { b->Args({64, 1})->Args({64, 2}); }
void args_cifar(benchmark::internal::Benchmark* b) { b->Args({100, 1})->Args({100, 2}); }
void args_alexnet(benchmark::internal::Benchmark* b) { b->Args({8, 1})->Args({8, 2})->Args({32, 1})->Args({32, 2}); }

BENCHMARK_CAPTURE(BM_train_step, lenet, std::string("lenet"))->Apply(args_lenet)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_train_step, cifar10_quick, std::string("cifar10_quick"))
    ->Apply(args_cifar)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_train_step, alexnet, std::string("alexnet"))
    ->Apply(args_alexnet)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

// The POSEIDON_PROFILE table: one step taken apart the way Solver::step runs it.
int profile(const std::string& spec) {
  std::istringstream in(spec);
  std::string name, field;
  std::vector<int> nums;
  std::getline(in, name, ':');
  while (std::getline(in, field, ':')) nums.push_back(std::atoi(field.c_str()));
  if (name.empty() || nums.size() < 2) {
    std::fprintf(stderr, "POSEIDON_PROFILE=net:batch:threads[:steps], e.g. cifar10_quick:100:1\n");
    return 2;
  }
  const int batch = nums[0], threads = nums[1], steps = nums.size() > 2 ? std::max(nums[2], 1) : 20;
  auto ctx = std::make_shared<pd::DeviceContext<pd::CPU>>(threads);
  std::ostringstream quiet;
  auto s = make_train_solver(name, batch, ctx, quiet);
  auto& net = s->net();
  const clockid_t clock = threads == 1 ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC;
  auto now_ms = [clock] {
    timespec t{};
    clock_gettime(clock, &t);
    return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_nsec) * 1e-6;
  };
  const auto layers = static_cast<std::size_t>(net.num_layers());
  std::vector<std::vector<double>> fwd(layers), bwd(layers);
  std::vector<double> clear, update, total;
  for (int it = 0; it < steps; ++it) {
    const double t0 = now_ms();
    net.clear_param_diffs();
    clear.push_back(now_ms() - t0);
    for (int i = 0; i < net.num_layers(); ++i) {
      const double a = now_ms();
      net.layer(i).forward(*ctx, net.bottom_vecs(i), net.top_vecs(i));
      fwd[static_cast<std::size_t>(i)].push_back(now_ms() - a);
    }
    for (int i = net.num_layers() - 1; i >= 0; --i) {
      const double a = now_ms();
      if (net.layer_need_backward(i))
        net.layer(i).backward(*ctx, net.top_vecs(i), net.bottom_need_backward(i), net.bottom_vecs(i));
      bwd[static_cast<std::size_t>(i)].push_back(now_ms() - a);
    }
    const double a = now_ms();
    s->apply_update();
    update.push_back(now_ms() - a);
    total.push_back(now_ms() - t0);
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::printf("%s B%d T%d, median of %d steps, ms of %s time\n", name.c_str(), batch, threads, steps,
              threads == 1 ? "CPU" : "wall");
  std::printf("  %-10s %-16s %9s %9s\n", "layer", "type", "forward", "backward");
  for (std::size_t i = 0; i < layers; ++i) {
    const auto& l = net.layer(static_cast<int>(i));
    std::printf("  %-10s %-16s %9.3f %9.3f\n", l.name().c_str(), std::string(l.type()).c_str(), median(fwd[i]),
                median(bwd[i]));
  }
  std::printf("  clear diffs %.3f, update %.3f, step %.3f\n", median(clear), median(update), median(total));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* spec = std::getenv("POSEIDON_PROFILE"); spec && *spec) return profile(spec);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
