// InnerProduct (fully connected): top = bottom * W^T + b over the axes from `axis` on.
// It also exposes its sufficient factors: dW = sum_k u_k v_k^T with u_k = top diff, v_k = bottom data.
#pragma once

#include <poseidon/core/filler.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/math/blas.hpp>

POSEIDON_NAMESPACE_BEGIN

struct InnerProductParam {
  int num_output = 0;
  bool bias_term = true;
  FillerParameter weight_filler;
  FillerParameter bias_filler;
  int axis = 1;
  bool transpose = false;  // weights stored K x N instead of N x K

  static InnerProductParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"num_output", "bias_term", "weight_filler", "bias_filler", "axis", "transpose"}, context);
    InnerProductParam p;
    p.num_output = m.required<int>("num_output", context);
    p.bias_term = m.get("bias_term", true);
    p.weight_filler = FillerParameter::from_message(m.child("weight_filler"), detail::concat(context, " weight_filler"));
    p.bias_filler = FillerParameter::from_message(m.child("bias_filler"), detail::concat(context, " bias_filler"));
    p.axis = m.get("axis", 1);
    p.transpose = m.get("transpose", false);
    return p;
  }
};

/// The sufficient factors of one InnerProduct gradient, pointing into the layer's own tensors:
/// u is the top diff (M x N), v the bottom data (M x K); dW (N x K) = u^T v, db = u^T 1.
template <class D, class T>
struct SufficientFactors {
  const T* u = nullptr;
  const T* v = nullptr;
  int M = 0, N = 0, K = 0;
  bool transpose = false;  // the weight is stored K x N: dW = v^T u
};

/// dW += u^T v (or v^T u when transposed): how a peer rebuilds the weight gradient from factors.
template <class D, class T>
void accumulate_weight_gradient(DeviceContext<D>& ctx, const SufficientFactors<D, T>& f, T* weight_diff) {
  if (f.transpose)
    math::gemm(ctx, math::Trans::yes, math::Trans::no, f.K, f.N, f.M, T(1), f.v, f.u, T(1), weight_diff);
  else
    math::gemm(ctx, math::Trans::yes, math::Trans::no, f.N, f.K, f.M, T(1), f.u, f.v, T(1), weight_diff);
}

template <class D, class T = float>
class InnerProductLayer final : public Layer<D, T> {
  using Base = Layer<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit InnerProductLayer(const LayerParameter& p)
      : Base(p), ip_(InnerProductParam::from_message(p.sub("inner_product_param"), p.describe() + " inner_product_param")) {}
  InnerProductLayer(const LayerParameter& p, InnerProductParam ip) : Base(p), ip_(std::move(ip)) {}

  [[nodiscard]] std::string_view type() const override { return "InnerProduct"; }
  [[nodiscard]] int exact_num_bottom() const override { return 1; }
  [[nodiscard]] int exact_num_top() const override { return 1; }
  [[nodiscard]] const InnerProductParam& inner_product_param() const { return ip_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    const auto& b = *bottom[0];
    const int axis = b.canonical_axis(ip_.axis);
    const auto k = b.count(axis);
    this->check(static_cast<int>(k) == K_, "bottom '", this->name_of_bottom(0), "' of shape ", b.shape().str(),
                " has ", k, " inputs per sample from axis ", axis, "; the weights expect ", K_);
    M_ = static_cast<int>(b.count(0, axis));
    std::vector<int> dims(b.shape().dims().begin(), b.shape().dims().begin() + axis);
    dims.push_back(N_);
    top[0]->reshape(Shape(dims));
    if (ip_.bias_term && bias_multiplier_.count() != static_cast<std::size_t>(M_)) {
      bias_multiplier_.reshape({M_});
      std::vector<T> ones(static_cast<std::size_t>(M_), T(1));
      bias_multiplier_.copy_data_from_host(ones);
    }
  }

  /// The factors of the weight gradient for the current top diff and bottom data.
  [[nodiscard]] SufficientFactors<D, T> sufficient_factors(const Vec& bottom, const Vec& top) const {
    return {top[0]->diff(), bottom[0]->data(), M_, N_, K_, ip_.transpose};
  }

 protected:
  void layer_setup(Context& ctx, const Vec& bottom, const Vec&) override {
    this->check(ip_.num_output > 0, "num_output must be positive, got ", ip_.num_output);
    const int axis = bottom[0]->canonical_axis(ip_.axis);
    N_ = ip_.num_output;
    const auto k = bottom[0]->count(axis);
    this->check(k > 0, "bottom '", this->name_of_bottom(0), "' has no inputs per sample (shape ",
                bottom[0]->shape().str(), ")");
    K_ = static_cast<int>(k);
    if (this->blobs_.empty()) {
      auto w = std::make_shared<Tensor<D, T>>(ip_.transpose ? Shape{K_, N_} : Shape{N_, K_});
      fill(ip_.weight_filler, *w, ctx.rng());
      this->blobs_.push_back(w);
      if (ip_.bias_term) {
        auto b = std::make_shared<Tensor<D, T>>(Shape{N_});
        fill(ip_.bias_filler, *b, ctx.rng());
        this->blobs_.push_back(b);
      }
    } else {
      this->check(this->blobs_[0]->count() == static_cast<std::size_t>(N_) * static_cast<std::size_t>(K_),
                  "preset weight of shape ", this->blobs_[0]->shape().str(), " does not match ", N_, "x", K_);
    }
  }

  void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) override {
    const T* x = bottom[0]->data();
    const T* w = this->blobs_[0]->data();
    T* y = top[0]->data();
    math::gemm(ctx, math::Trans::no, ip_.transpose ? math::Trans::no : math::Trans::yes, M_, N_, K_, T(1), x, w, T(0), y);
    if (ip_.bias_term)
      math::gemm(ctx, math::Trans::no, math::Trans::no, M_, N_, 1, T(1), bias_multiplier_.data(),
                 this->blobs_[1]->data(), T(1), y);
  }

  void backward_impl(Context& ctx, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    const T* dy = top[0]->diff();
    if (this->param_propagate_down(0))
      accumulate_weight_gradient(ctx, sufficient_factors(bottom, top), this->blobs_[0]->diff());
    if (ip_.bias_term && this->param_propagate_down(1))
      math::gemv(ctx, math::Trans::yes, M_, N_, T(1), dy, bias_multiplier_.data(), T(1), this->blobs_[1]->diff());
    if (propagate_down[0]) {
      // dx (M x K) = dy (M x N) * W (N x K), or dy * W^T for K x N storage.
      math::gemm(ctx, math::Trans::no, ip_.transpose ? math::Trans::yes : math::Trans::no, M_, K_, N_, T(1), dy,
                 this->blobs_[0]->data(), T(0), bottom[0]->diff());
    }
  }

 private:
  InnerProductParam ip_;
  int M_ = 0, N_ = 0, K_ = 0;
  Tensor<D, T> bias_multiplier_;
};

POSEIDON_REGISTER_LAYER("InnerProduct", InnerProductLayer)

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/layers/cuda/inner_product.cuh>
#endif
