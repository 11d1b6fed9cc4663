// LayerRegistry<D, T>: Caffe's layer factory. A layer registers itself by type name with one
// line at the end of its header; nets create layers from a LayerParameter's `type`.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/layers/layer.hpp>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

template <class D, class T>
class LayerRegistry {
 public:
  using Factory = std::function<std::unique_ptr<Layer<D, T>>(const LayerParameter&)>;

  static void add(const std::string& type, Factory f) {
    auto& r = instance();
    std::lock_guard lock(r.mutex_);
    // Headers register through inline variables, once per program; a second entry for a
    // type therefore means two classes claim one name.
    POSEIDON_CHECK(r.factories_.find(type) == r.factories_.end(), "layer type '", type, "' is registered twice");
    r.factories_.emplace(type, std::move(f));
  }

  [[nodiscard]] static std::unique_ptr<Layer<D, T>> create(const LayerParameter& p) {
    auto& r = instance();
    std::lock_guard lock(r.mutex_);
    auto it = r.factories_.find(p.type);
    if (it == r.factories_.end()) {
      std::string known;
      for (const auto& [k, v] : r.factories_) {
        if (!known.empty()) known += ", ";
        known += k;
      }
      detail::raise(p.describe(), ": unknown layer type '", p.type, "' for device ", D::name,
                    " (registered: ", known, ")");
    }
    return it->second(p);
  }

  [[nodiscard]] static bool has(const std::string& type) {
    auto& r = instance();
    std::lock_guard lock(r.mutex_);
    return r.factories_.count(type) != 0;
  }
  [[nodiscard]] static std::vector<std::string> types() {
    auto& r = instance();
    std::lock_guard lock(r.mutex_);
    std::vector<std::string> out;
    for (const auto& [k, v] : r.factories_) out.push_back(k);
    return out;
  }

 private:
  static LayerRegistry& instance() {
    static LayerRegistry r;
    return r;
  }
  std::mutex mutex_;
  std::map<std::string, Factory> factories_;
};

/// Creates a layer of p.type for device D.
template <class D, class T = float>
std::unique_ptr<Layer<D, T>> make_layer(const LayerParameter& p) {
  return LayerRegistry<D, T>::create(p);
}

namespace detail {
template <template <class, class> class L, class D>
bool register_layer(const char* type) {
  LayerRegistry<D, float>::add(type, [](const LayerParameter& p) { return std::make_unique<L<D, float>>(p); });
  LayerRegistry<D, double>::add(type, [](const LayerParameter& p) { return std::make_unique<L<D, double>>(p); });
  return true;
}
}  // namespace detail

POSEIDON_NAMESPACE_END

/// Registers layer template Class<D, T> under Caffe type name `type` for float and double on the
/// CPU. Use once, at namespace scope, after the class; the layer's CUDA header (layers/cuda/*.cuh)
/// registers the CUDA side with POSEIDON_REGISTER_LAYER_CUDA. One inline variable per device
/// keeps the registration single across translation units.
#define POSEIDON_REGISTER_LAYER(type, Class) \
  inline const bool poseidon_registered_cpu_##Class = ::poseidon::detail::register_layer<Class, ::poseidon::CPU>(type);
#define POSEIDON_REGISTER_LAYER_CUDA(type, Class) \
  inline const bool poseidon_registered_cuda_##Class = ::poseidon::detail::register_layer<Class, ::poseidon::CUDA>(type);
