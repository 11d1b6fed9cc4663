// SoftmaxWithLoss on CUDA: the Softmax layer's cuDNN path for the probabilities, a deterministic
// one-block reduction for the loss, and an elementwise gradient.
#pragma once

#include <poseidon/core/context.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/memory.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/cuda/cudnn_support.cuh>
#include <poseidon/layers/cuda/kernel_support.cuh>
#include <poseidon/layers/cuda/softmax.cuh>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/layers/softmax_loss.hpp>
#include <poseidon/math/blas.hpp>

#include <algorithm>
#include <cfloat>
#include <cstddef>
#include <optional>
#include <string_view>
#include <vector>

POSEIDON_NAMESPACE_BEGIN
namespace detail {
namespace gpu {
// One block: the order of the additions is fixed, so the loss is identical from run to run.
template <class T>
__global__ void softmax_loss_sum_kernel(std::size_t outer, std::size_t channels, std::size_t inner, const T* prob,
                                        const T* label, bool has_ignore, int ignore, double* out) {
  double sum = 0, valid = 0;
  const std::size_t n = outer * inner;
  for (std::size_t t = threadIdx.x; t < n; t += blockDim.x) {
    const T l = label[t];
    if (has_ignore && static_cast<double>(l) == static_cast<double>(ignore)) continue;
    const auto c = static_cast<std::size_t>(l);
    const T p = prob[((t / inner) * channels + c) * inner + t % inner];
    // FLT_MIN for both types, as the CPU (and Caffe): a certain wrong prediction costs ~87.3.
    sum -= ::log(::fmax(static_cast<double>(p), static_cast<double>(FLT_MIN)));
    valid += 1;
  }
  sum = block_sum(sum);
  valid = block_sum(valid);
  if (threadIdx.x == 0) {
    out[0] = sum;
    out[1] = valid;
  }
}

template <class T>
struct SoftmaxLossBackwardOp {
  std::size_t channels, inner;
  const T* prob;
  const T* label;
  bool has_ignore;
  int ignore;
  T scale;
  T* dx;
  __device__ void operator()(std::size_t i) const {
    const std::size_t dim = channels * inner;
    const std::size_t n = i / dim, c = (i % dim) / inner, k = i % inner;
    const T l = label[n * inner + k];
    if (has_ignore && static_cast<double>(l) == static_cast<double>(ignore)) {
      dx[i] = T(0);
      return;
    }
    T v = scale * prob[i];
    if (c == static_cast<std::size_t>(l)) v -= scale;
    dx[i] = v;
  }
};
}  // namespace gpu

/// Same interface as SoftmaxLossKernel<CPU, T>; every pointer is device memory. loss() and
/// find_bad_label() return to the host, so they wait for the device. softmax() is the fallback for
/// tensors cuDNN cannot describe.
template <class T>
struct SoftmaxLossKernel<CUDA, T> {
  static void softmax(std::size_t outer, std::size_t channels, std::size_t inner, const T* x, T* prob, T* /*scratch*/) {
    gpu::for_each_index(outer * inner, gpu::SoftmaxForwardOp<T>{channels, inner, x, prob});
  }
  static BadLabel find_bad_label(std::size_t n, const T* label, std::size_t channels,
                                 const std::optional<int>& ignore) {
    const gpu::LabelCheck r = gpu::find_bad_label(n, label, channels, ignore);
    return {r.found, r.index, r.value};
  }
  static double loss(std::size_t outer, std::size_t channels, std::size_t inner, const T* prob, const T* label,
                     const std::optional<int>& ignore, std::size_t& valid) {
    valid = 0;
    if (outer * inner == 0) return 0;
    Buffer<CUDA> out(2 * sizeof(double));
    auto* o = static_cast<double*>(out.get());
    gpu::launch_blocks(gpu::softmax_loss_sum_kernel<T>, 1, outer, channels, inner, prob, label, ignore.has_value(),
                       ignore.value_or(0), o);
    double host[2] = {0, 0};
    gpu::read_back(host, o, 2);
    valid = static_cast<std::size_t>(host[1]);
    return host[0];
  }
  /// dx = scale * (prob - onehot(label)), zero at ignored positions.
  static void backward(std::size_t outer, std::size_t channels, std::size_t inner, const T* prob, const T* label,
                       const std::optional<int>& ignore, T scale, T* dx) {
    gpu::for_each_index(outer * channels * inner, gpu::SoftmaxLossBackwardOp<T>{channels, inner, prob, label,
                                                                                ignore.has_value(), ignore.value_or(0),
                                                                                scale, dx});
  }
};
}  // namespace detail

/// The CUDA SoftmaxWithLoss: the CPU layer's parameters, checks, normalisation and tops, with the
/// probabilities from the Softmax layer's cuDNN path (detail::gpu::CudnnSoftmax, on ctx.stream())
/// and the loss, label checks and gradient from SoftmaxLossKernel<CUDA, T> above. A whole-layer
/// specialisation because the kernel interface carries no DeviceContext (no cuDNN handle).
template <class T>
class SoftmaxWithLossLayer<CUDA, T> final : public Layer<CUDA, T> {
  using Base = Layer<CUDA, T>;
  using Kernel = detail::SoftmaxLossKernel<CUDA, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit SoftmaxWithLossLayer(const LayerParameter& p)
      : Base(p),
        softmax_axis_param_(read_axis(p)),
        lp_(LossParam::from_message(p.sub("loss_param"), p.describe() + " loss_param")) {}
  SoftmaxWithLossLayer(const LayerParameter& p, int softmax_axis, LossParam lp)
      : Base(p), softmax_axis_param_(softmax_axis), lp_(lp) {}

  [[nodiscard]] std::string_view type() const override { return "SoftmaxWithLoss"; }
  [[nodiscard]] int exact_num_bottom() const override { return 2; }
  [[nodiscard]] int min_num_top() const override { return 1; }
  [[nodiscard]] int max_num_top() const override { return 2; }
  [[nodiscard]] bool is_loss() const override { return true; }
  [[nodiscard]] bool allow_backward_to(int bottom_index) const override { return bottom_index == 0; }
  [[nodiscard]] const LossParam& loss_param() const { return lp_; }
  /// The canonical softmax axis for the current bottom (valid after setup).
  [[nodiscard]] int axis() const { return axis_; }
  /// The softmax of the last forward (what the optional second top shows).
  [[nodiscard]] const Tensor<CUDA, T>& prob() const { return prob_; }
  /// Whether the probabilities come from cuDNN (every non-empty tensor of at most INT_MAX values).
  [[nodiscard]] bool uses_cudnn() const { return cudnn_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    const auto& x = *bottom[0];
    const auto& label = *bottom[1];
    const int n = x.num_axes();
    this->check(softmax_axis_param_ >= -n && softmax_axis_param_ < n, "softmax_param axis ", softmax_axis_param_,
                " is out of range for bottom 0 ('", this->name_of_bottom(0), "') of shape ", x.shape().str());
    axis_ = softmax_axis_param_ < 0 ? softmax_axis_param_ + n : softmax_axis_param_;
    outer_ = x.count(0, axis_);
    channels_ = static_cast<std::size_t>(x.shape(axis_));
    inner_ = x.count(axis_ + 1);
    this->check(channels_ > 0, "bottom 0 ('", this->name_of_bottom(0), "') of shape ", x.shape().str(),
                " has no classes along softmax axis ", axis_);
    this->check(label.count() == outer_ * inner_, "bottom 1 ('", this->name_of_bottom(1), "') of shape ",
                label.shape().str(), " has ", label.count(), " labels; bottom 0 ('", this->name_of_bottom(0),
                "') of shape ", x.shape().str(), " needs one per position outside softmax axis ", axis_, ": ",
                outer_ * inner_);
    top[0]->reshape(Shape());
    prob_.reshape(x.shape());
    if (top.size() > 1) {
      top[1]->reshape(x.shape());
      top[1]->share_data(prob_);
    }
    cudnn_ = softmax_.set(outer_, channels_, inner_);
  }

 protected:
  void layer_setup(Context&, const Vec&, const Vec& top) override {
    const auto& w = this->param().loss_weight;
    // Caffe never backpropagates through the probabilities, so a loss on them would be silently wrong.
    this->check(!(top.size() > 1 && w.size() > 1 && w[1] != 0.0f), "the probability top '", this->name_of_top(1),
                "' cannot carry a loss_weight (got ", w.size() > 1 ? w[1] : 0.0f, ")");
  }

  void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) override {
    check_labels(*bottom[1]);
    // prob_ is the layer's own tensor: it never aliases the bottom.
    if (cudnn_)
      softmax_.forward(ctx.cudnn(), bottom[0]->data(), prob_.data());
    else if (outer_ * channels_ * inner_ > 0)
      Kernel::softmax(outer_, channels_, inner_, bottom[0]->data(), prob_.data(), nullptr);
    std::size_t valid = 0;
    const double sum = Kernel::loss(outer_, channels_, inner_, prob_.data(), bottom[1]->data(), lp_.ignore_label, valid);
    math::set(ctx, 1, static_cast<T>(sum / normalizer(valid)), top[0]->data());
    valid_ = valid;
  }

  void backward_impl(Context&, const Vec& top, const std::vector<bool>& propagate_down, const Vec& bottom) override {
    if (!propagate_down[0]) return;
    check_labels(*bottom[1]);  // the labels may have been replaced since forward
    // The top diff holds the loss weight (Caffe's SetLossWeights), or what a caller put there.
    T top_diff{};
    copy_bytes<CPU, CUDA>(&top_diff, top[0]->diff(), sizeof(T));
    const T scale = static_cast<T>(static_cast<double>(top_diff) / normalizer(valid_));
    Kernel::backward(outer_, channels_, inner_, prob_.data(), bottom[1]->data(), lp_.ignore_label, scale,
                     bottom[0]->diff());
  }

 private:
  static int read_axis(const LayerParameter& p) {
    const Message& m = p.sub("softmax_param");
    m.check_fields({"engine", "axis"}, p.describe() + " softmax_param");
    (void)m.get_enum("engine", {"DEFAULT", "CAFFE", "CUDNN"}, 0);  // validated, then ignored
    return m.get("axis", 1);
  }

  void check_labels(const Tensor<CUDA, T>& label) const {
    const detail::BadLabel bad = Kernel::find_bad_label(label.count(), label.data(), channels_, lp_.ignore_label);
    if (bad.found)
      this->fail("label ", bad.value, " at index ", bad.index, " (sample ", bad.index / inner_, ", position ",
                 bad.index % inner_, ") of bottom 1 ('", this->name_of_bottom(1), "') is not a class in [0, ",
                 channels_, ")", lp_.ignore_label ? detail::concat(" nor the ignore_label ", *lp_.ignore_label) : "");
  }

  // Caffe's get_normalizer, clamped to at least 1 so that an all-ignored batch gives loss 0, not NaN.
  [[nodiscard]] double normalizer(std::size_t valid) const {
    double n = 1;
    switch (lp_.normalization) {
      case LossParam::Normalization::full: n = static_cast<double>(outer_ * inner_); break;
      case LossParam::Normalization::valid: n = static_cast<double>(valid); break;
      case LossParam::Normalization::batch_size: n = static_cast<double>(outer_); break;
      case LossParam::Normalization::none: n = 1; break;
    }
    return std::max(1.0, n);
  }

  int softmax_axis_param_ = 1;
  LossParam lp_;
  int axis_ = 1;
  std::size_t outer_ = 0, channels_ = 0, inner_ = 0;
  std::size_t valid_ = 0;  // labels counted by the last forward (the VALID normalizer)
  bool cudnn_ = false;
  detail::gpu::CudnnSoftmax<T> softmax_;
  Tensor<CUDA, T> prob_;
};

POSEIDON_REGISTER_LAYER_CUDA("SoftmaxWithLoss", SoftmaxWithLossLayer)

POSEIDON_NAMESPACE_END
