// The AlexNet example's --device cuda: the training template instantiated for the GPU. Compiled
// by nvcc only when POSEIDON_WITH_CUDA is on, so that the layers' CUDA kernels are registered.
#include "alexnet.hpp"

#include <memory>

namespace alexnet_example {

int train_cuda(const Options& o) {
  auto ctx = std::make_shared<pd::DeviceContext<pd::CUDA>>(o.device_id);
  return train<pd::CUDA>(o, ctx, ex::describe(*ctx));
}

}  // namespace alexnet_example
