// Trains Caffe's CIFAR-10 quick net with Caffe's solver settings on the CIFAR-10 binary files, or
// on synthetic DummyData batches of the same shapes when there are none, on the CPU or
// (--device cuda) a GPU; `--help` lists the options.
#include "cifar10_train.hpp"

#include <memory>

namespace pd = poseidon;
using namespace cifar10_example;

int main(int argc, char** argv) {
  return ex::run_main("poseidon_example_cifar10", [&] {
    const Options o = parse(argc, argv);
    o.check_built();
    const DataChoice data = choose_data(o);
    int batch = 0;
    const auto cfg = solver_config(o, data, batch);

#if defined(POSEIDON_WITH_CUDA)
    if (o.device == "cuda") return train_cuda(o, cfg, data, batch);
#endif
    auto ctx = std::make_shared<pd::DeviceContext<pd::CPU>>(o.threads, ex::seed_of(cfg));
    return train<pd::CPU>(cfg, data, batch, ctx, ex::describe(*ctx));
  });
}
