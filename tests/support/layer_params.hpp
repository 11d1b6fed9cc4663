// The LayerParameters that the CPU and CUDA tests of a layer both build, so that each device's
// test runs the same configurations.
#pragma once

#include <poseidon/core/message.hpp>
#include <poseidon/layers/layer_parameter.hpp>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace poseidon::testing {

inline LayerParameter eltwise_param(const char* op, std::vector<double> coeff = {}, int bottoms = 2,
                                    std::optional<bool> stable = {}) {
  LayerParameter p("elt", "Eltwise");
  const std::vector<std::string> names{"b0", "b1", "b2", "b3"};
  p.bottom.assign(names.begin(), names.begin() + bottoms);
  p.top = {"y"};
  Message m;
  m.set_enum("operation", op);
  for (double c : coeff) m.set("coeff", c);
  if (stable) m.set("stable_prod_grad", *stable);
  return p.with("eltwise_param", m);
}

inline LayerParameter bn_param(Phase phase = Phase::train, std::optional<bool> global = std::nullopt, double maf = 0.999,
                               double eps = 1e-5) {
  LayerParameter p("bn", "BatchNorm");
  p.bottom = {"x"};
  p.top = {"y"};
  p.phase = phase;
  Message m;
  if (global) m.set("use_global_stats", *global);
  m.set("moving_average_fraction", maf).set("eps", eps);
  return p.with("batch_norm_param", m);
}

inline LayerParameter dropout_param(double ratio, Phase phase = Phase::train, bool scale_train = true) {
  LayerParameter p("drop", "Dropout");
  p.bottom = {"x"};
  p.top = {"y"};
  p.phase = phase;
  return p.with("dropout_param", Message().set("dropout_ratio", ratio).set("scale_train", scale_train));
}

inline LayerParameter euclidean_param(std::vector<float> loss_weight = {}) {
  LayerParameter p("l2", "EuclideanLoss");
  p.bottom = {"pred", "target"};
  p.top = {"loss"};
  p.loss_weight = std::move(loss_weight);
  return p;
}

inline LayerParameter ip_param(int num_output, bool bias = true, bool transpose = false, int axis = 1) {
  Message m;
  m.set("num_output", num_output).set("bias_term", bias).set("transpose", transpose).set("axis", axis);
  m.add("weight_filler", Message().set("type", "gaussian").set("std", 0.5));
  m.add("bias_filler", Message().set("type", "uniform").set("min", -1).set("max", 1));
  LayerParameter p("ip", "InnerProduct");
  p.bottom = {"data"};
  p.top = {"ip"};
  return p.with("inner_product_param", m);
}

inline LayerParameter act_param(const char* type, const char* sub = nullptr, Message m = {}) {
  LayerParameter p("act", type);
  p.bottom = {"x"};
  p.top = {"y"};
  if (sub) p.with(sub, std::move(m));
  return p;
}

inline LayerParameter relu_param(double slope) {
  return act_param("ReLU", "relu_param", Message().set("negative_slope", slope));
}

}  // namespace poseidon::testing
