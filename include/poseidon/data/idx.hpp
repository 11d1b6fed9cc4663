// IDX files (the MNIST family's format), plain or gzip-compressed, and IdxDataset: images and
// labels read together, validated, sharded by rank and served as Caffe-shaped batches.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/rng.hpp>
#include <poseidon/core/tensor.hpp>

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

/// One IDX array of unsigned bytes (the element type of every MNIST-family file).
struct IdxArray {
  std::vector<int> dims;
  std::vector<std::uint8_t> bytes;
  [[nodiscard]] std::size_t items() const { return dims.empty() ? 0 : static_cast<std::size_t>(dims[0]); }
  [[nodiscard]] std::size_t item_size() const {
    std::size_t n = 1;
    for (std::size_t i = 1; i < dims.size(); ++i) n *= static_cast<std::size_t>(dims[i]);
    return n;
  }
};

namespace detail {
struct GzCloser {
  void operator()(gzFile f) const { gzclose(f); }
};
using GzFile = std::unique_ptr<std::remove_pointer_t<gzFile>, GzCloser>;

// Reads exactly n bytes or throws, naming the file and what was being read.
inline void gz_read_exact(gzFile f, void* dst, std::size_t n, const std::string& file, const char* what) {
  auto* p = static_cast<unsigned char*>(dst);
  while (n > 0) {
    const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(n, 1u << 30));
    const int got = gzread(f, p, chunk);
    if (got <= 0) {
      int errnum = 0;
      const char* msg = gzerror(f, &errnum);
      detail::raise(file, ": truncated or unreadable IDX file while reading ", what,
                    (errnum != Z_OK && errnum != Z_STREAM_END && msg) ? detail::concat(" (", msg, ")") : std::string());
    }
    p += got;
    n -= static_cast<std::size_t>(got);
  }
}
}  // namespace detail

/// Reads an IDX file of unsigned bytes (type 0x08); gzip-compressed files are detected by content.
/// `max_bytes` bounds the payload a header may announce, so a corrupt header cannot exhaust memory.
inline IdxArray read_idx(const std::filesystem::path& path, std::size_t max_bytes = std::size_t(1) << 34) {
  const std::string file = path.string();
  POSEIDON_CHECK(std::filesystem::exists(path), file, ": no such file");
  detail::GzFile f(gzopen(file.c_str(), "rb"));
  POSEIDON_CHECK(f != nullptr, file, ": cannot open");
  std::array<unsigned char, 4> magic{};
  detail::gz_read_exact(f.get(), magic.data(), 4, file, "the magic number");
  POSEIDON_CHECK(magic[0] == 0 && magic[1] == 0, file, ": not an IDX file (bad magic ", int(magic[0]), " ",
                 int(magic[1]), ")");
  POSEIDON_CHECK(magic[2] == 0x08, file, ": IDX element type 0x", std::hex, int(magic[2]),
                 " is not supported (only unsigned bytes, 0x08)");
  const int ndims = magic[3];
  POSEIDON_CHECK(ndims >= 1 && ndims <= 4, file, ": IDX file has ", ndims, " dimensions; expected 1 to 4");
  IdxArray a;
  std::size_t total = 1;
  for (int i = 0; i < ndims; ++i) {
    std::array<unsigned char, 4> b{};
    detail::gz_read_exact(f.get(), b.data(), 4, file, "the dimensions");
    const std::uint32_t d = (std::uint32_t(b[0]) << 24) | (std::uint32_t(b[1]) << 16) | (std::uint32_t(b[2]) << 8) | b[3];
    POSEIDON_CHECK(d <= 0x7fffffffu, file, ": dimension ", i, " is ", d, ", too large");
    a.dims.push_back(static_cast<int>(d));
    total *= d;
    POSEIDON_CHECK(total <= max_bytes, file, ": header announces more than ", max_bytes, " bytes");
  }
  a.bytes.resize(total);
  detail::gz_read_exact(f.get(), a.bytes.data(), total, file, "the data");
  return a;
}

/// Images and labels of an MNIST-family data set, for one rank's shard.
class IdxDataset {
 public:
  /// Loads both files; `scale` multiplies pixel values (Caffe's LeNet uses 0.00390625 = 1/256).
  IdxDataset(const std::filesystem::path& images, const std::filesystem::path& labels, float scale = 1.0f / 256)
      : scale_(scale) {
    images_ = read_idx(images);
    labels_ = read_idx(labels);
    POSEIDON_CHECK(images_.dims.size() >= 2, images.string(), ": images need at least 2 dimensions");
    POSEIDON_CHECK(labels_.dims.size() == 1, labels.string(), ": labels must be 1-dimensional, got ",
                   labels_.dims.size(), " dimensions");
    POSEIDON_CHECK(images_.items() == labels_.items(), "image/label count mismatch: ", images.string(), " has ",
                   images_.items(), " images but ", labels.string(), " has ", labels_.items(), " labels");
    order_.resize(images_.items());
    std::iota(order_.begin(), order_.end(), std::size_t(0));
  }

  /// Keeps every P-th sample starting at r (rank r of P), so ranks see disjoint shards.
  void shard(int rank, int world) {
    POSEIDON_CHECK(world > 0 && rank >= 0 && rank < world, "IdxDataset::shard: rank ", rank, " of world ", world);
    std::vector<std::size_t> mine;
    for (std::size_t i = static_cast<std::size_t>(rank); i < images_.items(); i += static_cast<std::size_t>(world))
      mine.push_back(i);
    order_ = std::move(mine);
  }
  void shuffle(Rng& rng) {
    for (std::size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[rng.uniform_index(i)]);
  }

  [[nodiscard]] std::size_t size() const { return order_.size(); }
  /// The sample order of this shard (after shard() and shuffle()), for snapshots.
  [[nodiscard]] const std::vector<std::size_t>& order() const { return order_; }
  void set_order(std::vector<std::size_t> order) {
    for (std::size_t i : order)
      POSEIDON_CHECK(i < images_.items(), "IdxDataset: saved sample index ", i, " is out of range (", images_.items(),
                     " samples)");
    order_ = std::move(order);
  }
  /// (C, H, W) of one image: MNIST's 28x28 files have C = 1.
  [[nodiscard]] std::vector<int> image_shape() const {
    if (images_.dims.size() == 4) return {images_.dims[1], images_.dims[2], images_.dims[3]};
    if (images_.dims.size() == 3) return {1, images_.dims[1], images_.dims[2]};
    return {1, 1, images_.dims[1]};
  }

  /// The raw bytes and label of the k-th sample of this shard (in the current order).
  [[nodiscard]] const std::uint8_t* image(std::size_t k) const {
    return images_.bytes.data() + order_[k % order_.size()] * images_.item_size();
  }
  [[nodiscard]] int label(std::size_t k) const { return labels_.bytes[order_[k % order_.size()]]; }

  /// Fills data (N, C, H, W) and labels (N) with samples [first, first + n) of this shard,
  /// wrapping around at the end (Caffe's data layers cycle the same way).
  template <class T>
  void batch(std::size_t first, int n, Tensor<CPU, T>& data, Tensor<CPU, T>& labels) const {
    POSEIDON_CHECK(n > 0 && !order_.empty(), "IdxDataset::batch: empty batch or data set");
    auto s = image_shape();
    data.reshape({n, s[0], s[1], s[2]});
    labels.reshape({n});
    const std::size_t isz = images_.item_size();
    for (int k = 0; k < n; ++k) {
      const std::size_t idx = order_[(first + static_cast<std::size_t>(k)) % order_.size()];
      const std::uint8_t* src = images_.bytes.data() + idx * isz;
      T* dst = data.data() + static_cast<std::size_t>(k) * isz;
      for (std::size_t j = 0; j < isz; ++j) dst[j] = static_cast<T>(src[j]) * static_cast<T>(scale_);
      labels.data()[k] = static_cast<T>(labels_.bytes[idx]);
    }
  }

 private:
  IdxArray images_, labels_;
  std::vector<std::size_t> order_;
  float scale_;
};

POSEIDON_NAMESPACE_END
