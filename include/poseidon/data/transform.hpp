// Caffe's transform_param for image batches: scale, per-channel mean_value, random mirror and
// crop in TRAIN, centre crop in TEST. Applied on the host while a batch is assembled.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/core/rng.hpp>
#include <poseidon/layers/layer_parameter.hpp>

#include <cstddef>
#include <string>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct TransformParam {
  float scale = 1.0f;
  bool mirror = false;
  int crop_size = 0;
  std::vector<float> mean_value;

  static TransformParam from_message(const Message& m, std::string_view context) {
    m.check_fields({"scale", "mirror", "crop_size", "mean_value", "mean_file", "force_color", "force_gray"}, context);
    POSEIDON_CHECK(!m.has("mean_file"), context, ": mean_file (binaryproto) is not supported; give mean_value per channel");
    TransformParam t;
    t.scale = m.get("scale", 1.0f);
    t.mirror = m.get("mirror", false);
    t.crop_size = m.get("crop_size", 0);
    t.mean_value = m.get_all<float>("mean_value");
    POSEIDON_CHECK(t.crop_size >= 0, context, ": crop_size must be >= 0, got ", t.crop_size);
    return t;
  }
};

/// Transforms images (C, H, W) into (C, crop or H, crop or W), with Caffe's order:
/// crop/mirror choose the source pixel, then (x - mean[c]) * scale.
class DataTransformer {
 public:
  DataTransformer(TransformParam p, Phase phase, std::string context)
      : p_(std::move(p)), phase_(phase), context_(std::move(context)) {}

  /// Output (C, H, W) for an input of (C, H, W); errors name the layer.
  [[nodiscard]] std::vector<int> output_shape(int c, int h, int w) const {
    POSEIDON_CHECK(p_.mean_value.empty() || p_.mean_value.size() == 1 || static_cast<int>(p_.mean_value.size()) == c,
                   context_, ": ", p_.mean_value.size(), " mean_value entries for ", c, " channels; give 1 or ", c);
    if (p_.crop_size == 0) return {c, h, w};
    POSEIDON_CHECK(p_.crop_size <= h && p_.crop_size <= w, context_, ": crop_size ", p_.crop_size,
                   " exceeds the image size ", h, "x", w);
    return {c, p_.crop_size, p_.crop_size};
  }

  /// Writes one transformed image; `rng` draws the crop offset and mirror flip in TRAIN.
  template <class Src, class T>
  void apply(const Src* src, int c, int h, int w, T* dst, Rng& rng) const {
    const auto out = output_shape(c, h, w);
    const int oh = out[1], ow = out[2];
    int y0 = 0, x0 = 0;
    if (p_.crop_size) {
      if (phase_ == Phase::train) {
        y0 = static_cast<int>(rng.uniform_index(static_cast<std::uint64_t>(h - oh + 1)));
        x0 = static_cast<int>(rng.uniform_index(static_cast<std::uint64_t>(w - ow + 1)));
      } else {
        y0 = (h - oh) / 2;
        x0 = (w - ow) / 2;
      }
    }
    const bool flip = p_.mirror && phase_ == Phase::train && rng.bernoulli(0.5);
    for (int ch = 0; ch < c; ++ch) {
      const float mean = p_.mean_value.empty() ? 0.0f : p_.mean_value[p_.mean_value.size() == 1 ? 0 : static_cast<std::size_t>(ch)];
      for (int y = 0; y < oh; ++y)
        for (int x = 0; x < ow; ++x) {
          const int sx = flip ? (x0 + ow - 1 - x) : (x0 + x);
          const float v = static_cast<float>(src[(static_cast<std::size_t>(ch) * static_cast<std::size_t>(h) +
                                                  static_cast<std::size_t>(y0 + y)) * static_cast<std::size_t>(w) +
                                                 static_cast<std::size_t>(sx)]);
          dst[(static_cast<std::size_t>(ch) * static_cast<std::size_t>(oh) + static_cast<std::size_t>(y)) *
                  static_cast<std::size_t>(ow) + static_cast<std::size_t>(x)] = static_cast<T>((v - mean) * p_.scale);
        }
    }
  }

  [[nodiscard]] const TransformParam& param() const { return p_; }

 private:
  TransformParam p_;
  Phase phase_;
  std::string context_;
};

POSEIDON_NAMESPACE_END
