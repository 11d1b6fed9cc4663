// Layer<D, T>: the base of every layer, with Caffe's contract (setup, reshape, forward returning
// the weighted loss, backward accumulating parameter gradients) and its learnable parameters.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/context.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/layer_parameter.hpp>
#include <poseidon/math/blas.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

/// The contract (dlib's layers_abstract.h in spirit):
/// - setup(bottom, top) checks blob counts, reads parameters, allocates learnable tensors and
///   shapes the tops; it is called once.
/// - reshape(bottom, top) may be called before any forward with new bottom shapes.
/// - forward(bottom, top) writes every top's data and returns sum_i loss_weight_i * <top_i, 1>.
/// - backward(top, propagate_down, bottom) reads top diffs; it OVERWRITES bottom diffs where
///   propagate_down[i] and ACCUMULATES into parameter diffs (so iter_size and shared parameters
///   work); the caller zeroes parameter diffs between iterations.
/// - In-place use (top[0] == bottom[0]) is allowed only where supports_in_place() says so.
template <class D, class T = float>
class Layer {
 public:
  using device_type = D;
  using value_type = T;
  using tensor_type = Tensor<D, T>;
  using Context = DeviceContext<D>;
  using Vec = std::vector<Tensor<D, T>*>;

  explicit Layer(LayerParameter param) : param_(std::move(param)) {}
  virtual ~Layer() = default;
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  /// Caffe's type string, e.g. "Convolution".
  [[nodiscard]] virtual std::string_view type() const = 0;

  void setup(Context& ctx, const Vec& bottom, const Vec& top) {
    check_blob_counts(bottom, top);
    for (std::size_t i = 0; i < top.size(); ++i)
      for (std::size_t j = 0; j < bottom.size(); ++j)
        if (top[i] == bottom[j] && !supports_in_place())
          fail("top '", name_of_top(i), "' is also a bottom, but this layer cannot run in place");
    layer_setup(ctx, bottom, top);
    reshape(bottom, top);
    set_loss_weights(ctx, top);
    param_propagate_down_.resize(blobs_.size(), true);
  }

  /// Shapes the tops (and internal buffers) for the current bottom shapes.
  virtual void reshape(const Vec& bottom, const Vec& top) = 0;

  T forward(Context& ctx, const Vec& bottom, const Vec& top) {
    [[maybe_unused]] const auto scope = ctx.kernel_scope();
    reshape(bottom, top);
    forward_impl(ctx, bottom, top);
    T loss = 0;
    for (std::size_t i = 0; i < top.size() && i < loss_weights_.size(); ++i)
      if (loss_weights_[i] != T(0)) loss += math::dot(ctx, top[i]->count(), top[i]->data(), top[i]->diff());
    return loss;
  }

  void backward(Context& ctx, const Vec& top, const std::vector<bool>& propagate_down, const Vec& bottom) {
    POSEIDON_CHECK(propagate_down.size() == bottom.size(), describe(), ": backward got ", propagate_down.size(),
                   " propagate_down flags for ", bottom.size(), " bottoms");
    for (std::size_t i = 0; i < bottom.size(); ++i)
      if (propagate_down[i] && !allow_backward_to(static_cast<int>(i)))
        fail("cannot backpropagate to bottom ", i, " ('", name_of_bottom(i), "')");
    [[maybe_unused]] const auto scope = ctx.kernel_scope();
    backward_impl(ctx, top, propagate_down, bottom);
  }

  // ---- learnable parameters -------------------------------------------------
  [[nodiscard]] std::vector<std::shared_ptr<tensor_type>>& blobs() { return blobs_; }
  [[nodiscard]] const std::vector<std::shared_ptr<tensor_type>>& blobs() const { return blobs_; }
  /// The ParamSpec of parameter i (defaults when the prototxt gave none).
  [[nodiscard]] ParamSpec param_spec(std::size_t i) const {
    return i < param_.param.size() ? param_.param[i] : ParamSpec{};
  }
  /// Whether backward computes the gradient of parameter i (false for frozen parameters).
  [[nodiscard]] bool param_propagate_down(std::size_t i) const {
    return i < param_propagate_down_.size() ? param_propagate_down_[i] : true;
  }
  void set_param_propagate_down(std::size_t i, bool v) {
    if (param_propagate_down_.size() <= i) param_propagate_down_.resize(i + 1, true);
    param_propagate_down_[i] = v;
  }

  // ---- the blob-count contract (Caffe's ExactNumBottomBlobs & co.); -1: no constraint ----
  [[nodiscard]] virtual int exact_num_bottom() const { return -1; }
  [[nodiscard]] virtual int min_num_bottom() const { return -1; }
  [[nodiscard]] virtual int max_num_bottom() const { return -1; }
  [[nodiscard]] virtual int exact_num_top() const { return -1; }
  [[nodiscard]] virtual int min_num_top() const { return -1; }
  [[nodiscard]] virtual int max_num_top() const { return -1; }
  [[nodiscard]] virtual bool equal_num_bottom_top() const { return false; }
  /// Whether top[0] may be the same tensor as bottom[0].
  [[nodiscard]] virtual bool supports_in_place() const { return false; }
  /// Whether a gradient can flow to bottom i (false e.g. for labels).
  [[nodiscard]] virtual bool allow_backward_to(int /*bottom_index*/) const { return true; }
  /// Loss layers weigh their first top by 1 unless loss_weight says otherwise.
  [[nodiscard]] virtual bool is_loss() const { return false; }

  [[nodiscard]] T loss_weight(std::size_t top_index) const {
    return top_index < loss_weights_.size() ? loss_weights_[top_index] : T(0);
  }
  [[nodiscard]] const LayerParameter& param() const { return param_; }
  [[nodiscard]] const std::string& name() const { return param_.name; }
  [[nodiscard]] std::string describe() const { return detail::concat("layer '", param_.name, "' (", type(), ")"); }

 protected:
  /// Reads parameters and allocates learnable tensors; called once by setup().
  virtual void layer_setup(Context& /*ctx*/, const Vec& /*bottom*/, const Vec& /*top*/) {}
  virtual void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) = 0;
  virtual void backward_impl(Context& ctx, const Vec& top, const std::vector<bool>& propagate_down,
                             const Vec& bottom) = 0;

  /// Throws Error prefixed with "layer 'name' (Type): ".
  template <class... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    detail::raise(describe(), ": ", std::forward<Parts>(parts)...);
  }
  template <class... Parts>
  void check(bool cond, Parts&&... parts) const {
    if (!cond) fail(std::forward<Parts>(parts)...);
  }
  /// Checks a bottom's axis count, naming the bottom in the error.
  void check_axes(const tensor_type& t, std::size_t bottom_index, int min_axes, int max_axes = Shape::max_axes) const {
    check(t.num_axes() >= min_axes && t.num_axes() <= max_axes, "bottom ", bottom_index, " ('",
          name_of_bottom(bottom_index), "') has shape ", t.shape().str(), "; expected ", min_axes,
          (min_axes == max_axes ? "" : detail::concat(" to ", max_axes)), " axes");
  }
  [[nodiscard]] std::string name_of_bottom(std::size_t i) const {
    return i < param_.bottom.size() ? param_.bottom[i] : detail::concat("#", i);
  }
  [[nodiscard]] std::string name_of_top(std::size_t i) const {
    return i < param_.top.size() ? param_.top[i] : detail::concat("#", i);
  }

  LayerParameter param_;
  std::vector<std::shared_ptr<tensor_type>> blobs_;
  std::vector<bool> param_propagate_down_;

 private:
  void check_blob_counts(const Vec& bottom, const Vec& top) const {
    const int nb = static_cast<int>(bottom.size());
    const int nt = static_cast<int>(top.size());
    auto expect = [&](bool ok, const char* what, int want, int got) {
      if (!ok) fail(what, " ", want, " but got ", got);
    };
    if (exact_num_bottom() >= 0) expect(nb == exact_num_bottom(), "takes exactly bottoms:", exact_num_bottom(), nb);
    if (min_num_bottom() >= 0) expect(nb >= min_num_bottom(), "takes at least bottoms:", min_num_bottom(), nb);
    if (max_num_bottom() >= 0) expect(nb <= max_num_bottom(), "takes at most bottoms:", max_num_bottom(), nb);
    if (exact_num_top() >= 0) expect(nt == exact_num_top(), "produces exactly tops:", exact_num_top(), nt);
    if (min_num_top() >= 0) expect(nt >= min_num_top(), "produces at least tops:", min_num_top(), nt);
    if (max_num_top() >= 0) expect(nt <= max_num_top(), "produces at most tops:", max_num_top(), nt);
    if (equal_num_bottom_top()) expect(nb == nt, "needs as many tops as bottoms:", nb, nt);
    for (const auto* t : bottom)
      if (!t) fail("a bottom tensor is null");
    for (const auto* t : top)
      if (!t) fail("a top tensor is null");
  }

  // Caffe's SetLossWeights: a weighted top's diff holds its weight, so forward's loss is
  // <data, diff> and backward starts from the weight without a special case.
  void set_loss_weights(Context& ctx, const Vec& top) {
    std::vector<float> w = param_.loss_weight;
    if (w.empty() && is_loss()) w.push_back(1.0f);
    if (!param_.loss_weight.empty())
      check(param_.loss_weight.size() == top.size(), "has ", param_.loss_weight.size(), " loss_weight values for ",
            top.size(), " tops");
    loss_weights_.assign(top.size(), T(0));
    for (std::size_t i = 0; i < top.size() && i < w.size(); ++i) {
      loss_weights_[i] = static_cast<T>(w[i]);
      if (w[i] != 0.0f) math::set(ctx, top[i]->count(), static_cast<T>(w[i]), top[i]->diff());
    }
  }

  std::vector<T> loss_weights_;
};

POSEIDON_NAMESPACE_END
