// Trains BVLC AlexNet (grouped convolutions, LRN, dropout) on synthetic ImageNet-shaped batches,
// or on a user's IDX files, on the CPU or (--device cuda) a GPU, and prints images/s; shows how
// to feed a net from your own source.
#include "alexnet.hpp"

#include <cstdio>
#include <exception>
#include <memory>
#include <string>

namespace pd = poseidon;
using namespace alexnet_example;

int main(int argc, char** argv) try {
  const Options o = parse(argc, argv);
  if (o.device == "cuda") {
#if defined(POSEIDON_WITH_CUDA)
    return train_cuda(o);
#else
    throw pd::Error("--device cuda: this binary was built without CUDA (POSEIDON_WITH_CUDA is OFF); rebuild with "
                    "nvcc installed and -DPOSEIDON_WITH_CUDA=ON, or use --device cpu");
#endif
  }
  auto ctx = std::make_shared<pd::DeviceContext<pd::CPU>>(o.threads);
  return train<pd::CPU>(o, ctx, std::to_string(ctx->threads()) + " threads");
} catch (const std::exception& e) {
  std::fprintf(stderr, "poseidon_example_alexnet: %s\n", e.what());
  return 1;
}
