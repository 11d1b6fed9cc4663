// Rewrites older Caffe net definitions into the current form before a Net is built: V1
// `layers { type: CONVOLUTION }` entries, and the net-level `input:`/`input_shape`/`input_dim` fields.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/message.hpp>

#include <algorithm>
#include <string>
#include <string_view>
#include <utility>

POSEIDON_NAMESPACE_BEGIN
namespace detail {

/// V1LayerParameter's enum names and the type strings that replaced them.
inline std::string_view v1_type_name(std::string_view v1) {
  static constexpr std::pair<std::string_view, std::string_view> table[] = {
      {"ABSVAL", "AbsVal"},
      {"ACCURACY", "Accuracy"},
      {"ARGMAX", "ArgMax"},
      {"BNLL", "BNLL"},
      {"CONCAT", "Concat"},
      {"CONTRASTIVE_LOSS", "ContrastiveLoss"},
      {"CONVOLUTION", "Convolution"},
      {"DATA", "Data"},
      {"DECONVOLUTION", "Deconvolution"},
      {"DROPOUT", "Dropout"},
      {"DUMMY_DATA", "DummyData"},
      {"EUCLIDEAN_LOSS", "EuclideanLoss"},
      {"ELTWISE", "Eltwise"},
      {"EXP", "Exp"},
      {"FLATTEN", "Flatten"},
      {"HDF5_DATA", "HDF5Data"},
      {"HDF5_OUTPUT", "HDF5Output"},
      {"HINGE_LOSS", "HingeLoss"},
      {"IM2COL", "Im2col"},
      {"IMAGE_DATA", "ImageData"},
      {"INFOGAIN_LOSS", "InfogainLoss"},
      {"INNER_PRODUCT", "InnerProduct"},
      {"LRN", "LRN"},
      {"MEMORY_DATA", "MemoryData"},
      {"MULTINOMIAL_LOGISTIC_LOSS", "MultinomialLogisticLoss"},
      {"MVN", "MVN"},
      {"POOLING", "Pooling"},
      {"POWER", "Power"},
      {"RELU", "ReLU"},
      {"SIGMOID", "Sigmoid"},
      {"SIGMOID_CROSS_ENTROPY_LOSS", "SigmoidCrossEntropyLoss"},
      {"SILENCE", "Silence"},
      {"SOFTMAX", "Softmax"},
      {"SOFTMAX_LOSS", "SoftmaxWithLoss"},
      {"SPLIT", "Split"},
      {"SLICE", "Slice"},
      {"TANH", "TanH"},
      {"WINDOW_DATA", "WindowData"},
      {"THRESHOLD", "Threshold"},
  };
  for (const auto& [k, v] : table)
    if (k == v1) return v;
  return {};
}

/// One V1 `layers { }` entry as a current `layer { }` message.
inline Message upgrade_v1_layer(const Message& v1) {
  Message out(v1.loc());
  std::vector<std::string> param_names;
  std::vector<const Field*> blobs_lr, weight_decay;
  for (const Field& f : v1.fields()) {
    if (f.name == "type" && !f.is_message) {
      std::string_view t = v1_type_name(f.scalar.text);
      if (t.empty() && f.scalar.kind == Scalar::Kind::string) t = f.scalar.text;  // already a type string
      if (t.empty())
        detail::raise(f.loc.str(), ": unknown V1 layer type '", f.scalar.text, "' in layer '",
                      v1.get<std::string>("name", ""), "'");
      out.add("type", Scalar{std::string(t), Scalar::Kind::string}, f.loc);
    } else if (f.name == "param" && !f.is_message) {
      param_names.push_back(f.scalar.text);
    } else if (f.name == "blobs_lr") {
      blobs_lr.push_back(&f);
    } else if (f.name == "weight_decay") {
      weight_decay.push_back(&f);
    } else if (f.name == "layer" && f.is_message) {
      // V0 nesting (`layers { layer { ... } }`) predates even V1; it is not supported.
      detail::raise(f.loc.str(), ": V0 net definitions (a 'layer' inside 'layers') are not supported; "
                                 "upgrade the file with Caffe's upgrade_net_proto_text");
    } else {
      out.add(f);
    }
  }
  const std::size_t n = std::max({param_names.size(), blobs_lr.size(), weight_decay.size()});
  for (std::size_t i = 0; i < n; ++i) {
    Message ps(v1.loc());
    if (i < param_names.size()) ps.set("name", param_names[i]);
    if (i < blobs_lr.size()) ps.add("lr_mult", blobs_lr[i]->scalar, blobs_lr[i]->loc);
    if (i < weight_decay.size()) ps.add("decay_mult", weight_decay[i]->scalar, weight_decay[i]->loc);
    out.add("param", std::move(ps));
  }
  return out;
}

/// The net message in current form: V1 layers upgraded, net-level inputs turned into an Input layer.
inline Message upgrade_net(const Message& net) {
  const bool has_v1 = net.count("layers") > 0;
  const bool has_v2 = net.count("layer") > 0;
  if (has_v1 && has_v2)
    detail::raise(net.loc().str(), ": net mixes V1 'layers { }' and current 'layer { }' entries; use one form");
  Message out(net.loc());
  // Net-level inputs: `input: "data"` with `input_shape { dim }` (one per input) or 4 `input_dim`s each.
  const auto inputs = net.get_all<std::string>("input");
  if (!inputs.empty()) {
    Message layer(net.loc());
    layer.set("name", "input").set("type", "Input");
    for (const auto& in : inputs) layer.set("top", in);
    Message ip;
    const auto shapes = net.children("input_shape");
    const auto dims = net.get_all<std::int64_t>("input_dim");
    if (!shapes.empty()) {
      if (shapes.size() != inputs.size() && shapes.size() != 1)
        detail::raise(net.loc().str(), ": ", inputs.size(), " inputs but ", shapes.size(), " input_shape entries");
      for (const Message* s : shapes) ip.add("shape", *s);
    } else if (!dims.empty()) {
      if (dims.size() != 4 * inputs.size())
        detail::raise(net.loc().str(), ": ", inputs.size(), " inputs need ", 4 * inputs.size(), " input_dim values, got ",
                      dims.size());
      for (std::size_t i = 0; i < inputs.size(); ++i) {
        Message s;
        for (std::size_t j = 0; j < 4; ++j) s.set("dim", dims[4 * i + j]);
        ip.add("shape", std::move(s));
      }
    } else {
      detail::raise(net.loc().str(), ": net declares input '", inputs[0], "' without input_shape or input_dim");
    }
    layer.add("input_param", std::move(ip));
    out.add("layer", std::move(layer));
  }
  for (const Field& f : net.fields()) {
    if (f.name == "input" || f.name == "input_shape" || f.name == "input_dim") continue;
    if (f.name == "layers") {
      if (!f.is_message) detail::raise(f.loc.str(), ": 'layers' must be a message");
      out.add("layer", upgrade_v1_layer(*f.message), f.loc);
    } else {
      out.add(f);
    }
  }
  return out;
}

}  // namespace detail
POSEIDON_NAMESPACE_END
