// Flatten: merges axes [axis, end_axis] into one (default: everything after the batch axis).
// The top is a view: it shares the bottom's data and diff, so forward and backward copy nothing.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>

#include <string_view>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct FlattenParam {
  int axis = 1;
  int end_axis = -1;

  static FlattenParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"axis", "end_axis"}, context);
    FlattenParam p;
    p.axis = m.get("axis", 1);
    p.end_axis = m.get("end_axis", -1);
    return p;
  }
};

template <class D, class T = float>
class FlattenLayer final : public Layer<D, T> {
  using Base = Layer<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit FlattenLayer(const LayerParameter& p)
      : Base(p), fp_(FlattenParam::from_message(p.sub("flatten_param"), p.describe() + " flatten_param")) {}
  FlattenLayer(const LayerParameter& p, FlattenParam fp) : Base(p), fp_(fp) {}

  [[nodiscard]] std::string_view type() const override { return "Flatten"; }
  [[nodiscard]] int exact_num_bottom() const override { return 1; }
  [[nodiscard]] int exact_num_top() const override { return 1; }
  [[nodiscard]] const FlattenParam& flatten_param() const { return fp_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    const auto& b = *bottom[0];
    const int n = b.num_axes();
    auto canonical = [&](int a, const char* field) {
      this->check(a >= -n && a < n, "flatten_param ", field, " ", a, " is out of range for bottom '",
                  this->name_of_bottom(0), "' of shape ", b.shape().str());
      return a < 0 ? a + n : a;
    };
    const int start = canonical(fp_.axis, "axis");
    const int end = canonical(fp_.end_axis, "end_axis");
    this->check(start <= end, "flatten_param axis ", fp_.axis, " comes after end_axis ", fp_.end_axis,
                " for bottom '", this->name_of_bottom(0), "' of shape ", b.shape().str());
    const auto& d = b.shape().dims();
    std::vector<int> dims(d.begin(), d.begin() + start);
    dims.push_back(static_cast<int>(b.count(start, end + 1)));
    dims.insert(dims.end(), d.begin() + end + 1, d.end());
    top[0]->reshape(Shape(dims));
    top[0]->share_data(b);
    top[0]->share_diff(b);
  }

 protected:
  void forward_impl(Context&, const Vec&, const Vec&) override {}  // shared memory
  void backward_impl(Context&, const Vec&, const std::vector<bool>&, const Vec&) override {}

 private:
  FlattenParam fp_;
};

POSEIDON_REGISTER_LAYER("Flatten", FlattenLayer)

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/layers/cuda/flatten.cuh>
#endif
