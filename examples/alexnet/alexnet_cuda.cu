// The AlexNet example's --device cuda: the training template instantiated for the GPU. Compiled
// by nvcc only when POSEIDON_WITH_CUDA is on, so that the layers' CUDA kernels are registered.
#include "alexnet.hpp"

#include <cuda_runtime.h>

#include <memory>
#include <string>

namespace alexnet_example {

int train_cuda(const Options& o) {
  auto ctx = std::make_shared<pd::DeviceContext<pd::CUDA>>(o.device_id);
  cudaDeviceProp prop{};
  POSEIDON_CUDA_CHECK(cudaGetDeviceProperties(&prop, o.device_id));
  return train<pd::CUDA>(o, ctx, "GPU " + std::to_string(o.device_id) + " (" + prop.name + ")");
}

}  // namespace alexnet_example
