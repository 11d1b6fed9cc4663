// NetBuilder: nets written in C++ instead of prototxt. It assembles the same NetParameter
// message the prototxt reader produces, so a built net follows exactly the same rules.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/net/net.hpp>

#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

class NetBuilder {
 public:
  using Names = std::vector<std::string>;

  explicit NetBuilder(std::string name) : name_(std::move(name)) {}

  /// Any layer: its type, name, bottoms, tops and (optionally) its `<x>_param` sub-message.
  NetBuilder& add(std::string type, std::string name, const Names& bottom, const Names& top,
                  std::string param_field = {}, Message param = {}) {
    Message l;
    l.set("name", std::move(name)).set("type", std::move(type));
    for (const auto& b : bottom) l.set("bottom", b);
    for (const auto& t : top) l.set("top", t);
    if (!param_field.empty()) l.add(std::move(param_field), std::move(param));
    layers_.push_back(std::move(l));
    return *this;
  }

  /// Adds `param { lr_mult decay_mult [name] }` to the last layer added (one call per blob).
  NetBuilder& param(float lr_mult, float decay_mult = 1.0f, std::string shared_name = {}) {
    Message p;
    p.set("lr_mult", lr_mult).set("decay_mult", decay_mult);
    if (!shared_name.empty()) p.set("name", std::move(shared_name));
    return with_last("param", std::move(p));
  }
  /// Sets loss_weight on the last layer added (one call per top).
  NetBuilder& loss_weight(float w) { return with_last_scalar("loss_weight", w); }
  /// Restricts the last layer added to one phase (`include { phase: ... }`).
  NetBuilder& only_in(Phase phase) {
    Message rule;
    rule.set_enum("phase", phase_name(phase));
    return with_last("include", std::move(rule));
  }
  /// Adds any other field of the last `layer { }` (e.g. a `transform_param` message).
  NetBuilder& with_last(std::string field, Message m) {
    last().add(std::move(field), std::move(m));
    return *this;
  }

  // ---- the common layers, with Caffe's parameter names --------------------------------
  NetBuilder& input(const Names& tops, const std::vector<std::vector<int>>& shapes) {
    Message ip;
    for (const auto& s : shapes) {
      Message shape;
      for (int d : s) shape.set("dim", d);
      ip.add("shape", std::move(shape));
    }
    return add("Input", "input", {}, tops, "input_param", std::move(ip));
  }
  NetBuilder& convolution(std::string name, std::string bottom, std::string top, int num_output, int kernel,
                          int stride = 1, int pad = 0, int group = 1) {
    Message c;
    c.set("num_output", num_output).set("kernel_size", kernel).set("stride", stride).set("pad", pad).set("group", group);
    c.add("weight_filler", Message().set("type", "xavier"));
    return add("Convolution", std::move(name), {std::move(bottom)}, {std::move(top)}, "convolution_param", std::move(c));
  }
  NetBuilder& max_pool(std::string name, std::string bottom, std::string top, int kernel, int stride) {
    Message p;
    p.set_enum("pool", "MAX");
    p.set("kernel_size", kernel).set("stride", stride);
    return add("Pooling", std::move(name), {std::move(bottom)}, {std::move(top)}, "pooling_param", std::move(p));
  }
  NetBuilder& inner_product(std::string name, std::string bottom, std::string top, int num_output) {
    Message ip;
    ip.set("num_output", num_output);
    ip.add("weight_filler", Message().set("type", "xavier"));
    return add("InnerProduct", std::move(name), {std::move(bottom)}, {std::move(top)}, "inner_product_param",
               std::move(ip));
  }
  NetBuilder& relu(std::string name, std::string blob) { return add("ReLU", std::move(name), {blob}, {blob}); }
  NetBuilder& softmax_loss(std::string name, std::string scores, std::string labels, std::string top = "loss") {
    return add("SoftmaxWithLoss", std::move(name), {std::move(scores), std::move(labels)}, {std::move(top)});
  }
  NetBuilder& accuracy(std::string name, std::string scores, std::string labels, std::string top = "accuracy") {
    return add("Accuracy", std::move(name), {std::move(scores), std::move(labels)}, {std::move(top)});
  }

  /// The NetParameter message (print it with to_prototxt to get the equivalent prototxt).
  [[nodiscard]] Message message() const {
    Message net;
    net.set("name", name_);
    for (const auto& l : layers_) net.add("layer", l);
    return net;
  }
  /// Builds the net for a state (phase, level, stages).
  template <class D, class T = float>
  [[nodiscard]] Net<D, T> build(NetState state = {}, std::shared_ptr<DeviceContext<D>> ctx = nullptr) const {
    return Net<D, T>(message(), std::move(state), std::move(ctx));
  }

 private:
  // Layers stay separate messages until message() assembles them, so editing the last one
  // never touches a message already handed out (Messages share sub-messages when copied).
  Message& last() {
    POSEIDON_CHECK(!layers_.empty(), "NetBuilder: no layer to add to yet");
    return layers_.back();
  }
  template <class V>
  NetBuilder& with_last_scalar(std::string field, V v) {
    last().set(std::move(field), v);
    return *this;
  }

  std::string name_;
  std::vector<Message> layers_;
};

POSEIDON_NAMESPACE_END
