// BatchNorm: normalises each channel over the batch and spatial axes (Caffe's layer: no scale or
// bias, which a following Scale layer provides); running mean/variance are kept as three blobs.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/math/blas.hpp>

#include <cmath>
#include <cstddef>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct BatchNormParam {
  /// Absent: the TEST phase uses the stored statistics and TRAIN the batch's (Caffe's default).
  std::optional<bool> use_global_stats;
  double moving_average_fraction = 0.999;
  double eps = 1e-5;

  static BatchNormParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"use_global_stats", "moving_average_fraction", "eps"}, context);
    BatchNormParam p;
    if (m.has("use_global_stats")) p.use_global_stats = m.get("use_global_stats", false);
    p.moving_average_fraction = m.get("moving_average_fraction", 0.999);
    p.eps = m.get("eps", 1e-5);
    return p;
  }
};

namespace detail {
/// A batch-norm input seen as N x C x S (S: the product of the spatial axes).
struct BatchNormDims {
  std::size_t N = 0, C = 0, S = 0;
  [[nodiscard]] std::size_t count() const { return N * C * S; }
};

template <class D, class T>
struct BatchNormKernel {
  POSEIDON_NO_KERNEL(D, "BatchNorm");
};

/// Loops are per channel so that every reduction is a run of contiguous blocks of S values;
/// sums are in double so that float statistics do not drift over large batches.
template <class T>
struct BatchNormKernel<CPU, T> {
  using Dims = BatchNormDims;

  /// mean/var of each channel over N and S (biased variance, E[(x - mean)^2]).
  static void batch_stats(const Dims& d, const T* x, T* mean, T* var) {
    const double m = static_cast<double>(d.N * d.S);
#pragma omp parallel for if (d.count() > math::detail::omp_min_elements)
    for (std::size_t c = 0; c < d.C; ++c) {
      double s = 0;
      for (std::size_t n = 0; n < d.N; ++n) {
        const T* p = x + (n * d.C + c) * d.S;
        for (std::size_t k = 0; k < d.S; ++k) s += static_cast<double>(p[k]);
      }
      const double mu = s / m;
      double q = 0;
      for (std::size_t n = 0; n < d.N; ++n) {
        const T* p = x + (n * d.C + c) * d.S;
        for (std::size_t k = 0; k < d.S; ++k) {
          const double v = static_cast<double>(p[k]) - mu;
          q += v * v;
        }
      }
      mean[c] = static_cast<T>(mu);
      var[c] = static_cast<T>(q / m);
    }
  }

  /// Caffe's moving averages: factor = factor * f + 1, mean_sum = mean + f * mean_sum,
  /// var_sum = m/(m-1) * var + f * var_sum (the unbiased correction for m values per channel).
  static void update_running(const Dims& d, const T* mean, const T* var, double f, T* mean_sum, T* var_sum,
                             T* factor) {
    const double m = static_cast<double>(d.N * d.S);
    const double correction = m > 1 ? m / (m - 1) : 1.0;
    factor[0] = static_cast<T>(static_cast<double>(factor[0]) * f + 1.0);
    for (std::size_t c = 0; c < d.C; ++c) {
      mean_sum[c] = static_cast<T>(static_cast<double>(mean[c]) + f * static_cast<double>(mean_sum[c]));
      var_sum[c] =
          static_cast<T>(correction * static_cast<double>(var[c]) + f * static_cast<double>(var_sum[c]));
    }
  }

  /// The stored statistics, divided by the moving-average normaliser (0 when nothing was seen).
  static void global_stats(const Dims& d, const T* mean_sum, const T* var_sum, const T* factor, T* mean, T* var) {
    const T s = factor[0] == T(0) ? T(0) : T(1) / factor[0];
    for (std::size_t c = 0; c < d.C; ++c) {
      mean[c] = s * mean_sum[c];
      var[c] = s * var_sum[c];
    }
  }

  static void inverse_std(const Dims& d, const T* var, double eps, T* inv_std) {
    for (std::size_t c = 0; c < d.C; ++c)
      inv_std[c] = static_cast<T>(1.0 / std::sqrt(static_cast<double>(var[c]) + eps));
  }

  /// y = (x - mean) * inv_std; x_norm (when given) keeps a copy for backward. x may alias y.
  static void normalize(const Dims& d, const T* x, const T* mean, const T* inv_std, T* y, T* x_norm) {
    const std::size_t blocks = d.N * d.C;
#pragma omp parallel for if (d.count() > math::detail::omp_min_elements)
    for (std::size_t b = 0; b < blocks; ++b) {
      const std::size_t c = b % d.C;
      const T mu = mean[c], is = inv_std[c];
      const T* xp = x + b * d.S;
      T* yp = y + b * d.S;
      for (std::size_t k = 0; k < d.S; ++k) yp[k] = (xp[k] - mu) * is;
      if (x_norm)
        for (std::size_t k = 0; k < d.S; ++k) x_norm[b * d.S + k] = yp[k];
    }
  }

  /// Fixed statistics: dx = dy * inv_std. dy may alias dx.
  static void backward_global(const Dims& d, const T* dy, const T* inv_std, T* dx) {
    const std::size_t blocks = d.N * d.C;
#pragma omp parallel for if (d.count() > math::detail::omp_min_elements)
    for (std::size_t b = 0; b < blocks; ++b) {
      const T is = inv_std[b % d.C];
      for (std::size_t k = 0; k < d.S; ++k) dx[b * d.S + k] = dy[b * d.S + k] * is;
    }
  }

  /// Batch statistics: dx = (dy - mean(dy) - mean(dy * y) * y) * inv_std, means per channel.
  /// Both sums of a channel are taken before any of its dx is written, so dy may alias dx.
  static void backward_batch(const Dims& d, const T* dy, const T* y, const T* inv_std, T* dx) {
    const double m = static_cast<double>(d.N * d.S);
#pragma omp parallel for if (d.count() > math::detail::omp_min_elements)
    for (std::size_t c = 0; c < d.C; ++c) {
      double sdy = 0, sdyy = 0;
      for (std::size_t n = 0; n < d.N; ++n) {
        const std::size_t o = (n * d.C + c) * d.S;
        for (std::size_t k = 0; k < d.S; ++k) {
          sdy += static_cast<double>(dy[o + k]);
          sdyy += static_cast<double>(dy[o + k]) * static_cast<double>(y[o + k]);
        }
      }
      const T a = static_cast<T>(sdy / m), b = static_cast<T>(sdyy / m), is = inv_std[c];
      for (std::size_t n = 0; n < d.N; ++n) {
        const std::size_t o = (n * d.C + c) * d.S;
        for (std::size_t k = 0; k < d.S; ++k) dx[o + k] = (dy[o + k] - a - b * y[o + k]) * is;
      }
    }
  }
};
}  // namespace detail

namespace detail {
/// What the CPU and CUDA BatchNorm share: parameters, checks, the statistics blobs and their
/// bookkeeping state. A device adds the normalisation (forward_impl, backward_impl).
template <class D, class T>
class BatchNormBase : public Layer<D, T> {
  using Base = Layer<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit BatchNormBase(const LayerParameter& p)
      : Base(p),
        bp_(BatchNormParam::from_message(p.sub("batch_norm_param"), p.describe() + " batch_norm_param")) {}
  BatchNormBase(const LayerParameter& p, BatchNormParam bp) : Base(p), bp_(bp) {}

  [[nodiscard]] std::string_view type() const override { return "BatchNorm"; }
  [[nodiscard]] int exact_num_bottom() const override { return 1; }
  [[nodiscard]] int exact_num_top() const override { return 1; }
  [[nodiscard]] bool supports_in_place() const override { return true; }
  [[nodiscard]] const BatchNormParam& batch_norm_param() const { return bp_; }
  /// Whether the stored statistics (blobs 0..2) normalise, rather than the batch's own.
  [[nodiscard]] bool use_global_stats() const { return use_global_stats_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    const auto& b = *bottom[0];
    this->check_axes(b, 0, 1);
    const int c = channels_of(b);
    this->check(c == channels_, "bottom '", this->name_of_bottom(0), "' of shape ", b.shape().str(), " has ", c,
                " channels; the layer was set up for ", channels_);
    dims_ = {static_cast<std::size_t>(b.shape(0)), static_cast<std::size_t>(channels_),
             b.num_axes() > 2 ? b.count(2) : std::size_t{1}};
    if (top[0] != bottom[0]) top[0]->reshape(b.shape());
  }

 protected:
  void layer_setup(Context&, const Vec& bottom, const Vec&) override {
    const double f = bp_.moving_average_fraction, eps = bp_.eps;
    this->check(f >= 0 && f <= 1, "batch_norm_param moving_average_fraction must be in [0, 1], got ", f);
    this->check(eps > 0 && std::isfinite(eps), "batch_norm_param eps must be positive, got ", eps);
    this->check_axes(*bottom[0], 0, 1);
    use_global_stats_ = bp_.use_global_stats.value_or(this->param_.phase == Phase::test);
    channels_ = channels_of(*bottom[0]);
    const Shape per_channel{channels_};
    if (this->blobs_.empty()) {
      // Tensors start zeroed: no statistics seen yet (factor 0).
      this->blobs_.push_back(std::make_shared<Tensor<D, T>>(per_channel));
      this->blobs_.push_back(std::make_shared<Tensor<D, T>>(per_channel));
      this->blobs_.push_back(std::make_shared<Tensor<D, T>>(Shape{1}));
    } else {
      this->check(this->blobs_.size() == 3, "expects 3 blobs (mean, variance, moving-average factor), got ",
                  this->blobs_.size());
      this->check(this->blobs_[0]->shape() == per_channel && this->blobs_[1]->shape() == per_channel &&
                      this->blobs_[2]->count() == 1,
                  "preset blobs of shapes ", this->blobs_[0]->shape().str(), ", ", this->blobs_[1]->shape().str(),
                  ", ", this->blobs_[2]->shape().str(), " do not match ", channels_, " channels");
    }
    // The statistics are state, not parameters: the solver must never move them (Caffe forces
    // lr_mult 0), and backward never writes their diffs.
    auto& specs = this->param_.param;
    for (std::size_t i = 0; i < 3; ++i) {
      if (specs.size() <= i) {
        specs.push_back(ParamSpec{"", 0.0f, 0.0f});
      } else {
        this->check(specs[i].lr_mult == 0.0f, "param ", i, " has lr_mult ", specs[i].lr_mult,
                    "; batch normalization statistics cannot be learned (lr_mult must be 0)");
      }
      this->set_param_propagate_down(i, false);
    }
    mean_.reshape(per_channel);
    variance_.reshape(per_channel);
    inv_std_.reshape(per_channel);
  }

 protected:
  using Kernel = BatchNormKernel<D, T>;

  // The passes on BatchNormKernel<D, T>: the CPU layer's, and the CUDA layer's where cuDNN cannot run.
  void kernel_forward(const Vec& bottom, const Vec& top) {
    const auto& d = dims_;
    if (d.count() == 0) return;
    auto& blobs = this->blobs_;
    if (use_global_stats_) {
      Kernel::global_stats(d, blobs[0]->data(), blobs[1]->data(), blobs[2]->data(), mean_.data(), variance_.data());
    } else {
      Kernel::batch_stats(d, bottom[0]->data(), mean_.data(), variance_.data());
      Kernel::update_running(d, mean_.data(), variance_.data(), bp_.moving_average_fraction, blobs[0]->data(),
                             blobs[1]->data(), blobs[2]->data());
    }
    Kernel::inverse_std(d, variance_.data(), bp_.eps, inv_std_.data());
    // x_norm_ is kept because a following in-place layer (usually Scale) overwrites the top.
    Kernel::normalize(d, bottom[0]->data(), mean_.data(), inv_std_.data(), top[0]->data(),
                      use_global_stats_ ? nullptr : x_norm_.data());
  }
  void kernel_backward(const Vec& top, const Vec& bottom) {
    if (dims_.count() == 0) return;
    if (use_global_stats_)
      Kernel::backward_global(dims_, top[0]->diff(), inv_std_.data(), bottom[0]->diff());
    else
      Kernel::backward_batch(dims_, top[0]->diff(), x_norm_.data(), inv_std_.data(), bottom[0]->diff());
  }

  [[nodiscard]] static int channels_of(const Tensor<D, T>& t) { return t.num_axes() == 1 ? 1 : t.shape(1); }

  BatchNormParam bp_;
  bool use_global_stats_ = false;
  int channels_ = 0;
  detail::BatchNormDims dims_;
  Tensor<D, T> mean_, variance_, inv_std_;  // of the last forward: batch or global statistics
  Tensor<D, T> x_norm_;  // the normalised bottom of the last training forward, for backward
};
}  // namespace detail



template <class D, class T = float>
class BatchNormLayer final : public detail::BatchNormBase<D, T> {
  using Base = detail::BatchNormBase<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;
  using Base::Base;

  void reshape(const Vec& bottom, const Vec& top) override {
    Base::reshape(bottom, top);
    if (!this->use_global_stats_) this->x_norm_.reshape(bottom[0]->shape());
  }

 protected:
  void forward_impl(Context&, const Vec& bottom, const Vec& top) override { this->kernel_forward(bottom, top); }

  void backward_impl(Context&, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    if (propagate_down[0]) this->kernel_backward(top, bottom);
  }
};

POSEIDON_REGISTER_LAYER("BatchNorm", BatchNormLayer)

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/layers/cuda/batch_norm.cuh>
#endif
