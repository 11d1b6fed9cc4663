// Input: Caffe's placeholder layer whose tops the user (or a data source) fills before forward;
// `input_param { shape { dim: ... } }` gives one shape per top, or a single shape for all.
#pragma once

#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>

#include <cstdint>
#include <limits>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct InputParam {
  std::vector<Shape> shapes;

  static InputParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"shape"}, context);
    InputParam p;
    for (const Message* s : m.children("shape")) {
      s->check_fields({"dim"}, detail::concat(context, " shape"));
      std::vector<int> dims;
      for (auto d : s->get_all<std::int64_t>("dim")) {
        POSEIDON_CHECK(d >= 0 && d <= std::numeric_limits<int>::max(), context, ": dim ", d, " out of range");
        dims.push_back(static_cast<int>(d));
      }
      p.shapes.emplace_back(std::move(dims));
    }
    return p;
  }
};

template <class D, class T = float>
class InputLayer final : public Layer<D, T> {
  using Base = Layer<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit InputLayer(const LayerParameter& p)
      : Base(p), ip_(InputParam::from_message(p.sub("input_param"), p.describe() + " input_param")) {}
  InputLayer(const LayerParameter& p, InputParam ip) : Base(p), ip_(std::move(ip)) {}

  [[nodiscard]] std::string_view type() const override { return "Input"; }
  [[nodiscard]] int exact_num_bottom() const override { return 0; }
  [[nodiscard]] int min_num_top() const override { return 1; }

  // Shapes are fixed at setup; afterwards the user may reshape the tops freely.
  void reshape(const Vec&, const Vec&) override {}

 protected:
  void layer_setup(Context&, const Vec&, const Vec& top) override {
    const auto n = ip_.shapes.size();
    this->check(n == 0 || n == 1 || n == top.size(), "has ", n, " input shapes for ", top.size(),
                " tops; give one shape, or one per top");
    for (std::size_t i = 0; i < top.size() && n > 0; ++i) top[i]->reshape(ip_.shapes[n == 1 ? 0 : i]);
  }
  void forward_impl(Context&, const Vec&, const Vec&) override {}
  void backward_impl(Context&, const Vec&, const std::vector<bool>&, const Vec&) override {}

 private:
  InputParam ip_;
};

POSEIDON_REGISTER_LAYER("Input", InputLayer)
#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
// Nothing runs on the device: the user fills the tops (Tensor::copy_data_from_host and friends).
POSEIDON_REGISTER_LAYER_CUDA("Input", InputLayer)
#endif

POSEIDON_NAMESPACE_END
