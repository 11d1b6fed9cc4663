// Convolution on CUDA: cuDNN's forward, backward-data and backward-filter with algorithms chosen once
// per input shape (heuristics, or timed by find mode) under a workspace limit; nvcc only.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/context.hpp>
#include <poseidon/core/cuda/check.cuh>
#include <poseidon/core/device.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/filler.hpp>
#include <poseidon/core/memory.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/convolution.hpp>
#include <poseidon/layers/cuda/cudnn_support.cuh>
#include <poseidon/layers/cuda/kernel_support.cuh>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>

#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

/// How the CUDA convolution chooses its cuDNN algorithms. Set per layer with
/// ConvolutionLayer<CUDA, T>::set_cudnn_options; nets built from prototxt take the defaults, whose
/// workspace limit POSEIDON_CUDNN_WORKSPACE_MB and find mode POSEIDON_CUDNN_FIND override.
struct ConvolutionCudnnOptions {
  static constexpr std::size_t default_workspace_limit = std::size_t(64) << 20;

  /// Most bytes of scratch one layer may hold: the largest of its three algorithms' needs.
  std::size_t workspace_limit = default_workspace_limit;
  /// Only algorithms that give the same bits on every run (no atomics), where one fits the limit:
  /// the design's run-to-run reproducibility. False lets the heuristics' fastest choice win.
  bool deterministic = true;
  /// float only: allow TF32 tensor cores (Ampere and later), about 1e-3 relative error per
  /// product instead of float's 6e-8. Off: cuDNN is held to FMA kernels (CUDNN_FMA_MATH).
  bool allow_tf32 = false;
  /// Time the candidates with cudnnFind*AlgorithmEx (once per input shape, on scratch outputs)
  /// instead of taking the heuristics' ranking; the same filters (math type, determinism,
  /// workspace limit) apply to the measured ranking. Costs a few runs of every algorithm at each
  /// new shape and, for that moment, scratch of the workspace limit plus the output sizes.
  bool find = false;

  /// The defaults, with the workspace limit from POSEIDON_CUDNN_WORKSPACE_MB and find mode from
  /// POSEIDON_CUDNN_FIND (1 on, 0 or empty off) when they are set.
  static ConvolutionCudnnOptions from_env() {
    ConvolutionCudnnOptions o;
    if (const char* f = std::getenv("POSEIDON_CUDNN_FIND"); f && *f) {
      const std::string_view v(f);
      POSEIDON_CHECK(v == "0" || v == "1", "POSEIDON_CUDNN_FIND='", v, "' must be 0 or 1");
      o.find = v == "1";
    }
    if (const char* mb = std::getenv("POSEIDON_CUDNN_WORKSPACE_MB"); mb && *mb) {
      char* end = nullptr;
      errno = 0;
      const unsigned long long v = std::strtoull(mb, &end, 10);
      POSEIDON_CHECK(end && *end == '\0' && errno == 0 && mb[0] != '-' && v <= (std::size_t(1) << 24),
                     "POSEIDON_CUDNN_WORKSPACE_MB='", mb, "' is not a number of MiB in [0, 16777216]");
      o.workspace_limit = static_cast<std::size_t>(v) << 20;
    }
    return o;
  }
};

namespace detail::gpu {

/// db[c] += the sum of dy over samples and positions of channel c: one block per channel, summed
/// in double in an order fixed by the block shape (the same bits on every run).
template <class T>
__global__ void conv_bias_grad_kernel(int num, int channels, std::size_t plane, const T* dy, T* db) {
  const int c = static_cast<int>(blockIdx.x);
  double v = 0;
  for (int n = 0; n < num; ++n) {
    const T* row = dy + (static_cast<std::size_t>(n) * static_cast<std::size_t>(channels) +
                         static_cast<std::size_t>(c)) * plane;
    for (std::size_t p = threadIdx.x; p < plane; p += blockDim.x) v += static_cast<double>(row[p]);
  }
  const double total = block_sum(v);
  if (threadIdx.x == 0) db[c] = static_cast<T>(static_cast<double>(db[c]) + total);
}

}  // namespace detail::gpu

/// The CUDA convolution: Caffe's cross-correlation with pad, stride, dilation and groups, run by
/// cuDNN (groups through cudnnSetConvolutionGroupCount). The learnable blobs, their shapes and the
/// parameter errors are the CPU layer's, so snapshots and prototxt move between devices.
template <class T>
class ConvolutionLayer<CUDA, T> final : public Layer<CUDA, T> {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cuDNN convolution: float or double");
  using Base = Layer<CUDA, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  /// One chosen cuDNN algorithm: its id, the math type it runs with, its workspace, whether its
  /// results are reproducible bit for bit, and (find mode) the milliseconds cuDNN measured.
  struct Choice {
    int algo = -1;
    cudnnMathType_t math = CUDNN_DEFAULT_MATH;
    std::size_t workspace = 0;
    bool deterministic = true;
    float time_ms = -1;  // -1: chosen by the heuristics, not timed
  };
  struct Algorithms {
    Choice forward, backward_data, backward_filter;
    [[nodiscard]] std::size_t workspace() const {
      return std::max({forward.workspace, backward_data.workspace, backward_filter.workspace});
    }
  };

  explicit ConvolutionLayer(const LayerParameter& p)
      : Base(p),
        cp_(ConvolutionParam::from_message(p.sub("convolution_param"), p.describe() + " convolution_param")),
        opt_(ConvolutionCudnnOptions::from_env()) {}
  ConvolutionLayer(const LayerParameter& p, ConvolutionParam cp)
      : Base(p), cp_(std::move(cp)), opt_(ConvolutionCudnnOptions::from_env()) {}

  [[nodiscard]] std::string_view type() const override { return "Convolution"; }
  [[nodiscard]] int min_num_bottom() const override { return 1; }
  [[nodiscard]] int min_num_top() const override { return 1; }
  [[nodiscard]] bool equal_num_bottom_top() const override { return true; }
  [[nodiscard]] const ConvolutionParam& convolution_param() const { return cp_; }

  [[nodiscard]] const ConvolutionCudnnOptions& cudnn_options() const { return opt_; }
  /// New options apply from the next pass: the algorithms are chosen again for every shape.
  void set_cudnn_options(const ConvolutionCudnnOptions& o) {
    opt_ = o;
    cache_.clear();
    current_ = nullptr;
  }
  /// The algorithms of the last pass (empty choices before the first).
  [[nodiscard]] Algorithms algorithms() const { return current_ ? *current_ : Algorithms{}; }
  /// Bytes of workspace the layer holds (it only grows, at new shapes).
  [[nodiscard]] std::size_t workspace_bytes() const { return workspace_.bytes(); }

  void reshape(const Vec& bottom, const Vec& top) override {
    const auto& b0 = *bottom[0];
    this->check_axes(b0, 0, 4, 4);
    for (std::size_t i = 1; i < bottom.size(); ++i)
      this->check(bottom[i]->shape() == b0.shape(), "bottom ", i, " ('", this->name_of_bottom(i), "') has shape ",
                  bottom[i]->shape().str(), " but bottom 0 has ", b0.shape().str(), "; all bottoms must match");
    this->check(b0.shape(1) == channels_, "bottom '", this->name_of_bottom(0), "' of shape ", b0.shape().str(),
                " has ", b0.shape(1), " channels; the weights expect ", channels_);
    const int height = b0.shape(2), width = b0.shape(3);
    const int ext_h = cp_.dilation_h * (cp_.kernel_h - 1) + 1;
    const int ext_w = cp_.dilation_w * (cp_.kernel_w - 1) + 1;
    this->check(ext_h <= height + 2 * cp_.pad_h && ext_w <= width + 2 * cp_.pad_w, "kernel ", cp_.kernel_h, "x",
                cp_.kernel_w, " (dilated extent ", ext_h, "x", ext_w, ") is larger than the padded input ",
                height + 2 * cp_.pad_h, "x", width + 2 * cp_.pad_w, " of bottom '", this->name_of_bottom(0), "' ",
                b0.shape().str());
    const int out_h = (height + 2 * cp_.pad_h - ext_h) / cp_.stride_h + 1;
    const int out_w = (width + 2 * cp_.pad_w - ext_w) / cp_.stride_w + 1;
    for (auto* t : top) t->reshape(Shape{b0.shape(0), cp_.num_output, out_h, out_w});
    const std::array<int, 3> key{b0.shape(0), height, width};
    if (key == key_) return;
    key_ = key;
    num_ = key[0];
    out_h_ = out_h;
    out_w_ = out_w;
    current_ = nullptr;
    if (num_ == 0) return;  // cuDNN takes no empty tensors; the passes do nothing
    constexpr cudnnDataType_t dt = detail::gpu::cudnn_data_type<T>;
    POSEIDON_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x_desc_->get(), CUDNN_TENSOR_NCHW, dt, num_, channels_, height, width));
    POSEIDON_CUDNN_CHECK(
        cudnnSetTensor4dDescriptor(y_desc_->get(), CUDNN_TENSOR_NCHW, dt, num_, cp_.num_output, out_h_, out_w_));
  }

 protected:
  void layer_setup(Context& ctx, const Vec& bottom, const Vec&) override {
    // The CPU layer's checks and messages: a prototxt fails the same way on either device.
    this->check(cp_.num_output > 0, "num_output must be positive, got ", cp_.num_output);
    this->check(cp_.kernel_h > 0 && cp_.kernel_w > 0, "kernel_size must be positive, got ", cp_.kernel_h, "x",
                cp_.kernel_w);
    this->check(cp_.stride_h > 0 && cp_.stride_w > 0, "stride must be positive, got ", cp_.stride_h, "x",
                cp_.stride_w);
    this->check(cp_.pad_h >= 0 && cp_.pad_w >= 0, "pad must be non-negative, got ", cp_.pad_h, "x", cp_.pad_w);
    this->check(cp_.dilation_h > 0 && cp_.dilation_w > 0, "dilation must be positive, got ", cp_.dilation_h, "x",
                cp_.dilation_w);
    this->check(!cp_.force_nd_im2col, "force_nd_im2col is not supported: only 2-d convolution is implemented");
    this->check_axes(*bottom[0], 0, 4, 4);
    const int axis = bottom[0]->canonical_axis(cp_.axis);
    this->check(axis == 1, "axis ", cp_.axis, " is not supported: the channel axis must be 1 (N, C, H, W)");
    this->check(cp_.group > 0, "group must be positive, got ", cp_.group);
    channels_ = bottom[0]->shape(1);
    this->check(channels_ % cp_.group == 0, "group ", cp_.group, " does not divide the ", channels_,
                " input channels of bottom '", this->name_of_bottom(0), "'");
    this->check(cp_.num_output % cp_.group == 0, "group ", cp_.group, " does not divide num_output ",
                cp_.num_output);
    const Shape wshape{cp_.num_output, channels_ / cp_.group, cp_.kernel_h, cp_.kernel_w};
    if (this->blobs_.empty()) {
      auto w = std::make_shared<Tensor<CUDA, T>>(wshape);
      fill(cp_.weight_filler, *w, ctx.rng());
      this->blobs_.push_back(w);
      if (cp_.bias_term) {
        auto b = std::make_shared<Tensor<CUDA, T>>(Shape{cp_.num_output});
        fill(cp_.bias_filler, *b, ctx.rng());
        this->blobs_.push_back(b);
      }
    } else {
      this->check(this->blobs_.size() == (cp_.bias_term ? 2u : 1u), "has ", this->blobs_.size(),
                  " preset parameter blobs; expected ", cp_.bias_term ? 2 : 1);
      this->check(this->blobs_[0]->shape() == wshape, "preset weight of shape ", this->blobs_[0]->shape().str(),
                  " does not match ", wshape.str());
      if (cp_.bias_term)
        this->check(this->blobs_[1]->count() == static_cast<std::size_t>(cp_.num_output), "preset bias of shape ",
                    this->blobs_[1]->shape().str(), " does not match (", cp_.num_output, ")");
    }

    x_desc_ = std::make_unique<detail::gpu::CudnnTensorDesc>();
    y_desc_ = std::make_unique<detail::gpu::CudnnTensorDesc>();
    bias_desc_ = std::make_unique<detail::gpu::CudnnTensorDesc>();
    w_desc_ = std::make_unique<detail::gpu::CudnnFilterDesc>();
    conv_desc_ = std::make_unique<detail::gpu::CudnnConvDesc>();
    constexpr cudnnDataType_t dt = detail::gpu::cudnn_data_type<T>;
    POSEIDON_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w_desc_->get(), dt, CUDNN_TENSOR_NCHW, cp_.num_output,
                                                    channels_ / cp_.group, cp_.kernel_h, cp_.kernel_w));
    POSEIDON_CUDNN_CHECK(cudnnSetTensor4dDescriptor(bias_desc_->get(), CUDNN_TENSOR_NCHW, dt, 1, cp_.num_output, 1, 1));
    // Caffe's convolution is a cross-correlation (im2col + GEMM, no kernel flip).
    POSEIDON_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv_desc_->get(), cp_.pad_h, cp_.pad_w, cp_.stride_h,
                                                         cp_.stride_w, cp_.dilation_h, cp_.dilation_w,
                                                         CUDNN_CROSS_CORRELATION, dt));
    POSEIDON_CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv_desc_->get(), cp_.group));
    key_ = {-1, -1, -1};
  }

  void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) override {
    if (num_ == 0) return;
    const Algorithms& a = algorithms_for(ctx, bottom[0]->data());
    const cudnnHandle_t h = ctx.cudnn();
    const T one = T(1), zero = T(0);
    for (std::size_t i = 0; i < bottom.size(); ++i) {
      set_math(a.forward);
      POSEIDON_CUDNN_CHECK(cudnnConvolutionForward(
          h, &one, x_desc_->get(), bottom[i]->data(), w_desc_->get(), this->blobs_[0]->data(), conv_desc_->get(),
          static_cast<cudnnConvolutionFwdAlgo_t>(a.forward.algo), workspace_.get(), a.forward.workspace, &zero,
          y_desc_->get(), top[i]->data()));
      if (cp_.bias_term)
        POSEIDON_CUDNN_CHECK(cudnnAddTensor(h, &one, bias_desc_->get(), this->blobs_[1]->data(), &one,
                                            y_desc_->get(), top[i]->data()));
    }
  }

  void backward_impl(Context& ctx, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    if (num_ == 0) return;
    const bool dw = this->param_propagate_down(0);
    const bool db = cp_.bias_term && this->param_propagate_down(1);
    bool any = dw || db;
    for (std::size_t i = 0; i < bottom.size(); ++i) any = any || propagate_down[i];
    if (!any) return;
    const Algorithms& a = algorithms_for(ctx, bottom[0]->data());
    const cudnnHandle_t h = ctx.cudnn();
    const T one = T(1), zero = T(0);
    const std::size_t plane = static_cast<std::size_t>(out_h_) * static_cast<std::size_t>(out_w_);
    for (std::size_t i = 0; i < bottom.size(); ++i) {
      const T* dy = top[i]->diff();
      if (db) {
        detail::gpu::conv_bias_grad_kernel<T><<<static_cast<unsigned>(cp_.num_output), detail::gpu::block_threads, 0,
                                                 ctx.stream()>>>(num_, cp_.num_output, plane, dy,
                                                                 this->blobs_[1]->diff());
        POSEIDON_CUDA_CHECK(cudaGetLastError());
      }
      // Parameter gradients accumulate (beta = 1) over bottoms and calls; the bottom's is overwritten.
      if (dw) {
        set_math(a.backward_filter);
        POSEIDON_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
            h, &one, x_desc_->get(), bottom[i]->data(), y_desc_->get(), dy, conv_desc_->get(),
            static_cast<cudnnConvolutionBwdFilterAlgo_t>(a.backward_filter.algo), workspace_.get(),
            a.backward_filter.workspace, &one, w_desc_->get(), this->blobs_[0]->diff()));
      }
      if (propagate_down[i]) {
        set_math(a.backward_data);
        POSEIDON_CUDNN_CHECK(cudnnConvolutionBackwardData(
            h, &one, w_desc_->get(), this->blobs_[0]->data(), y_desc_->get(), dy, conv_desc_->get(),
            static_cast<cudnnConvolutionBwdDataAlgo_t>(a.backward_data.algo), workspace_.get(),
            a.backward_data.workspace, &zero, x_desc_->get(), bottom[i]->diff()));
      }
    }
  }

 private:
  // The math type the heuristics are asked under: FMA kernels only for exact float, anything cuDNN
  // offers when TF32 is allowed; double has no reduced-precision kernels.
  [[nodiscard]] cudnnMathType_t query_math() const {
    if constexpr (std::is_same_v<T, float>) return opt_.allow_tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
    return CUDNN_DEFAULT_MATH;
  }
  void set_math(const Choice& c) const { POSEIDON_CUDNN_CHECK(cudnnSetConvolutionMathType(conv_desc_->get(), c.math)); }

  // The algorithms for the current shape: from the cache, or chosen now (once per shape) and the
  // workspace grown to fit them, so the steady state allocates nothing. x: a bottom of that shape
  // (find mode runs the candidates on it).
  const Algorithms& algorithms_for(Context& ctx, const T* x) {
    if (current_) return *current_;
    auto it = cache_.find(key_);
    if (it == cache_.end()) it = cache_.emplace(key_, opt_.find ? find(ctx, x) : choose(ctx)).first;
    current_ = &it->second;
    if (current_->workspace() > workspace_.bytes()) {
      // Work queued on the old workspace must finish before it is freed (a caching allocator
      // could hand the bytes to someone else at once).
      ctx.synchronize();
      workspace_ = Buffer<CUDA>();
      workspace_ = Buffer<CUDA>(current_->workspace());
    }
    return *current_;
  }

  // Walks cuDNN's ranked candidates (fastest first): a successful one whose math type is allowed
  // and whose workspace fits the limit, deterministic ones first when asked, any other next.
  // Find mode passes timed results, whose times are recorded in the choice.
  template <class Perf, class Workspace>
  Choice pick(const char* pass, const std::vector<Perf>& perf, int returned, Workspace&& workspace_of,
              bool timed = false) const {
    const cudnnMathType_t qm = query_math();
    for (int pass_no = 0; pass_no < 2; ++pass_no) {
      const bool want_det = opt_.deterministic && pass_no == 0;
      if (pass_no == 1 && !opt_.deterministic) break;
      for (int i = 0; i < returned; ++i) {
        const Perf& p = perf[static_cast<std::size_t>(i)];
        if (p.status != CUDNN_STATUS_SUCCESS) continue;
        if (p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) continue;  // would round float to half
        if (qm == CUDNN_FMA_MATH && p.mathType == CUDNN_TENSOR_OP_MATH) continue;
        const bool det = p.determinism == CUDNN_DETERMINISTIC;
        if (want_det && !det) continue;
        Choice c;
        c.algo = static_cast<int>(p.algo);
        c.math = qm == CUDNN_FMA_MATH ? CUDNN_FMA_MATH : p.mathType;
        c.deterministic = det;
        if (timed) c.time_ms = p.time;
        set_math(c);
        std::size_t bytes = 0;
        if (!workspace_of(p.algo, bytes) || bytes > opt_.workspace_limit) continue;
        c.workspace = bytes;
        return c;
      }
    }
    this->fail("no cuDNN ", pass, " algorithm for bottom shape (", key_[0], ", ", channels_, ", ", key_[1], ", ",
               key_[2], ") fits the workspace limit of ", opt_.workspace_limit,
               " bytes (ConvolutionCudnnOptions::workspace_limit, POSEIDON_CUDNN_WORKSPACE_MB)");
  }

  Algorithms choose(Context& ctx) {
    const cudnnHandle_t h = ctx.cudnn();
    cudnnConvolutionDescriptor_t conv = conv_desc_->get();
    cudnnTensorDescriptor_t x = x_desc_->get(), y = y_desc_->get();
    cudnnFilterDescriptor_t w = w_desc_->get();
    Algorithms a;
    POSEIDON_CUDNN_CHECK(cudnnSetConvolutionMathType(conv, query_math()));
    {
      int count = 0, returned = 0;
      POSEIDON_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &count));
      std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(static_cast<std::size_t>(std::max(count, 1)));
      POSEIDON_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, x, w, conv, y, count, &returned, perf.data()));
      a.forward = pick("forward", perf, returned, [&](cudnnConvolutionFwdAlgo_t algo, std::size_t& bytes) {
        return cudnnGetConvolutionForwardWorkspaceSize(h, x, w, conv, y, algo, &bytes) == CUDNN_STATUS_SUCCESS;
      });
    }
    POSEIDON_CUDNN_CHECK(cudnnSetConvolutionMathType(conv, query_math()));
    {
      int count = 0, returned = 0;
      POSEIDON_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &count));
      std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(static_cast<std::size_t>(std::max(count, 1)));
      POSEIDON_CUDNN_CHECK(
          cudnnGetConvolutionBackwardDataAlgorithm_v7(h, w, y, conv, x, count, &returned, perf.data()));
      a.backward_data = pick("backward-data", perf, returned, [&](cudnnConvolutionBwdDataAlgo_t algo, std::size_t& bytes) {
        return cudnnGetConvolutionBackwardDataWorkspaceSize(h, w, y, conv, x, algo, &bytes) == CUDNN_STATUS_SUCCESS;
      });
    }
    POSEIDON_CUDNN_CHECK(cudnnSetConvolutionMathType(conv, query_math()));
    {
      int count = 0, returned = 0;
      POSEIDON_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &count));
      std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(static_cast<std::size_t>(std::max(count, 1)));
      POSEIDON_CUDNN_CHECK(
          cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, x, y, conv, w, count, &returned, perf.data()));
      a.backward_filter =
          pick("backward-filter", perf, returned, [&](cudnnConvolutionBwdFilterAlgo_t algo, std::size_t& bytes) {
            return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, x, y, conv, w, algo, &bytes) ==
                   CUDNN_STATUS_SUCCESS;
          });
    }
    return a;
  }

  // Find mode: cuDNN runs every candidate that fits the workspace limit on real inputs (the bottom x
  // and the weights; a zeroed top-sized gradient) into scratch outputs, so the top, the bottom
  // diff and the accumulated weight diff are never touched; the timed ranking then goes through
  // the same pick() as the heuristics' (allowed math type, deterministic first, workspace limit).
  Algorithms find(Context& ctx, const T* x) {
    const cudnnHandle_t h = ctx.cudnn();
    cudnnConvolutionDescriptor_t conv = conv_desc_->get();
    cudnnTensorDescriptor_t xd = x_desc_->get(), yd = y_desc_->get();
    cudnnFilterDescriptor_t wd = w_desc_->get();
    const T* w = this->blobs_[0]->data();
    const std::size_t x_bytes = static_cast<std::size_t>(num_) * static_cast<std::size_t>(channels_) *
                                static_cast<std::size_t>(key_[1]) * static_cast<std::size_t>(key_[2]) * sizeof(T);
    const std::size_t y_bytes = static_cast<std::size_t>(num_) * static_cast<std::size_t>(cp_.num_output) *
                                static_cast<std::size_t>(out_h_) * static_cast<std::size_t>(out_w_) * sizeof(T);
    const std::size_t w_bytes = this->blobs_[0]->count() * sizeof(T);
    // Work queued on the layer's own workspace must not overlap the search's allocations.
    ctx.synchronize();
    Buffer<CUDA> dy(y_bytes), out(std::max({x_bytes, y_bytes, w_bytes}));
    // The search's workspace: the limit, but no more than half the free device memory (a limit
    // set high to mean "no limit" must not fail the allocation); candidates needing more are
    // reported unrun and skipped.
    std::size_t free_bytes = 0, total_bytes = 0;
    POSEIDON_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const std::size_t search_bytes = std::min(opt_.workspace_limit, free_bytes / 2);
    Buffer<CUDA> scratch;
    if (search_bytes > 0) scratch = Buffer<CUDA>(search_bytes);
    POSEIDON_CUDA_CHECK(cudaMemsetAsync(dy.get(), 0, y_bytes, ctx.stream()));
    Algorithms a;
    {
      POSEIDON_CUDNN_CHECK(cudnnSetConvolutionMathType(conv, query_math()));
      int count = 0, returned = 0;
      POSEIDON_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &count));
      std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(static_cast<std::size_t>(std::max(count, 1)));
      POSEIDON_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(h, xd, x, wd, w, conv, yd, out.get(), count,
                                                                  &returned, perf.data(), scratch.get(),
                                                                  scratch.bytes()));
      a.forward = pick(
          "forward", perf, returned,
          [&](cudnnConvolutionFwdAlgo_t algo, std::size_t& bytes) {
            return cudnnGetConvolutionForwardWorkspaceSize(h, xd, wd, conv, yd, algo, &bytes) == CUDNN_STATUS_SUCCESS;
          },
          true);
    }
    {
      POSEIDON_CUDNN_CHECK(cudnnSetConvolutionMathType(conv, query_math()));
      int count = 0, returned = 0;
      POSEIDON_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &count));
      std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(static_cast<std::size_t>(std::max(count, 1)));
      POSEIDON_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(h, wd, w, yd, dy.get(), conv, xd, out.get(),
                                                                       count, &returned, perf.data(), scratch.get(),
                                                                       scratch.bytes()));
      a.backward_data = pick(
          "backward-data", perf, returned,
          [&](cudnnConvolutionBwdDataAlgo_t algo, std::size_t& bytes) {
            return cudnnGetConvolutionBackwardDataWorkspaceSize(h, wd, yd, conv, xd, algo, &bytes) ==
                   CUDNN_STATUS_SUCCESS;
          },
          true);
    }
    {
      POSEIDON_CUDNN_CHECK(cudnnSetConvolutionMathType(conv, query_math()));
      int count = 0, returned = 0;
      POSEIDON_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &count));
      std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(static_cast<std::size_t>(std::max(count, 1)));
      POSEIDON_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(h, xd, x, yd, dy.get(), conv, wd,
                                                                         out.get(), count, &returned, perf.data(),
                                                                         scratch.get(), scratch.bytes()));
      a.backward_filter = pick(
          "backward-filter", perf, returned,
          [&](cudnnConvolutionBwdFilterAlgo_t algo, std::size_t& bytes) {
            return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, xd, yd, conv, wd, algo, &bytes) ==
                   CUDNN_STATUS_SUCCESS;
          },
          true);
    }
    // The scratch is freed on return: the searches' kernels must be done with it.
    ctx.synchronize();
    return a;
  }

  ConvolutionParam cp_;
  ConvolutionCudnnOptions opt_;
  int channels_ = 0, num_ = 0, out_h_ = 0, out_w_ = 0;
  std::array<int, 3> key_{-1, -1, -1};  // (N, H, W) the descriptors were set for
  std::unique_ptr<detail::gpu::CudnnTensorDesc> x_desc_, y_desc_, bias_desc_;
  std::unique_ptr<detail::gpu::CudnnFilterDesc> w_desc_;
  std::unique_ptr<detail::gpu::CudnnConvDesc> conv_desc_;
  std::map<std::array<int, 3>, Algorithms> cache_;  // per (N, H, W)
  const Algorithms* current_ = nullptr;             // cache_'s entry for key_, once chosen
  Buffer<CUDA> workspace_;
};

POSEIDON_REGISTER_LAYER_CUDA("Convolution", ConvolutionLayer)

POSEIDON_NAMESPACE_END
