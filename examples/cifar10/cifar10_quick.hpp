// The CIFAR-10 example's net plumbing: finding the binary files, pointing the net's Cifar10Data
// layers at them, or swapping those layers for DummyData of the same shapes (tests use it too).
#pragma once

#include <poseidon/core/error.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/data/cifar10.hpp>
#include <poseidon/data/transform.hpp>

#include <filesystem>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

namespace cifar10_example {

namespace pd = poseidon;
namespace fs = std::filesystem;

/// The folder the official archive (cifar-10-binary.tar.gz) unpacks to.
inline constexpr std::string_view archive_folder = "cifar-10-batches-bin";

/// True when `dir` holds all six files of the binary version.
inline bool has_cifar10_files(const fs::path& dir) {
  for (const char* f : {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
                        "data_batch_5.bin", "test_batch.bin"})
    if (!fs::is_regular_file(dir / f)) return false;
  return true;
}

/// `dir` itself, or its cifar-10-batches-bin subfolder, whichever holds the files.
inline std::optional<fs::path> find_cifar10_dir(const fs::path& dir) {
  if (dir.empty()) return std::nullopt;
  if (has_cifar10_files(dir)) return dir;
  if (has_cifar10_files(dir / archive_folder)) return dir / archive_folder;
  return std::nullopt;
}

namespace detail {

/// A copy of `m` without the fields named in `skip` (Message has no field removal).
inline pd::Message copy_without(const pd::Message& m, std::initializer_list<std::string_view> skip) {
  pd::Message out(m.loc());
  for (const pd::Field& f : m.fields()) {
    bool skipped = false;
    for (auto s : skip) skipped = skipped || f.name == s;
    if (!skipped) out.add(f);
  }
  return out;
}

/// `net` with every Cifar10Data layer replaced by `replace(layer)`; counts the replacements.
inline pd::Message map_cifar10_layers(const pd::Message& net,
                                      const std::function<pd::Message(const pd::Message&)>& replace, int& replaced) {
  replaced = 0;
  pd::Message out(net.loc());
  for (const pd::Field& f : net.fields()) {
    if (f.is_message && f.name == "layer" && f.message->get<std::string>("type", "") == "Cifar10Data") {
      out.add(f.name, replace(*f.message), f.loc);
      ++replaced;
    } else {
      out.add(f);
    }
  }
  return out;
}

}  // namespace detail

/// `net` with every Cifar10Data layer reading from `dir` (absolute, so no lookup applies).
inline pd::Message with_data_dir(const pd::Message& net, const fs::path& dir) {
  const std::string source = fs::absolute(dir).string();
  int n = 0;
  pd::Message out = detail::map_cifar10_layers(
      net,
      [&](const pd::Message& layer) {
        pd::Message l = detail::copy_without(layer, {"cifar10_data_param"});
        l.add("cifar10_data_param", detail::copy_without(layer.child("cifar10_data_param"), {"source"}).set("source", source));
        return l;
      },
      n);
  POSEIDON_CHECK(n > 0, "net has no Cifar10Data layer to point at ", source);
  return out;
}

/// `net` with every Cifar10Data layer replaced by a DummyData layer with the same name, tops and
/// phase rules, serving what the real layer would serve in shape: batch x 3 x 32 x 32 (or the crop)
/// Gaussian images like mean-subtracted pixels (std 64), and every label 0. The labels are constant
/// because DummyData draws data and labels independently: nothing else would be learnable.
inline pd::Message with_synthetic_data(const pd::Message& net) {
  int n = 0;
  pd::Message out = detail::map_cifar10_layers(
      net,
      [](const pd::Message& layer) {
        const std::string context = "layer '" + layer.get<std::string>("name", "") + "'";
        const auto cp = pd::Cifar10DataParam::from_message(layer.child("cifar10_data_param"), context + " cifar10_data_param");
        const auto tp = pd::TransformParam::from_message(layer.child("transform_param"), context + " transform_param");
        const int side = tp.crop_size ? tp.crop_size : pd::Cifar10Dataset::height;
        pd::Message dummy;
        dummy.add("shape", pd::Message().set("dim", cp.batch_size).set("dim", pd::Cifar10Dataset::channels)
                               .set("dim", side).set("dim", side));
        dummy.add("shape", pd::Message().set("dim", cp.batch_size));
        dummy.add("data_filler", pd::Message().set("type", "gaussian").set("std", 64.0));
        dummy.add("data_filler", pd::Message().set("type", "constant").set("value", 0));
        pd::Message l = detail::copy_without(layer, {"type", "cifar10_data_param", "transform_param"});
        l.set("type", "DummyData");
        l.add("dummy_data_param", dummy);
        return l;
      },
      n);
  POSEIDON_CHECK(n > 0, "net has no Cifar10Data layer to replace with synthetic data");
  return out;
}

/// The training batch size of the net's TRAIN-phase Cifar10Data layer (Caffe's quick net: 100).
inline int train_batch_size(const pd::Message& net) {
  for (const pd::Message* l : net.children("layer")) {
    if (l->get<std::string>("type", "") != "Cifar10Data") continue;
    bool test_only = false;
    for (const pd::Message* inc : l->children("include"))
      test_only = test_only || inc->get_enum("phase", {"TRAIN", "TEST"}, 0) == 1;
    if (!test_only) return l->child("cifar10_data_param").get("batch_size", 0);
  }
  pd::detail::raise("net has no TRAIN-phase Cifar10Data layer");
}

}  // namespace cifar10_example
