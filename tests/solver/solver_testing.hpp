// Shared pieces of the solver tests: a resumable data layer with a cursor (a data source whose
// position must be restored) and the nets the tests train.
#pragma once

#include <poseidon/data/dummy_data_layer.hpp>
#include <poseidon/data/memory_data_layer.hpp>
#include <poseidon/layers/dropout.hpp>
#include <poseidon/layers/euclidean_loss.hpp>
#include <poseidon/layers/inner_product.hpp>
#include <poseidon/layers/input.hpp>
#include <poseidon/layers/relu.hpp>
#include <poseidon/net/snapshot.hpp>
#include <poseidon/solver/sgd.hpp>

namespace poseidon_solver_test {

// Serves x (batch x 3) and target (batch x 2) as a deterministic function of a sample cursor
// that wraps at 97 samples: a data source whose position must be in the solver state.
template <class D, class T>
class SeqDataLayer final : public poseidon::Layer<D, T>, public poseidon::ResumableLayer {
 public:
  using typename poseidon::Layer<D, T>::Context;
  using typename poseidon::Layer<D, T>::Vec;
  explicit SeqDataLayer(const poseidon::LayerParameter& p) : poseidon::Layer<D, T>(p) {}
  [[nodiscard]] std::string_view type() const override { return "SeqData"; }
  [[nodiscard]] int exact_num_bottom() const override { return 0; }
  [[nodiscard]] int exact_num_top() const override { return 2; }
  [[nodiscard]] bool allow_backward_to(int) const override { return false; }
  void reshape(const Vec&, const Vec& t) override {
    t[0]->reshape({4, 3});
    t[1]->reshape({4, 2});
  }
  [[nodiscard]] std::string save_state() const override { return std::to_string(cursor_); }
  void load_state(std::string_view bytes) override { cursor_ = std::stoul(std::string(bytes)); }
  [[nodiscard]] std::size_t cursor() const { return cursor_; }

  static T sample(std::size_t s, int j) { return static_cast<T>(std::sin(0.7 * double(s) + 1.3 * j)); }

 protected:
  void forward_impl(Context&, const Vec&, const Vec& t) override {
    std::vector<T> x(12), y(8);
    for (std::size_t k = 0; k < 4; ++k) {
      for (int j = 0; j < 3; ++j) x[k * 3 + std::size_t(j)] = sample(cursor_, j);
      y[k * 2] = sample(cursor_, 0) * sample(cursor_, 1);
      y[k * 2 + 1] = sample(cursor_, 2);
      cursor_ = (cursor_ + 1) % 97;
    }
    t[0]->copy_data_from_host(x);
    t[1]->copy_data_from_host(y);
  }
  void backward_impl(Context&, const Vec&, const std::vector<bool>&, const Vec&) override {}

 private:
  std::size_t cursor_ = 0;
};

}  // namespace poseidon_solver_test

namespace poseidon {
inline const bool poseidon_solver_test_seqdata =
    detail::register_layer<poseidon_solver_test::SeqDataLayer, CPU>("SeqData");
}

namespace poseidon_solver_test {

// A small MLP reading SeqData and DummyData noise, with dropout: every source of state a
// resumed run must restore (weights, history, RNG, data cursor).
inline const char* kResumeNet = R"(
name: "resume_mlp"
layer { name: "seq" type: "SeqData" top: "x" top: "target" }
layer { name: "noise" type: "DummyData" top: "noise" top: "noise_t"
        dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } data_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
        inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "h" top: "h" }
layer { name: "drop1" type: "Dropout" bottom: "h" top: "h" dropout_param { dropout_ratio: 0.3 } }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "y"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "ip_noise" type: "InnerProduct" bottom: "noise" top: "n2"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "target" top: "loss" }
layer { name: "loss_noise" type: "EuclideanLoss" bottom: "n2" bottom: "noise_t" top: "loss_noise" loss_weight: 0.5 }
)";

// One parameter tensor, 4 values: Input -> InnerProduct (no bias) -> EuclideanLoss. The rule
// tests write gradients into the weight's diff directly.
inline const char* kOneParamNet = R"(
name: "one_param"
layer { name: "in" type: "Input" top: "x" top: "t" input_param { shape { dim: 1 dim: 2 } shape { dim: 1 dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 2 bias_term: false weight_filler { type: "constant" value: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
)";

}  // namespace poseidon_solver_test
