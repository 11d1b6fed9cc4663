// Trains BVLC AlexNet (grouped convolutions, LRN, dropout) on synthetic ImageNet-shaped batches,
// or on a user's IDX files, on the CPU or (--device cuda) a GPU, and prints images/s; shows how
// to feed a net from your own source.
#include "alexnet.hpp"

#include <memory>

namespace pd = poseidon;
using namespace alexnet_example;

int main(int argc, char** argv) {
  return ex::run_main("poseidon_example_alexnet", [&] {
    const Options o = parse(argc, argv);
    o.check_built();
#if defined(POSEIDON_WITH_CUDA)
    if (o.device == "cuda") return train_cuda(o);
#endif
    auto ctx = std::make_shared<pd::DeviceContext<pd::CPU>>(o.threads);
    return train<pd::CPU>(o, ctx, ex::describe(*ctx));
  });
}
