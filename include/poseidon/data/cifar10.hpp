// CIFAR-10's binary format (data_batch_{1..5}.bin, test_batch.bin: records of one label byte and
// 3x32x32 pixel bytes) and Cifar10Data, a data layer serving it with transform_param.
#pragma once

#include <poseidon/data/dataset_reader.hpp>
#include <poseidon/data/idx_data_layer.hpp>
#include <poseidon/data/staging.hpp>
#include <poseidon/data/transform.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

/// The images and labels of CIFAR-10 files, in memory.
class Cifar10Dataset {
 public:
  static constexpr int channels = 3, height = 32, width = 32;
  static constexpr std::size_t image_bytes = std::size_t(channels) * height * width;
  static constexpr std::size_t record_bytes = image_bytes + 1;

  /// Reads the training batches (train = true) or the test batch from `dir`.
  Cifar10Dataset(const std::filesystem::path& dir, bool train) {
    std::vector<std::filesystem::path> files;
    if (train)
      for (int i = 1; i <= 5; ++i) files.push_back(dir / ("data_batch_" + std::to_string(i) + ".bin"));
    else
      files.push_back(dir / "test_batch.bin");
    for (const auto& f : files) read_file(f);
    order_.resize(labels_.size());
    std::iota(order_.begin(), order_.end(), std::size_t(0));
  }

  [[nodiscard]] std::size_t size() const { return order_.size(); }
  [[nodiscard]] const std::uint8_t* image(std::size_t k) const {
    return pixels_.data() + order_[k % order_.size()] * image_bytes;
  }
  [[nodiscard]] int label(std::size_t k) const { return labels_[order_[k % order_.size()]]; }
  [[nodiscard]] const std::vector<std::size_t>& order() const { return order_; }
  void set_order(std::vector<std::size_t> order) {
    for (std::size_t i : order)
      POSEIDON_CHECK(i < labels_.size(), "Cifar10Dataset: saved sample index ", i, " is out of range");
    order_ = std::move(order);
  }
  void shuffle(Rng& rng) {
    for (std::size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[rng.uniform_index(i)]);
  }
  void shard(int rank, int world) {
    POSEIDON_CHECK(world > 0 && rank >= 0 && rank < world, "Cifar10Dataset::shard: rank ", rank, " of world ", world);
    std::vector<std::size_t> mine;
    for (std::size_t i = static_cast<std::size_t>(rank); i < labels_.size(); i += static_cast<std::size_t>(world))
      mine.push_back(i);
    order_ = std::move(mine);
  }

 private:
  void read_file(const std::filesystem::path& f) {
    POSEIDON_CHECK(std::filesystem::exists(f), f.string(), ": no such file (CIFAR-10 binary version expected)");
    const auto bytes = std::filesystem::file_size(f);
    POSEIDON_CHECK(bytes > 0 && bytes % record_bytes == 0, f.string(), ": size ", bytes,
                   " is not a multiple of the 3073-byte CIFAR-10 record");
    std::ifstream in(f, std::ios::binary);
    std::vector<std::uint8_t> buf(bytes);
    in.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(bytes));
    POSEIDON_CHECK(in.good(), f.string(), ": read failed");
    for (std::size_t r = 0; r < bytes / record_bytes; ++r) {
      const std::uint8_t* rec = buf.data() + r * record_bytes;
      POSEIDON_CHECK(rec[0] < 10, f.string(), ": record ", r, " has label ", int(rec[0]), "; CIFAR-10 labels are 0..9");
      labels_.push_back(rec[0]);
      pixels_.insert(pixels_.end(), rec + 1, rec + record_bytes);
    }
  }

  std::vector<std::uint8_t> pixels_;
  std::vector<std::uint8_t> labels_;
  std::vector<std::size_t> order_;
};

struct Cifar10DataParam {
  std::string source;  // the folder holding the .bin files
  bool train = true;
  int batch_size = 0;
  bool shuffle = false;

  static Cifar10DataParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"source", "train", "batch_size", "shuffle"}, context);
    Cifar10DataParam p;
    p.source = m.required<std::string>("source", context);
    p.train = m.get("train", true);
    p.batch_size = m.required<int>("batch_size", context);
    p.shuffle = m.get("shuffle", false);
    return p;
  }
};

template <class D, class T = float>
class Cifar10DataLayer final : public Layer<D, T>, public ResumableLayer {
  using Base = Layer<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit Cifar10DataLayer(const LayerParameter& p)
      : Base(p),
        cp_(Cifar10DataParam::from_message(p.sub("cifar10_data_param"), p.describe() + " cifar10_data_param")),
        transformer_(TransformParam::from_message(p.sub("transform_param"), p.describe() + " transform_param"), p.phase,
                     p.describe()) {}

  [[nodiscard]] std::string_view type() const override { return "Cifar10Data"; }
  [[nodiscard]] int exact_num_bottom() const override { return 0; }
  [[nodiscard]] int min_num_top() const override { return 1; }
  [[nodiscard]] int max_num_top() const override { return 2; }

  void shard(int rank, int world) { reader_.shard(rank, world); }
  [[nodiscard]] std::string save_state() const override { return reader_.save_state(); }
  void load_state(std::string_view bytes) override { reader_.load_state(bytes, this->describe()); }

  void reshape(const Vec&, const Vec& top) override {
    const auto o = transformer_.output_shape(Cifar10Dataset::channels, Cifar10Dataset::height, Cifar10Dataset::width);
    top[0]->reshape({cp_.batch_size, o[0], o[1], o[2]});
    if (top.size() > 1) top[1]->reshape({cp_.batch_size});
  }

 protected:
  void layer_setup(Context& ctx, const Vec&, const Vec&) override {
    this->check(cp_.batch_size > 0, "batch_size must be positive, got ", cp_.batch_size);
    namespace fs = std::filesystem;
    fs::path dir = cp_.source;
    if (dir.is_relative()) {
      const char* root = std::getenv("POSEIDON_DATA_DIR");
      if (root && *root && fs::exists(fs::path(root) / dir)) dir = fs::path(root) / dir;
    }
    reader_ = detail::DatasetReader<Cifar10Dataset>(std::make_unique<Cifar10Dataset>(dir, cp_.train), cp_.shuffle);
    reader_.start(ctx.rng());
  }
  void forward_impl(Context& ctx, const Vec&, const Vec& top) override {
    const std::size_t batch = static_cast<std::size_t>(cp_.batch_size), per = top[0]->count(1);
    reader_.fill(cp_.batch_size, transformer_, Cifar10Dataset::channels, Cifar10Dataset::height,
                 Cifar10Dataset::width, per, ctx.rng(), data_staging_.host(batch * per), label_staging_.host(batch));
    data_staging_.upload(*top[0], ctx);
    if (top.size() > 1) label_staging_.upload(*top[1], ctx);
  }
  void backward_impl(Context&, const Vec&, const std::vector<bool>&, const Vec&) override {}

 private:
  Cifar10DataParam cp_;
  DataTransformer transformer_;
  detail::DatasetReader<Cifar10Dataset> reader_;
  // Host memory the batches are assembled in (pinned on CUDA).
  detail::BatchStaging<D, T> data_staging_, label_staging_;
};

POSEIDON_REGISTER_LAYER("Cifar10Data", Cifar10DataLayer)
#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
// Device-generic: batches are assembled on the host and uploaded (data/cuda/staging.cuh).
POSEIDON_REGISTER_LAYER_CUDA("Cifar10Data", Cifar10DataLayer)
#endif

POSEIDON_NAMESPACE_END
