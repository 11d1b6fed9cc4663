// DatasetReader: what every in-memory data layer does with its data set — serve transformed
// batches in (optionally shuffled) order, cycle at the end of an epoch, shard, save its position.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/rng.hpp>
#include <poseidon/data/transform.hpp>

#include <cstddef>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

POSEIDON_NAMESPACE_BEGIN
namespace detail {

/// Dataset needs size(), image(k) (bytes of sample k in the current order), label(k),
/// shuffle(rng), shard(rank, world), order() and set_order(order).
template <class Dataset>
class DatasetReader {
 public:
  DatasetReader() = default;
  DatasetReader(std::unique_ptr<Dataset> data, bool shuffle) : data_(std::move(data)), shuffle_(shuffle) {}

  [[nodiscard]] Dataset& data() { return *data_; }
  [[nodiscard]] const Dataset& data() const { return *data_; }
  [[nodiscard]] std::size_t cursor() const { return cursor_; }

  void start(Rng& rng) {
    cursor_ = 0;
    if (shuffle_) data_->shuffle(rng);
  }
  void shard(int rank, int world) {
    data_->shard(rank, world);
    cursor_ = 0;
  }

  /// Writes `batch` transformed images of shape (c, h, w) and their labels, cycling (and
  /// reshuffling, if asked) at the end of the data as Caffe's data layers do. `images` holds
  /// batch * per_image values and `labels` batch (host memory: pageable or pinned).
  template <class T>
  void fill(int batch, const DataTransformer& tf, int c, int h, int w, std::size_t per_image, Rng& rng,
            std::span<T> images, std::span<T> labels) {
    POSEIDON_CHECK(images.size() == static_cast<std::size_t>(batch) * per_image &&
                       labels.size() == static_cast<std::size_t>(batch),
                   "DatasetReader::fill: room for ", images.size(), " values and ", labels.size(),
                   " labels, a batch of ", batch, " needs ", static_cast<std::size_t>(batch) * per_image, " and ",
                   batch);
    for (int k = 0; k < batch; ++k) {
      if (cursor_ >= data_->size()) start(rng);
      tf.apply(data_->image(cursor_), c, h, w, images.data() + static_cast<std::size_t>(k) * per_image, rng);
      labels[static_cast<std::size_t>(k)] = static_cast<T>(data_->label(cursor_));
      ++cursor_;
    }
  }

  /// The position (samples served, and the order they are served in) as snapshot bytes.
  [[nodiscard]] std::string save_state() const {
    std::ostringstream os;
    const auto& order = data_->order();
    os << "cursor " << cursor_ << " order " << order.size();
    for (std::size_t i : order) os << ' ' << i;
    return os.str();
  }
  void load_state(std::string_view bytes, std::string_view context) {
    std::istringstream is{std::string(bytes)};
    std::string w1, w2;
    std::size_t cursor = 0, n = 0;
    is >> w1 >> cursor >> w2 >> n;
    POSEIDON_CHECK(is && w1 == "cursor" && w2 == "order", context, ": snapshot holds no data position");
    POSEIDON_CHECK(n <= bytes.size(), context, ": snapshot data position is corrupt");
    std::vector<std::size_t> order(n);
    for (auto& i : order) is >> i;
    POSEIDON_CHECK(!is.fail(), context, ": snapshot data position is truncated");
    POSEIDON_CHECK(n == data_->size(), context, ": snapshot was taken over ", n, " samples, this data has ",
                   data_->size());
    data_->set_order(std::move(order));
    cursor_ = cursor;
  }

 private:
  std::unique_ptr<Dataset> data_;
  bool shuffle_ = false;
  std::size_t cursor_ = 0;
};

}  // namespace detail
POSEIDON_NAMESPACE_END
