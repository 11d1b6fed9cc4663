// Trains Caffe's LeNet on Fashion-MNIST with Caffe's solver settings and reports the test
// accuracy after every epoch, on the CPU or (--device cuda) a GPU; `--help` lists the options.
#include "lenet.hpp"

#include <cstdlib>
#include <memory>

namespace pd = poseidon;
using namespace lenet_example;

int main(int argc, char** argv) {
  return ex::run_main("poseidon_example_lenet", [&] {
    const Options o = parse(argc, argv);
    o.check_built();
    check_data(o.data);
    // The net's IdxData layers resolve their relative file names in POSEIDON_DATA_DIR.
    ::setenv("POSEIDON_DATA_DIR", o.data.c_str(), 1);
    const auto cfg = solver_config(o);

#if defined(POSEIDON_WITH_CUDA)
    if (o.device == "cuda") return train_cuda(o, cfg);
#endif
    auto ctx = std::make_shared<pd::DeviceContext<pd::CPU>>(o.threads, ex::seed_of(cfg));
    return train<pd::CPU>(o, cfg, ctx, ex::describe(*ctx));
  });
}
