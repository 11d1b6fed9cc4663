// MemoryData: a data layer over arrays the user hands in (Caffe's MemoryDataLayer::Reset);
// forward serves consecutive batches of them and wraps around at the end.
#pragma once

#include <poseidon/data/staging.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/net/snapshot.hpp>

#include <charconv>
#include <span>
#include <string>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct MemoryDataParam {
  int batch_size = 0, channels = 0, height = 0, width = 0;

  static MemoryDataParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"batch_size", "channels", "height", "width"}, context);
    MemoryDataParam p;
    p.batch_size = m.required<int>("batch_size", context);
    p.channels = m.required<int>("channels", context);
    p.height = m.required<int>("height", context);
    p.width = m.required<int>("width", context);
    return p;
  }
};

template <class D, class T = float>
class MemoryDataLayer final : public Layer<D, T>, public ResumableLayer {
  using Base = Layer<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit MemoryDataLayer(const LayerParameter& p)
      : Base(p), mp_(MemoryDataParam::from_message(p.sub("memory_data_param"), p.describe() + " memory_data_param")) {}
  MemoryDataLayer(const LayerParameter& p, MemoryDataParam mp) : Base(p), mp_(mp) {}

  [[nodiscard]] std::string_view type() const override { return "MemoryData"; }
  [[nodiscard]] int exact_num_bottom() const override { return 0; }
  [[nodiscard]] int exact_num_top() const override { return 2; }
  [[nodiscard]] bool allow_backward_to(int) const override { return false; }

  /// Hands in n samples of (channels, height, width) and their labels; the layer keeps copies.
  void reset(std::span<const T> data, std::span<const T> labels) {
    const std::size_t per = static_cast<std::size_t>(mp_.channels) * static_cast<std::size_t>(mp_.height) *
                            static_cast<std::size_t>(mp_.width);
    this->check(!labels.empty() && data.size() == labels.size() * per, "reset with ", data.size(), " values and ",
                labels.size(), " labels; expected ", per, " values per label");
    this->check(labels.size() % static_cast<std::size_t>(mp_.batch_size) == 0, "reset with ", labels.size(),
                " samples, not a multiple of batch_size ", mp_.batch_size);
    data_.assign(data.begin(), data.end());
    labels_.assign(labels.begin(), labels.end());
    pos_ = 0;
  }
  [[nodiscard]] std::size_t size() const { return labels_.size(); }

  /// The next batch's position (the data itself is the caller's to hand in again).
  [[nodiscard]] std::string save_state() const override { return detail::concat("pos ", pos_); }
  void load_state(std::string_view bytes) override {
    this->check(bytes.substr(0, 4) == "pos ", "snapshot holds no MemoryData position");
    std::size_t pos = 0;
    const auto r = std::from_chars(bytes.data() + 4, bytes.data() + bytes.size(), pos);
    this->check(r.ec == std::errc() && (labels_.empty() || pos < labels_.size()), "snapshot position '", bytes,
                "' does not fit the ", labels_.size(), " samples handed in");
    pos_ = pos;
  }

  void reshape(const Vec&, const Vec& top) override {
    top[0]->reshape({mp_.batch_size, mp_.channels, mp_.height, mp_.width});
    top[1]->reshape({mp_.batch_size});
  }

 protected:
  void layer_setup(Context&, const Vec&, const Vec&) override {
    this->check(mp_.batch_size > 0 && mp_.channels > 0 && mp_.height > 0 && mp_.width > 0,
                "batch_size, channels, height and width must all be positive");
  }
  void forward_impl(Context& ctx, const Vec&, const Vec& top) override {
    this->check(!labels_.empty(), "forward before reset(): no data was handed in");
    const std::size_t b = static_cast<std::size_t>(mp_.batch_size);
    const std::size_t per = top[0]->count(1);
    data_staging_.upload(std::span<const T>(data_).subspan(pos_ * per, b * per), *top[0], ctx);
    label_staging_.upload(std::span<const T>(labels_).subspan(pos_, b), *top[1], ctx);
    pos_ = (pos_ + b) % labels_.size();
  }
  void backward_impl(Context&, const Vec&, const std::vector<bool>&, const Vec&) override {}

 private:
  MemoryDataParam mp_;
  std::vector<T> data_, labels_;
  std::size_t pos_ = 0;
  // On CUDA each batch goes through pinned memory; the arrays handed in stay pageable.
  detail::BatchStaging<D, T> data_staging_, label_staging_;
};

POSEIDON_REGISTER_LAYER("MemoryData", MemoryDataLayer)
#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
POSEIDON_REGISTER_LAYER_CUDA("MemoryData", MemoryDataLayer)
#endif

POSEIDON_NAMESPACE_END
