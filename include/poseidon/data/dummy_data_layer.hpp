// DummyData: Caffe's synthetic data layer. Each top is filled by a filler (constant, uniform,
// gaussian, ...); non-constant fillers draw fresh values every forward, as in Caffe.
#pragma once

#include <poseidon/core/filler.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>

#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct DummyDataParam {
  std::vector<FillerParameter> fillers;
  std::vector<Shape> shapes;

  static DummyDataParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"data_filler", "shape", "num", "channels", "height", "width"}, context);
    DummyDataParam p;
    for (const Message* f : m.children("data_filler"))
      p.fillers.push_back(FillerParameter::from_message(*f, detail::concat(context, " data_filler")));
    for (const Message* s : m.children("shape")) {
      std::vector<int> dims;
      for (auto d : s->get_all<int>("dim")) {
        POSEIDON_CHECK(d >= 0, context, ": negative dim ", d);
        dims.push_back(d);
      }
      p.shapes.emplace_back(std::move(dims));
    }
    const auto num = m.get_all<int>("num"), ch = m.get_all<int>("channels"), h = m.get_all<int>("height"),
               w = m.get_all<int>("width");
    if (!num.empty()) {
      POSEIDON_CHECK(p.shapes.empty(), context, ": give either shape or num/channels/height/width, not both");
      POSEIDON_CHECK(ch.size() == num.size() && h.size() == num.size() && w.size() == num.size(), context,
                     ": num, channels, height and width must have the same number of entries");
      for (std::size_t i = 0; i < num.size(); ++i) p.shapes.push_back(Shape{num[i], ch[i], h[i], w[i]});
    }
    return p;
  }
};

template <class D, class T = float>
class DummyDataLayer final : public Layer<D, T> {
  using Base = Layer<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit DummyDataLayer(const LayerParameter& p)
      : Base(p), dp_(DummyDataParam::from_message(p.sub("dummy_data_param"), p.describe() + " dummy_data_param")) {}
  DummyDataLayer(const LayerParameter& p, DummyDataParam dp) : Base(p), dp_(std::move(dp)) {}

  [[nodiscard]] std::string_view type() const override { return "DummyData"; }
  [[nodiscard]] int exact_num_bottom() const override { return 0; }
  [[nodiscard]] int min_num_top() const override { return 1; }
  [[nodiscard]] bool allow_backward_to(int) const override { return false; }

  void reshape(const Vec&, const Vec&) override {}

 protected:
  void layer_setup(Context& ctx, const Vec&, const Vec& top) override {
    const std::size_t n = top.size();
    this->check(dp_.shapes.size() == 1 || dp_.shapes.size() == n, "has ", dp_.shapes.size(), " shapes for ", n,
                " tops; give one shape, or one per top");
    this->check(dp_.fillers.size() <= 1 || dp_.fillers.size() == n, "has ", dp_.fillers.size(), " data_fillers for ",
                n, " tops; give none (zeros), one, or one per top");
    fillers_.clear();
    for (std::size_t i = 0; i < n; ++i) {
      fillers_.push_back(dp_.fillers.empty() ? FillerParameter{} : dp_.fillers[dp_.fillers.size() == 1 ? 0 : i]);
      top[i]->reshape(dp_.shapes[dp_.shapes.size() == 1 ? 0 : i]);
      fill(fillers_[i], *top[i], ctx.rng());  // constant tops are filled here once
    }
  }
  void forward_impl(Context& ctx, const Vec&, const Vec& top) override {
    for (std::size_t i = 0; i < top.size(); ++i)
      if (fillers_[i].type != "constant") fill(fillers_[i], *top[i], ctx.rng());
  }
  void backward_impl(Context&, const Vec&, const std::vector<bool>&, const Vec&) override {}

 private:
  DummyDataParam dp_;
  std::vector<FillerParameter> fillers_;
};

POSEIDON_REGISTER_LAYER("DummyData", DummyDataLayer)
#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
// Device-generic: fill() draws on the host (the CPU's numbers, same RNG) and copies the result.
POSEIDON_REGISTER_LAYER_CUDA("DummyData", DummyDataLayer)
#endif

POSEIDON_NAMESPACE_END
