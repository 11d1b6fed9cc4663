// Reshape: gives the bottom a new shape over the same memory (reshape_param shape, with 0 = copy
// the bottom's dimension and -1 = infer it; axis and num_axes pick the range of axes replaced).
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>

#include <cstddef>
#include <limits>
#include <string_view>
#include <utility>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct ReshapeParam {
  std::vector<long long> dims;  // BlobShape's int64 dims, as written
  int axis = 0;
  int num_axes = -1;

  static ReshapeParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"shape", "axis", "num_axes"}, context);
    ReshapeParam p;
    const Message& s = m.child("shape");
    s.check_fields({"dim"}, detail::concat(context, " shape"));
    p.dims = s.get_all<long long>("dim");
    p.axis = m.get("axis", 0);
    p.num_axes = m.get("num_axes", -1);
    return p;
  }
};

template <class D, class T = float>
class ReshapeLayer final : public Layer<D, T> {
  using Base = Layer<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit ReshapeLayer(const LayerParameter& p)
      : Base(p), rp_(ReshapeParam::from_message(p.sub("reshape_param"), p.describe() + " reshape_param")) {}
  ReshapeLayer(const LayerParameter& p, ReshapeParam rp) : Base(p), rp_(std::move(rp)) {}

  [[nodiscard]] std::string_view type() const override { return "Reshape"; }
  [[nodiscard]] int exact_num_bottom() const override { return 1; }
  [[nodiscard]] int exact_num_top() const override { return 1; }
  [[nodiscard]] const ReshapeParam& reshape_param() const { return rp_; }

  void reshape(const Vec& bottom, const Vec& top) override {
    const auto& b = *bottom[0];
    const int nb = b.num_axes();
    // Unlike other axes, axis counts the position between axes: -1 is after the last one.
    const int start = rp_.axis >= 0 ? rp_.axis : nb + rp_.axis + 1;
    this->check(start >= 0 && start <= nb, "reshape_param axis ", rp_.axis, " is out of range for bottom '",
                this->name_of_bottom(0), "' of shape ", b.shape().str());
    this->check(rp_.num_axes >= -1, "reshape_param num_axes must be >= 0, or -1 for all; got ", rp_.num_axes);
    const int end = rp_.num_axes == -1 ? nb : start + rp_.num_axes;
    this->check(end <= nb, "reshape_param axis ", rp_.axis, " + num_axes ", rp_.num_axes,
                " goes past the last axis of bottom '", this->name_of_bottom(0), "' of shape ", b.shape().str());

    const auto& d = b.shape().dims();
    std::vector<int> dims(d.begin(), d.begin() + start);
    const std::size_t first_new = dims.size();
    std::size_t explicit_count = b.count(0, start) * b.count(end);
    int inferred = -1;
    for (std::size_t i = 0; i < dims_.size(); ++i) {
      int v = dims_[i];
      if (v == 0) {
        const int axis = start + static_cast<int>(i);
        this->check(axis < nb, "reshape_param shape dim ", i, " is 0 (copy) but bottom '", this->name_of_bottom(0),
                    "' of shape ", b.shape().str(), " has no axis ", axis, " to copy");
        v = b.shape(axis);
        explicit_count *= static_cast<std::size_t>(v);
      } else if (v == -1) {
        inferred = static_cast<int>(first_new + i);
        v = 1;
      } else {
        explicit_count *= static_cast<std::size_t>(v);
      }
      dims.push_back(v);
    }
    dims.insert(dims.end(), d.begin() + end, d.end());
    if (inferred >= 0) {
      this->check(explicit_count != 0 && b.count() % explicit_count == 0, "bottom '", this->name_of_bottom(0),
                  "' of shape ", b.shape().str(), " has ", b.count(),
                  " elements, not divisible by the product of the other dimensions (", explicit_count,
                  "), so reshape_param's -1 cannot be inferred");
      dims[static_cast<std::size_t>(inferred)] = static_cast<int>(b.count() / explicit_count);
    }
    this->check(dims.size() <= static_cast<std::size_t>(Shape::max_axes), "reshape_param shape gives ", dims.size(),
                " axes; at most ", Shape::max_axes);
    Shape shape;
    try {
      shape = Shape(dims);
    } catch (const Error& e) {  // e.g. explicit dims whose product overflows: name the layer
      this->fail("reshape_param shape: ", e.what());
    }
    this->check(shape.count() == b.count(), "reshape_param shape gives ", shape.str(), " with ", shape.count(),
                " elements, but bottom '", this->name_of_bottom(0), "' of shape ", b.shape().str(), " has ",
                b.count());
    top[0]->reshape(shape);
    top[0]->share_data(b);
    top[0]->share_diff(b);
  }

 protected:
  void layer_setup(Context&, const Vec&, const Vec&) override {
    dims_.clear();
    bool seen_infer = false;
    for (std::size_t i = 0; i < rp_.dims.size(); ++i) {
      const long long v = rp_.dims[i];
      this->check(v >= -1 && v <= std::numeric_limits<int>::max(), "reshape_param shape dim ", i, " is ", v,
                  "; use a positive size, 0 to copy the bottom's dimension or -1 to infer it");
      if (v == -1) {
        this->check(!seen_infer, "reshape_param shape has more than one -1 dim; at most one can be inferred");
        seen_infer = true;
      }
      dims_.push_back(static_cast<int>(v));
    }
  }

  void forward_impl(Context&, const Vec&, const Vec&) override {}  // shared memory
  void backward_impl(Context&, const Vec&, const std::vector<bool>&, const Vec&) override {}

 private:
  ReshapeParam rp_;
  std::vector<int> dims_;  // validated copy of rp_.dims
};

POSEIDON_REGISTER_LAYER("Reshape", ReshapeLayer)

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/layers/cuda/reshape.cuh>
#endif
