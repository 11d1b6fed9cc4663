// LayerParameter: the part of Caffe's `layer { ... }` message every layer shares (name, type,
// bottoms, tops, param specs, loss weights), plus the whole message for layer-specific fields.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/message.hpp>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

enum class Phase { train, test };

inline const char* phase_name(Phase p) { return p == Phase::train ? "TRAIN" : "TEST"; }

/// Caffe's ParamSpec: how the solver treats one learnable parameter of a layer.
struct ParamSpec {
  std::string name;  // non-empty: shared with every other parameter of that name
  float lr_mult = 1.0f;
  float decay_mult = 1.0f;
};

struct LayerParameter {
  std::string name;
  std::string type;
  std::vector<std::string> bottom;
  std::vector<std::string> top;
  std::vector<ParamSpec> param;
  std::vector<float> loss_weight;
  std::vector<bool> propagate_down;
  Phase phase = Phase::train;
  /// The full `layer { ... }` message; layers read their own `<type>_param` from it.
  Message message;

  LayerParameter() = default;
  LayerParameter(std::string name_, std::string type_) : name(std::move(name_)), type(std::move(type_)) {}

  /// "layer 'conv1' (Convolution)": how every error about this layer begins.
  [[nodiscard]] std::string describe() const { return detail::concat("layer '", name, "' (", type, ")"); }

  /// A layer-specific sub-message such as `convolution_param`; empty when absent.
  [[nodiscard]] const Message& sub(std::string_view field) const { return message.child(field); }

  /// Sets a layer-specific sub-message (C++ builder use).
  LayerParameter& with(std::string field, Message m) {
    message.add(std::move(field), std::move(m));
    return *this;
  }

  /// Reads the common fields of a `layer { ... }` message (V1 `layers { }` are upgraded by net/).
  static LayerParameter from_message(const Message& m, Phase phase = Phase::train) {
    LayerParameter p;
    p.message = m;
    p.phase = phase;
    p.name = m.get<std::string>("name", "");
    p.type = m.get<std::string>("type", "");
    p.bottom = m.get_all<std::string>("bottom");
    p.top = m.get_all<std::string>("top");
    for (const Message* ps : m.children("param")) {
      ParamSpec s;
      s.name = ps->get<std::string>("name", "");
      s.lr_mult = ps->get("lr_mult", 1.0f);
      s.decay_mult = ps->get("decay_mult", 1.0f);
      p.param.push_back(std::move(s));
    }
    p.loss_weight = m.get_all<float>("loss_weight");
    for (bool b : m.get_all<bool>("propagate_down")) p.propagate_down.push_back(b);
    return p;
  }
};

POSEIDON_NAMESPACE_END
