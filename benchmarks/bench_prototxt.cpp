// Parsing speed of the prototxt reader on Caffe's AlexNet train_val.prototxt (26 layers).
#include <benchmark/benchmark.h>
#include <poseidon/net/prototxt.hpp>

#include <fstream>
#include <iterator>
#include <string>

namespace {
void BM_parse_alexnet(benchmark::State& state) {
  std::ifstream in(POSEIDON_SOURCE_DIR "/tests/net/data/bvlc_alexnet_train_val.prototxt");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.empty()) {
    state.SkipWithError("tests/net/data/bvlc_alexnet_train_val.prototxt not found");
    return;
  }
  for (auto _ : state) benchmark::DoNotOptimize(poseidon::parse_prototxt(text, "train_val.prototxt"));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(text.size()));
}
BENCHMARK(BM_parse_alexnet);
}  // namespace

BENCHMARK_MAIN();
