// Trains Caffe's LeNet on Fashion-MNIST with Caffe's solver settings and reports the test
// accuracy after every epoch, on the CPU or (--device cuda) a GPU; `--help` lists the options.
#include "lenet.hpp"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>

namespace pd = poseidon;
using namespace lenet_example;

int main(int argc, char** argv) try {
  const Options o = parse(argc, argv);
#if !defined(POSEIDON_WITH_CUDA)
  if (o.device == "cuda")
    throw pd::Error("--device cuda: this binary was built without CUDA (POSEIDON_WITH_CUDA is OFF); rebuild with "
                    "nvcc installed and -DPOSEIDON_WITH_CUDA=ON, or use --device cpu");
#endif
  check_data(o.data);
  // The net's IdxData layers resolve their relative file names in POSEIDON_DATA_DIR.
  ::setenv("POSEIDON_DATA_DIR", o.data.c_str(), 1);
  const auto cfg = solver_config(o);

#if defined(POSEIDON_WITH_CUDA)
  if (o.device == "cuda") return train_cuda(o, cfg);
#endif
  auto ctx = std::make_shared<pd::DeviceContext<pd::CPU>>(o.threads, seed_of(cfg));
  return train<pd::CPU>(o, cfg, ctx, std::to_string(ctx->threads()) + " threads");
} catch (const std::exception& e) {
  std::fprintf(stderr, "poseidon_example_lenet: %s\n", e.what());
  return 1;
}
