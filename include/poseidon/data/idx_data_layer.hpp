// IdxData: a data layer serving batches of an MNIST-family IDX data set (images + labels), with
// transform_param, optional shuffling each epoch, and sharding by rank for distributed training.
#pragma once

#include <poseidon/data/dataset_reader.hpp>
#include <poseidon/data/idx.hpp>
#include <poseidon/data/staging.hpp>
#include <poseidon/data/transform.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/net/snapshot.hpp>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct IdxDataParam {
  std::string images;
  std::string labels;
  int batch_size = 0;
  bool shuffle = false;

  static IdxDataParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"images", "labels", "batch_size", "shuffle"}, context);
    IdxDataParam p;
    p.images = m.required<std::string>("images", context);
    p.labels = m.required<std::string>("labels", context);
    p.batch_size = m.required<int>("batch_size", context);
    p.shuffle = m.get("shuffle", false);
    return p;
  }
};

namespace detail {
/// A relative data path is looked up in $POSEIDON_DATA_DIR first, then in the working directory.
inline std::filesystem::path resolve_data_path(const std::string& path, std::string_view context) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  if (p.is_absolute()) {
    POSEIDON_CHECK(fs::exists(p), context, ": data file ", path, " does not exist");
    return p;
  }
  const char* dir = std::getenv("POSEIDON_DATA_DIR");
  if (dir && *dir && fs::exists(fs::path(dir) / p)) return fs::path(dir) / p;
  if (fs::exists(p)) return p;
  detail::raise(context, ": data file '", path, "' not found in POSEIDON_DATA_DIR (",
                dir && *dir ? dir : "unset", ") nor in the working directory ", fs::current_path().string(),
                "; set POSEIDON_DATA_DIR or give an absolute path");
}

}  // namespace detail

template <class D, class T = float>
class IdxDataLayer final : public Layer<D, T>, public ResumableLayer {
  using Base = Layer<D, T>;

 public:
  using typename Base::Context;
  using typename Base::Vec;

  explicit IdxDataLayer(const LayerParameter& p)
      : Base(p),
        ip_(IdxDataParam::from_message(p.sub("idx_data_param"), p.describe() + " idx_data_param")),
        transformer_(TransformParam::from_message(p.sub("transform_param"), p.describe() + " transform_param"), p.phase,
                     p.describe()) {}

  [[nodiscard]] std::string_view type() const override { return "IdxData"; }
  [[nodiscard]] int exact_num_bottom() const override { return 0; }
  [[nodiscard]] int min_num_top() const override { return 1; }
  [[nodiscard]] int max_num_top() const override { return 2; }

  /// Serves only samples r, r+P, r+2P, ... (rank r of P); restarts the epoch.
  void shard(int rank, int world) { reader_.shard(rank, world); }
  [[nodiscard]] std::size_t size() const { return reader_.data().size(); }
  /// Samples served so far in the current pass, for epoch accounting.
  [[nodiscard]] std::size_t cursor() const { return reader_.cursor(); }

  /// The position in the data (cursor and shuffled order), so a resumed run reads what an
  /// uninterrupted one would have read.
  [[nodiscard]] std::string save_state() const override { return reader_.save_state(); }
  void load_state(std::string_view bytes) override { reader_.load_state(bytes, this->describe()); }

  void reshape(const Vec&, const Vec& top) override {
    const auto s = reader_.data().image_shape();
    const auto o = transformer_.output_shape(s[0], s[1], s[2]);
    top[0]->reshape({ip_.batch_size, o[0], o[1], o[2]});
    if (top.size() > 1) top[1]->reshape({ip_.batch_size});
  }

 protected:
  void layer_setup(Context& ctx, const Vec&, const Vec&) override {
    this->check(ip_.batch_size > 0, "batch_size must be positive, got ", ip_.batch_size);
    const auto images = detail::resolve_data_path(ip_.images, this->describe());
    const auto labels = detail::resolve_data_path(ip_.labels, this->describe());
    reader_ = detail::DatasetReader<IdxDataset>(std::make_unique<IdxDataset>(images, labels, 1.0f), ip_.shuffle);
    reader_.start(ctx.rng());
  }

  void forward_impl(Context& ctx, const Vec&, const Vec& top) override {
    const auto s = reader_.data().image_shape();
    const std::size_t batch = static_cast<std::size_t>(ip_.batch_size), per = top[0]->count(1);
    reader_.fill(ip_.batch_size, transformer_, s[0], s[1], s[2], per, ctx.rng(), data_staging_.host(batch * per),
                 label_staging_.host(batch));
    data_staging_.upload(*top[0], ctx);
    if (top.size() > 1) label_staging_.upload(*top[1], ctx);
  }
  void backward_impl(Context&, const Vec&, const std::vector<bool>&, const Vec&) override {}

 private:
  IdxDataParam ip_;
  DataTransformer transformer_;
  detail::DatasetReader<IdxDataset> reader_;
  // Host memory the batches are assembled in (pinned on CUDA).
  detail::BatchStaging<D, T> data_staging_, label_staging_;
};

POSEIDON_REGISTER_LAYER("IdxData", IdxDataLayer)
#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
// Device-generic: batches are assembled on the host and uploaded (data/cuda/staging.cuh).
POSEIDON_REGISTER_LAYER_CUDA("IdxData", IdxDataLayer)
#endif

POSEIDON_NAMESPACE_END
