// The LayerParameters (and the inputs made for them) that the CPU and CUDA tests of a layer both
// build, so that each device's test runs the same configurations.
#pragma once

#include <poseidon/core/message.hpp>
#include <poseidon/core/rng.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/layer_parameter.hpp>

#include <cstddef>
#include <cstdint>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace poseidon::testing {

/// A layer from bottom x to top y, the wiring of most one-input tests.
inline LayerParameter x_to_y(std::string name, std::string type) {
  LayerParameter p(std::move(name), std::move(type));
  p.bottom = {"x"};
  p.top = {"y"};
  return p;
}

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
  LayerParameter p = x_to_y("bn", "BatchNorm");
  p.phase = phase;
  Message m;
  if (global) m.set("use_global_stats", *global);
  m.set("moving_average_fraction", maf).set("eps", eps);
  return p.with("batch_norm_param", m);
}

inline LayerParameter dropout_param(double ratio, Phase phase = Phase::train, bool scale_train = true) {
  LayerParameter p = x_to_y("drop", "Dropout");
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
  LayerParameter p = x_to_y("act", type);
  if (sub) p.with(sub, std::move(m));
  return p;
}

inline LayerParameter relu_param(double slope) {
  return act_param("ReLU", "relu_param", Message().set("negative_slope", slope));
}

/// A convolution in Caffe's per-axis fields; the defaults are 4 outputs, 3x3, no pad, stride 1,
/// no dilation, one group, with bias.
struct ConvCfg {
  int num_output = 4;
  int kh = 3, kw = 3;
  int pad_h = 0, pad_w = 0;
  int stride_h = 1, stride_w = 1;
  int dil_h = 1, dil_w = 1;
  int group = 1;
  bool bias = true;
};

/// The convolution_param of c, with random weights and bias so that every tap matters.
inline Message conv_msg(const ConvCfg& c) {
  Message m;
  m.set("num_output", c.num_output).set("bias_term", c.bias).set("group", c.group);
  m.set("kernel_h", c.kh).set("kernel_w", c.kw);
  m.set("pad_h", c.pad_h).set("pad_w", c.pad_w);
  m.set("stride_h", c.stride_h).set("stride_w", c.stride_w);
  m.set("dilation", c.dil_h).set("dilation", c.dil_w);
  m.add("weight_filler", Message().set("type", "gaussian").set("std", 0.5));
  m.add("bias_filler", Message().set("type", "uniform").set("min", -1).set("max", 1));
  return m;
}

/// A Convolution over 1 to 3 bottoms (a, b, c; tops ya, yb, yc), which share its weights.
inline LayerParameter conv_param(const Message& m, std::string name = "conv", int bottoms = 1) {
  LayerParameter p(std::move(name), "Convolution");
  const std::vector<std::string> in{"a", "b", "c"}, out{"ya", "yb", "yc"};
  p.bottom.assign(in.begin(), in.begin() + bottoms);
  p.top.assign(out.begin(), out.begin() + bottoms);
  return p.with("convolution_param", m);
}

inline LayerParameter conv_param(const ConvCfg& c, int bottoms = 1) { return conv_param(conv_msg(c), "conv", bottoms); }

inline Message pool_msg(const char* method, int kernel, int stride = 1, int pad = 0) {
  Message m;
  m.set_enum("pool", method).set("kernel_size", kernel).set("stride", stride).set("pad", pad);
  return m;
}

/// Pooling with per-axis kernel, stride and pad.
inline Message pool_msg_hw(const char* method, int kh, int kw, int sh, int sw, int ph, int pw) {
  Message m;
  m.set_enum("pool", method).set("kernel_h", kh).set("kernel_w", kw).set("stride_h", sh).set("stride_w", sw);
  m.set("pad_h", ph).set("pad_w", pw);
  return m;
}

inline LayerParameter pool_param(const Message& m, std::string name = "pool") {
  return x_to_y(std::move(name), "Pooling").with("pooling_param", m);
}

/// The same Pooling with the second top, MAX's argmax mask.
inline LayerParameter pool_mask_param(const Message& m) {
  LayerParameter p = pool_param(m);
  p.top.push_back("mask");
  return p;
}

/// Distinct values spaced 0.1 apart in a shuffled order, so that a finite-difference step of
/// 1e-2 never changes which element of a pooling window is the maximum.
template <class T>
Tensor<CPU, T> distinct_tensor(const Shape& s, std::uint64_t seed = 3) {
  Tensor<CPU, T> t(s);
  std::vector<int> perm(t.count());
  std::iota(perm.begin(), perm.end(), 0);
  Rng r(seed);
  for (std::size_t i = perm.size(); i > 1; --i)
    std::swap(perm[i - 1], perm[static_cast<std::size_t>(r.uniform<double>(0.0, 1.0) * double(i)) % i]);
  const double mid = double(t.count()) / 2;
  for (std::size_t i = 0; i < t.count(); ++i) t.data()[i] = static_cast<T>((perm[i] - mid) * 0.1);
  return t;
}

inline Message lrn_msg(int size, double alpha, double beta, double k, bool within = false) {
  Message m;
  m.set("local_size", size).set("alpha", alpha).set("beta", beta).set("k", k);
  if (within) m.set_enum("norm_region", "WITHIN_CHANNEL");
  return m;
}

inline LayerParameter lrn_param(const Message& m, std::string name = "norm") {
  return x_to_y(std::move(name), "LRN").with("lrn_param", m);
}

inline LayerParameter lrn_param(int size, double alpha, double beta, double k, bool within = false) {
  return lrn_param(lrn_msg(size, alpha, beta, k, within));
}

}  // namespace poseidon::testing
