// Full training steps (forward, backward, SGD update) of LeNet B64, CIFAR-10 quick B100 and
// AlexNet B8/B32 on 1 and 2 threads; compare_pytorch.py runs the same nets in PyTorch.
#include <benchmark/benchmark.h>
#include <poseidon.hpp>
#include <poseidon/solver/sgd.hpp>
#include <poseidon/solver/solver_config.hpp>

#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

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
void BM_train_step(benchmark::State& state, const std::string& name) {
  const int batch = static_cast<int>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  pd::Message solver;
  solver.add("net_param", pd::parse_prototxt(net_text(name, batch), name + ".prototxt"));
  solver.set("base_lr", 0.001).set("momentum", 0.9).set("weight_decay", 0.0005).set("lr_policy", "fixed");
  solver.set("max_iter", 1000000).set("display", 0);
  auto cfg = pd::SolverConfig::from_message(solver);
  auto ctx = std::make_shared<pd::DeviceContext<pd::CPU>>(threads);
  std::ostringstream quiet;
  auto s = pd::make_solver<pd::CPU, float>(cfg, pd::SolverOptions().log_to(quiet).with_metrics_csv({}), ctx);
  s->step(2);  // warm-up: first-touch allocations, BLAS buffers
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

}  // namespace

BENCHMARK_MAIN();
