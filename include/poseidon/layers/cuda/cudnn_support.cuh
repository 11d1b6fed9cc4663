// cuDNN plumbing shared by the CUDA layers (layers/cuda/*.cuh): descriptor owners, the data and
// scaling-factor types for T, packed 4-d tensor views, and one elementwise activation. nvcc only.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/cuda/check.cuh>

#include <cudnn.h>

#include <climits>
#include <cstddef>
#include <memory>
#include <type_traits>

POSEIDON_NAMESPACE_BEGIN
namespace detail::gpu {

template <class T>
inline constexpr cudnnDataType_t cudnn_data_type = std::is_same_v<T, double> ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;

/// The type cuDNN reads its host alpha/beta factors as: double for double data, float otherwise.
template <class T>
using CudnnScalar = std::conditional_t<std::is_same_v<T, double>, double, float>;

/// Owns one cuDNN descriptor (created on construction, destroyed with the object).
template <class H, cudnnStatus_t (*Create)(H*), cudnnStatus_t (*Destroy)(H)>
class CudnnDescriptor {
 public:
  CudnnDescriptor() { POSEIDON_CUDNN_CHECK(Create(&h_)); }
  ~CudnnDescriptor() {
    if (h_) (void)Destroy(h_);
  }
  CudnnDescriptor(const CudnnDescriptor&) = delete;
  CudnnDescriptor& operator=(const CudnnDescriptor&) = delete;
  [[nodiscard]] H get() const { return h_; }

 private:
  H h_ = nullptr;
};

using CudnnTensorDesc =
    CudnnDescriptor<cudnnTensorDescriptor_t, &cudnnCreateTensorDescriptor, &cudnnDestroyTensorDescriptor>;
using CudnnFilterDesc =
    CudnnDescriptor<cudnnFilterDescriptor_t, &cudnnCreateFilterDescriptor, &cudnnDestroyFilterDescriptor>;
using CudnnConvDesc = CudnnDescriptor<cudnnConvolutionDescriptor_t, &cudnnCreateConvolutionDescriptor,
                                      &cudnnDestroyConvolutionDescriptor>;
using CudnnActivationDesc = CudnnDescriptor<cudnnActivationDescriptor_t, &cudnnCreateActivationDescriptor,
                                            &cudnnDestroyActivationDescriptor>;

/// Whether a packed tensor of `count` values can be described to cuDNN: its dimensions and
/// strides are ints. Larger tensors (and empty ones, which cuDNN rejects) take the own kernels.
inline bool cudnn_describable(std::size_t count) { return count > 0 && count <= static_cast<std::size_t>(INT_MAX); }

/// Sets d to a packed NCHW tensor of T; the caller checked cudnn_describable(n * c * h * w).
template <class T>
void set_tensor_4d(cudnnTensorDescriptor_t d, std::size_t n, std::size_t c, std::size_t h, std::size_t w) {
  POSEIDON_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW, cudnn_data_type<T>, static_cast<int>(n),
                                                  static_cast<int>(c), static_cast<int>(h), static_cast<int>(w)));
}

/// One cuDNN elementwise activation (ReLU, sigmoid or tanh) over a flat tensor of `count` values,
/// described as 1 x 1 x 1 x count: the layers' blobs may have any number of axes, and an
/// elementwise function does not care. Descriptors are created on first use (a layer object can
/// exist, e.g. in a registry listing, without cuDNN being touched).
template <class T>
class CudnnActivation {
 public:
  explicit CudnnActivation(cudnnActivationMode_t mode) : mode_(mode) {}

  /// Describes a tensor of count values (cudnn_describable(count) must hold).
  void set_count(std::size_t count) {
    if (!act_) {
      act_ = std::make_unique<CudnnActivationDesc>();
      desc_ = std::make_unique<CudnnTensorDesc>();
      // NaN propagates, as on the CPU (x > 0 ? x : 0 * x keeps a NaN); coef is unused by these modes.
      POSEIDON_CUDNN_CHECK(cudnnSetActivationDescriptor(act_->get(), mode_, CUDNN_PROPAGATE_NAN, 0.0));
    }
    if (count == count_) return;
    set_tensor_4d<T>(desc_->get(), 1, 1, 1, count);
    count_ = count;
  }

  /// y = f(x). cuDNN allows x == y (identical descriptors): the layers run in place.
  void forward(cudnnHandle_t h, const T* x, T* y) const {
    const CudnnScalar<T> one = 1, zero = 0;
    POSEIDON_CUDNN_CHECK(cudnnActivationForward(h, act_->get(), &one, desc_->get(), x, &zero, desc_->get(), y));
  }

  /// dx = f'(x) dy from the forward's y and x. cuDNN allows dy == dx. In place, x is the top (y)
  /// itself: sigmoid and tanh read only y, and ReLU's test x > 0 gives the same answer on y = max(x, 0).
  void backward(cudnnHandle_t h, const T* y, const T* dy, const T* x, T* dx) const {
    const CudnnScalar<T> one = 1, zero = 0;
    POSEIDON_CUDNN_CHECK(cudnnActivationBackward(h, act_->get(), &one, desc_->get(), y, desc_->get(), dy,
                                                 desc_->get(), x, &zero, desc_->get(), dx));
  }

 private:
  cudnnActivationMode_t mode_;
  std::size_t count_ = 0;
  std::unique_ptr<CudnnActivationDesc> act_;
  std::unique_ptr<CudnnTensorDesc> desc_;
};

}  // namespace detail::gpu
POSEIDON_NAMESPACE_END
