// The LeNet example's --device cuda: the training template instantiated for the GPU. Compiled by
// nvcc only when POSEIDON_WITH_CUDA is on, so that the layers' CUDA kernels are registered.
#include "lenet.hpp"

#include <memory>

namespace lenet_example {

int train_cuda(const Options& o, const pd::SolverConfig& cfg) {
  auto ctx = std::make_shared<pd::DeviceContext<pd::CUDA>>(o.device_id, ex::seed_of(cfg));
  return train<pd::CUDA>(o, cfg, ctx, ex::describe(*ctx));
}

}  // namespace lenet_example
