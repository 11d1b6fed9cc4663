// The AlexNet example's options, data sources and timed training loop, a template on the device:
// main.cpp runs it on the CPU, alexnet_cuda.cu (nvcc, when CUDA is built) on a GPU.
#pragma once

#include "example_support.hpp"

#include <poseidon/core/context.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/rng.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/data/idx.hpp>
#include <poseidon/data/staging.hpp>
#include <poseidon/layers/all.hpp>
#include <poseidon/solver/sgd.hpp>
#include <poseidon/solver/solver_config.hpp>

#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace alexnet_example {

namespace pd = poseidon;
namespace ex = example_support;

struct Options : ex::DeviceFlags {
  std::string net = POSEIDON_EXAMPLE_DIR "/alexnet.prototxt";
  int batch = 32;
  int iterations = 10;
  int threads = 0;
  std::string images, labels;
};

inline void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: poseidon_example_alexnet [--batch N] [--iterations N] [--threads N]\n"
               "                                [--images FILE --labels FILE] [--net FILE]\n"
               "                                [--device cpu|cuda] [--device-id N]\n"
               "  --batch N        images per iteration (default 32)\n"
               "  --iterations N   training iterations to time after 2 warm-up ones (default 10)\n"
               "  --threads N      CPU threads (default: all cores)\n"
               "  --images/--labels  IDX files (plain or .gz) of 3x227x227 images and their labels;\n"
               "                     without them the batches are synthetic (ImageNet-shaped noise)\n");
  ex::DeviceFlags::print_help(out, 19);
}

inline Options parse(int argc, char** argv) {
  Options o;
  for (ex::Args args(argc, argv, usage); args.next();) {
    if (o.read(args)) continue;
    const auto a = args.flag();
    if (a == "--batch") {
      o.batch = args.integer(1);
    } else if (a == "--iterations") {
      o.iterations = args.integer(1);
    } else if (a == "--threads") {
      o.threads = args.integer(1);
    } else if (a == "--images") {
      o.images = args.value();
    } else if (a == "--labels") {
      o.labels = args.value();
    } else if (a == "--net") {
      o.net = args.value();
    } else {
      args.unknown();
    }
  }
  if (o.images.empty() != o.labels.empty()) throw pd::Error("--images and --labels go together");
  return o;
}

/// A data source is anything that fills a batch in host memory: here, synthetic noise or IDX
/// files. A user's own source (a database, a decoder) plugs in the same way.
using DataSource = std::function<void(pd::Tensor<pd::CPU, float>& data, pd::Tensor<pd::CPU, float>& labels)>;

inline DataSource synthetic(std::uint64_t seed) {
  auto rng = std::make_shared<pd::Rng>(seed);
  return [rng](pd::Tensor<pd::CPU, float>& data, pd::Tensor<pd::CPU, float>& labels) {
    for (auto& x : data.data_span()) x = rng->gaussian(0.0f, 1.0f);
    for (auto& l : labels.data_span()) l = static_cast<float>(rng->uniform_index(1000));
  };
}

inline DataSource idx_files(const std::string& images, const std::string& labels) {
  auto ds = std::make_shared<pd::IdxDataset>(images, labels, 1.0f / 256);
  if (ds->image_shape() != std::vector<int>{3, 227, 227})
    throw pd::Error(images + ": AlexNet needs 3x227x227 images; this file holds " +
                    std::to_string(ds->image_shape()[0]) + "x" + std::to_string(ds->image_shape()[1]) + "x" +
                    std::to_string(ds->image_shape()[2]));
  auto next = std::make_shared<std::size_t>(0);
  return [ds, next](pd::Tensor<pd::CPU, float>& data, pd::Tensor<pd::CPU, float>& labels) {
    pd::Tensor<pd::CPU, float> d, l;
    ds->batch(*next, data.shape(0), d, l);
    *next += static_cast<std::size_t>(data.shape(0));
    data.copy_from(d);
    labels.copy_from(l);
  };
}

inline pd::SolverConfig solver_config(const Options& o) {
  pd::Message solver;
  solver.set("net", o.net).set("base_lr", 0.01).set("momentum", 0.9).set("weight_decay", 0.0005);
  solver.set("lr_policy", "fixed").set("max_iter", o.iterations + 2).set("display", 1);
  solver.set("device_id", o.device_id);
  return pd::SolverConfig::from_message(solver);
}

/// Trains on device D and prints images/s; `where` says in words what it runs on.
template <class D>
int train(const Options& o, std::shared_ptr<pd::DeviceContext<D>> ctx, const std::string& where) {
  const auto cfg = solver_config(o);
  auto s = pd::make_solver<D, float>(cfg, pd::SolverOptions().with_metrics_csv({}), ctx);

  auto& net = s->net();
  auto& data = net.blob("data");
  auto& labels = net.blob("label");
  data.reshape({o.batch, 3, 227, 227});
  labels.reshape({o.batch});
  const DataSource source = o.images.empty() ? synthetic(7) : idx_files(o.images, o.labels);
  std::printf("AlexNet, batch %d, %s, %s data\n", o.batch, where.c_str(), o.images.empty() ? "synthetic" : "IDX");

  // On a GPU the source fills host tensors, which go up through pinned memory; on the CPU it
  // fills the net's input blobs directly.
  pd::Tensor<pd::CPU, float> host_data, host_labels;
  pd::detail::BatchStaging<D, float> data_staging, label_staging;
  if constexpr (!pd::is_cpu_v<D>) {
    host_data.reshape(data.shape());
    host_labels.reshape(labels.shape());
  }

  double busy = 0;
  for (int it = 0; it < o.iterations + 2; ++it) {
    // Filling (and uploading) the batch is not part of the timed step.
    if constexpr (pd::is_cpu_v<D>) {
      source(data, labels);
    } else {
      source(host_data, host_labels);
      data_staging.upload(host_data.data_span(), data, *ctx);
      label_staging.upload(host_labels.data_span(), labels, *ctx);
      ctx->synchronize();
    }
    const auto t0 = std::chrono::steady_clock::now();
    s->step(1);
    ctx->synchronize();
    if (it >= 2) busy += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  std::printf("%.1f images/s (%.1f ms per iteration of %d images, %d iterations after 2 warm-up)\n",
              o.iterations * o.batch / busy, busy / o.iterations * 1e3, o.batch, o.iterations);
  return 0;
}

/// --device cuda; defined in alexnet_cuda.cu, present only when the binary was built with CUDA.
int train_cuda(const Options& o);

}  // namespace alexnet_example
