// The CUDA side of the elementwise activations whose gradient depends on the output alone (Sigmoid,
// TanH): cuDNN's activation over the blob on ctx.stream(), a layer's own functors where cuDNN cannot.
#pragma once

#include <poseidon/core/context.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/cuda/cudnn_support.cuh>
#include <poseidon/layers/layer.hpp>

#include <cstddef>
#include <vector>

POSEIDON_NAMESPACE_BEGIN
namespace detail::gpu {

/// One cuDNN activation descriptor per layer (mode Mode); Kernel (forward(n, x, y), backward(n, y,
/// dy, dx)) runs tensors cuDNN cannot describe. In place is fine: cuDNN allows x == y and dy == dx,
/// and the gradient reads y only. A layer adds its parameters and type().
template <class T, class Kernel, cudnnActivationMode_t Mode>
class CudnnActivationLayer : public Layer<CUDA, T> {
  using Base = Layer<CUDA, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;
  using Base::Base;

  [[nodiscard]] int exact_num_bottom() const override { return 1; }
  [[nodiscard]] int exact_num_top() const override { return 1; }
  [[nodiscard]] bool supports_in_place() const override { return true; }
  /// Whether the passes run on cuDNN (every tensor cuDNN can describe).
  [[nodiscard]] bool uses_cudnn() const { return cudnn_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    if (top[0] != bottom[0]) top[0]->reshape(bottom[0]->shape());
    const std::size_t n = bottom[0]->count();
    cudnn_ = cudnn_describable(n);
    if (cudnn_) act_.set_count(n);
  }

 protected:
  void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) override {
    if (cudnn_)
      act_.forward(ctx.cudnn(), bottom[0]->data(), top[0]->data());
    else
      Kernel::forward(bottom[0]->count(), bottom[0]->data(), top[0]->data());
  }

  void backward_impl(Context& ctx, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    if (!propagate_down[0]) return;
    if (cudnn_)
      // x is passed as Caffe's cuDNN layers pass it (in place it is the top itself); only y is read.
      act_.backward(ctx.cudnn(), top[0]->data(), top[0]->diff(), bottom[0]->data(), bottom[0]->diff());
    else
      Kernel::backward(top[0]->count(), top[0]->data(), top[0]->diff(), bottom[0]->diff());
  }

 private:
  bool cudnn_ = false;
  CudnnActivation<T> act_{Mode};
};

}  // namespace detail::gpu
POSEIDON_NAMESPACE_END
