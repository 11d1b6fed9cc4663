// Trains Caffe's CIFAR-10 quick net with Caffe's solver settings on the CIFAR-10 binary files, or
// on synthetic DummyData batches of the same shapes when there are none, on the CPU or
// (--device cuda) a GPU; `--help` lists the options.
#include "cifar10_train.hpp"

#include <cstdio>
#include <exception>
#include <memory>
#include <string>

namespace pd = poseidon;
using namespace cifar10_example;

int main(int argc, char** argv) try {
  const Options o = parse(argc, argv);
#if !defined(POSEIDON_WITH_CUDA)
  if (o.device == "cuda")
    throw pd::Error("--device cuda: this binary was built without CUDA (POSEIDON_WITH_CUDA is OFF); rebuild with "
                    "nvcc installed and -DPOSEIDON_WITH_CUDA=ON, or use --device cpu");
#endif
  const DataChoice data = choose_data(o);
  int batch = 0;
  const auto cfg = solver_config(o, data, batch);

#if defined(POSEIDON_WITH_CUDA)
  if (o.device == "cuda") return train_cuda(o, cfg, data, batch);
#endif
  auto ctx = std::make_shared<pd::DeviceContext<pd::CPU>>(o.threads, seed_of(cfg));
  return train<pd::CPU>(cfg, data, batch, ctx, std::to_string(ctx->threads()) + " threads");
} catch (const std::exception& e) {
  std::fprintf(stderr, "poseidon_example_cifar10: %s\n", e.what());
  return 1;
}
