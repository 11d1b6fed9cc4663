// Fillers: Caffe's weight initialisers (constant, uniform, gaussian, positive_unitball, xavier,
// msra, bilinear), parsed from `weight_filler { ... }` and applied through the host.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/core/rng.hpp>
#include <poseidon/core/tensor.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct FillerParameter {
  enum class VarianceNorm { fan_in, fan_out, average };
  std::string type = "constant";
  double value = 0;
  double min = 0, max = 1;
  double mean = 0, std = 1;
  int sparse = -1;
  VarianceNorm variance_norm = VarianceNorm::fan_in;

  static FillerParameter from_message(const Message& m, std::string_view context) {
    m.check_fields({"type", "value", "min", "max", "mean", "std", "sparse", "variance_norm"}, context);
    FillerParameter f;
    f.type = m.get<std::string>("type", "constant");
    f.value = m.get("value", 0.0);
    f.min = m.get("min", 0.0);
    f.max = m.get("max", 1.0);
    f.mean = m.get("mean", 0.0);
    f.std = m.get("std", 1.0);
    f.sparse = m.get("sparse", -1);
    f.variance_norm = static_cast<VarianceNorm>(m.get_enum("variance_norm", {"FAN_IN", "FAN_OUT", "AVERAGE"}, 0));
    static constexpr std::string_view known[] = {"constant", "uniform",  "gaussian", "positive_unitball",
                                                 "xavier",   "msra",     "bilinear"};
    bool ok = false;
    for (auto k : known) ok = ok || f.type == k;
    if (!ok)
      detail::raise(context, ": unknown filler type '", f.type,
                    "' (known: constant, uniform, gaussian, positive_unitball, xavier, msra, bilinear)");
    POSEIDON_CHECK(f.type != "uniform" || f.min <= f.max, context, ": uniform filler has min ", f.min, " > max ",
                   f.max);
    POSEIDON_CHECK(f.type != "gaussian" || f.std >= 0, context, ": gaussian filler has negative std ", f.std);
    return f;
  }
};

/// Fills t.data() as Caffe's filler of the same name would; the RNG makes it reproducible.
template <class D, class T>
void fill(const FillerParameter& f, Tensor<D, T>& t, Rng& rng) {
  const std::size_t n = t.count();
  if (n == 0) return;
  std::vector<T> v(n);
  // Caffe's fan_in/fan_out: count / shape[0], and count / shape[1].
  const double fan_in = t.num_axes() > 0 && t.shape(0) ? static_cast<double>(n) / t.shape(0) : 1.0;
  const double fan_out = t.num_axes() > 1 && t.shape(1) ? static_cast<double>(n) / t.shape(1) : 1.0;
  auto norm = [&] {
    switch (f.variance_norm) {
      case FillerParameter::VarianceNorm::fan_out: return fan_out;
      case FillerParameter::VarianceNorm::average: return (fan_in + fan_out) / 2;
      default: return fan_in;
    }
  };
  if (f.type == "constant") {
    for (auto& x : v) x = static_cast<T>(f.value);
  } else if (f.type == "uniform") {
    for (auto& x : v) x = static_cast<T>(rng.uniform<double>(f.min, f.max));
  } else if (f.type == "gaussian") {
    for (auto& x : v) x = static_cast<T>(rng.gaussian<double>(f.mean, f.std));
    if (f.sparse >= 0) {
      // Each output keeps on average `sparse` non-zero inputs (Caffe's sparse gaussian).
      POSEIDON_CHECK(t.num_axes() >= 1, "sparse gaussian filler needs at least one axis");
      const double num_outputs = t.shape(0);
      const double p = std::min(1.0, f.sparse / num_outputs);
      for (auto& x : v)
        if (!rng.bernoulli(p)) x = T(0);
    }
  } else if (f.type == "positive_unitball") {
    POSEIDON_CHECK(t.num_axes() >= 1 && t.shape(0) > 0, "positive_unitball filler needs a leading axis");
    for (auto& x : v) x = static_cast<T>(rng.uniform<double>(0.0, 1.0));
    const std::size_t dim = n / static_cast<std::size_t>(t.shape(0));
    for (std::size_t i = 0; i < static_cast<std::size_t>(t.shape(0)); ++i) {
      double s = 0;
      for (std::size_t j = 0; j < dim; ++j) s += static_cast<double>(v[i * dim + j]);
      for (std::size_t j = 0; j < dim; ++j) v[i * dim + j] = static_cast<T>(v[i * dim + j] / s);
    }
  } else if (f.type == "xavier") {
    const double scale = std::sqrt(3.0 / norm());
    for (auto& x : v) x = static_cast<T>(rng.uniform<double>(-scale, scale));
  } else if (f.type == "msra") {
    const double stddev = std::sqrt(2.0 / norm());
    for (auto& x : v) x = static_cast<T>(rng.gaussian<double>(0.0, stddev));
  } else if (f.type == "bilinear") {
    // Upsampling kernel for deconvolution; Caffe's formula over the last two axes.
    POSEIDON_CHECK(t.num_axes() == 4 && t.shape(2) == t.shape(3), "bilinear filler needs a square 4-d kernel, got ",
                   t.shape().str());
    const int k = t.shape(3);
    const int f = (k + 1) / 2;
    const double c = (2.0 * f - 1 - f % 2) / (2.0 * f);
    for (std::size_t i = 0; i < n; ++i) {
      const double x = static_cast<double>(i % static_cast<std::size_t>(k));
      const double y = static_cast<double>((i / static_cast<std::size_t>(k)) % static_cast<std::size_t>(k));
      v[i] = static_cast<T>((1 - std::abs(x / f - c)) * (1 - std::abs(y / f - c)));
    }
  } else {
    detail::raise("unknown filler type '", f.type, "'");
  }
  t.copy_data_from_host(v);
}

POSEIDON_NAMESPACE_END
