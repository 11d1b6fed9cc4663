// The CIFAR-10 example's --device cuda: the training template instantiated for the GPU. Compiled by
// nvcc only when POSEIDON_WITH_CUDA is on, so that the layers' CUDA kernels are registered.
#include "cifar10_train.hpp"

#include <memory>

namespace cifar10_example {

int train_cuda(const Options& o, const pd::SolverConfig& cfg, const DataChoice& data, int batch) {
  auto ctx = std::make_shared<pd::DeviceContext<pd::CUDA>>(o.device_id, ex::seed_of(cfg));
  return train<pd::CUDA>(cfg, data, batch, ctx, ex::describe(*ctx));
}

}  // namespace cifar10_example
