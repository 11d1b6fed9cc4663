// The layers both layer benchmarks time (bench_layers.cpp on the CPU, cuda_bench_layers.cu on the
// GPU): each one's prototxt parameters, input shape, printed label and nominal operation counts.
#pragma once

#include <poseidon/core/message.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/layer_parameter.hpp>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

namespace poseidon::bench {

inline int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}
inline double env_double(const char* name, double fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atof(v) : fallback;
}

/// A cheap deterministic pattern in [-0.5, 0.5): the values do not matter for timing, but they
/// must not be denormal nor all equal (MAX pooling and ReLU would take one branch only).
inline std::vector<float> pattern(std::size_t n, std::uint32_t salt) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = static_cast<float>((static_cast<std::uint32_t>(i) * 2654435761u + salt) % 1000u) / 1000.0f - 0.5f;
  return v;
}

inline std::string dims(std::initializer_list<int> d) {
  std::string s;
  for (int x : d) {
    if (!s.empty()) s += 'x';
    s += std::to_string(x);
  }
  return s;
}

/// One layer to time: how to configure it, what it is fed, and what one pass counts for.
struct LayerSpec {
  std::string net, layer, shape;                 // shape: the label printed next to the figures
  double forward_flops = 0, backward_flops = 0;  // 0: not a compute measure for this layer
  double forward_bytes = 0, backward_bytes = 0;  // memory-bound layers: reported as GB/s
  bool gemm_bound = false;                       // conv / ip: compared against the sgemm peak
  int labels = 0;  // > 0: a second bottom of integer labels in [0, labels) (loss layers)
  Shape input;
  std::function<void(LayerParameter&)> configure;
};

inline LayerSpec conv_spec(const std::string& net, const std::string& name, int n, int c, int h, int w, int cout,
                           int k, int stride, int pad, int group) {
  LayerSpec s;
  s.net = net;
  s.layer = name;
  s.input = Shape{n, c, h, w};
  const int oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1;
  s.shape = dims({n, c, h, w}) + " -> " + std::to_string(cout) + "x" + std::to_string(c / group) + "x" +
            std::to_string(k) + "x" + std::to_string(k) + (stride > 1 ? " s" + std::to_string(stride) : "") +
            (pad ? " p" + std::to_string(pad) : "") + (group > 1 ? " g" + std::to_string(group) : "") + " -> " +
            std::to_string(oh) + "x" + std::to_string(ow);
  s.forward_flops = 2.0 * n * cout * (c / group) * k * k * oh * ow;
  s.backward_flops = 2 * s.forward_flops;  // weight and input gradients
  s.gemm_bound = true;
  s.configure = [=](LayerParameter& p) {
    p.type = "Convolution";
    p.with("convolution_param",
           Message().set("num_output", cout).set("kernel_size", k).set("stride", stride).set("pad", pad).set("group", group));
  };
  return s;
}

inline LayerSpec ip_spec(const std::string& net, const std::string& name, int n, int k, int out) {
  LayerSpec s;
  s.net = net;
  s.layer = name;
  s.input = Shape{n, k};
  s.shape = dims({n, k}) + " -> " + std::to_string(out);
  s.forward_flops = 2.0 * n * k * out;
  s.backward_flops = 2 * s.forward_flops;
  s.gemm_bound = true;
  s.configure = [=](LayerParameter& p) {
    p.type = "InnerProduct";
    p.with("inner_product_param", Message().set("num_output", out));
  };
  return s;
}

// Nominal operation counts: one compare or add per window element forward; backward one add per
// output (MAX) or per window element (AVE).
inline LayerSpec pool_spec(const std::string& net, const std::string& name, int n, int c, int h, int w, int k,
                           int stride, const std::string& method = "MAX") {
  LayerSpec s;
  s.net = net;
  s.layer = name;
  s.input = Shape{n, c, h, w};
  const int oh = (h - k + stride - 1) / stride + 1, ow = (w - k + stride - 1) / stride + 1;
  s.shape = dims({n, c, h, w}) + " " + method + " " + std::to_string(k) + "x" + std::to_string(k) + " s" +
            std::to_string(stride) + " -> " + std::to_string(oh) + "x" + std::to_string(ow);
  s.forward_flops = double(n) * c * oh * ow * k * k;
  s.backward_flops = method == "MAX" ? double(n) * c * oh * ow : s.forward_flops;
  s.configure = [=](LayerParameter& p) {
    p.type = "Pooling";
    p.with("pooling_param", Message().set_enum("pool", method).set("kernel_size", k).set("stride", stride));
  };
  return s;
}

// Nominal: per element, a square and `size` adds for the region sum, and ~4 for the scale and
// power forward; backward twice that.
inline LayerSpec lrn_spec(const std::string& net, const std::string& name, int n, int c, int h, int w, int size) {
  LayerSpec s;
  s.net = net;
  s.layer = name;
  s.input = Shape{n, c, h, w};
  s.shape = dims({n, c, h, w}) + " ACROSS size " + std::to_string(size);
  s.forward_flops = double(n) * c * h * w * (size + 5);
  s.backward_flops = 2 * s.forward_flops;
  s.configure = [=](LayerParameter& p) {
    p.type = "LRN";
    p.with("lrn_param", Message().set("local_size", size).set("alpha", 1e-4).set("beta", 0.75));
  };
  return s;
}

// Elementwise layers move memory: forward reads x and writes y, backward reads two arrays and
// writes one (4 bytes each).
inline LayerSpec elementwise_spec(const std::string& net, const std::string& name, const std::string& type,
                                  const Shape& input) {
  LayerSpec s;
  s.net = net;
  s.layer = name;
  s.input = input;
  s.shape = input.str() + " " + type;
  const double n = static_cast<double>(input.count());
  s.forward_bytes = 8 * n;
  s.backward_bytes = 12 * n;
  s.configure = [=](LayerParameter& p) {
    p.type = type;
    if (type == "Dropout") p.with("dropout_param", Message().set("dropout_ratio", 0.5));
  };
  return s;
}

inline LayerSpec softmax_loss_spec(const std::string& net, const std::string& name, int n, int classes) {
  LayerSpec s;
  s.net = net;
  s.layer = name;
  s.input = Shape{n, classes};
  s.labels = classes;
  s.shape = dims({n, classes}) + " SoftmaxWithLoss";
  s.configure = [](LayerParameter& p) { p.type = "SoftmaxWithLoss"; };
  return s;
}

/// BVLC AlexNet's heavy layers (Caffe's bvlc_alexnet/train_val.prototxt) at batch b, in net order;
/// with `elementwise`, also its ReLU, Dropout and loss layers at their largest shapes.
inline std::vector<LayerSpec> alexnet_specs(int b, bool elementwise) {
  const std::string a = "alexnet";
  std::vector<LayerSpec> s;
  s.push_back(conv_spec(a, "conv1", b, 3, 227, 227, 96, 11, 4, 0, 1));
  if (elementwise) s.push_back(elementwise_spec(a, "relu1", "ReLU", Shape{b, 96, 55, 55}));
  s.push_back(lrn_spec(a, "norm1", b, 96, 55, 55, 5));
  s.push_back(pool_spec(a, "pool1", b, 96, 55, 55, 3, 2));
  s.push_back(conv_spec(a, "conv2", b, 96, 27, 27, 256, 5, 1, 2, 2));
  s.push_back(lrn_spec(a, "norm2", b, 256, 27, 27, 5));
  s.push_back(pool_spec(a, "pool2", b, 256, 27, 27, 3, 2));
  s.push_back(conv_spec(a, "conv3", b, 256, 13, 13, 384, 3, 1, 1, 1));
  s.push_back(conv_spec(a, "conv4", b, 384, 13, 13, 384, 3, 1, 1, 2));
  s.push_back(conv_spec(a, "conv5", b, 384, 13, 13, 256, 3, 1, 1, 2));
  s.push_back(pool_spec(a, "pool5", b, 256, 13, 13, 3, 2));
  s.push_back(ip_spec(a, "fc6", b, 9216, 4096));
  if (elementwise) {
    s.push_back(elementwise_spec(a, "relu6", "ReLU", Shape{b, 4096}));
    s.push_back(elementwise_spec(a, "drop6", "Dropout", Shape{b, 4096}));
  }
  s.push_back(ip_spec(a, "fc7", b, 4096, 4096));
  s.push_back(ip_spec(a, "fc8", b, 4096, 1000));
  if (elementwise) s.push_back(softmax_loss_spec(a, "loss", b, 1000));
  return s;
}

/// Caffe's CIFAR-10 quick (examples/cifar10/cifar10_quick_train_test.prototxt) at batch b: its
/// 5x5 pad-2 convolutions and pools, in net order.
inline std::vector<LayerSpec> cifar10_quick_specs(int b) {
  const std::string c = "cifar10_quick";
  std::vector<LayerSpec> s;
  s.push_back(conv_spec(c, "conv1", b, 3, 32, 32, 32, 5, 1, 2, 1));
  s.push_back(pool_spec(c, "pool1", b, 32, 32, 32, 3, 2, "MAX"));
  s.push_back(conv_spec(c, "conv2", b, 32, 16, 16, 32, 5, 1, 2, 1));
  s.push_back(pool_spec(c, "pool2", b, 32, 16, 16, 3, 2, "AVE"));
  s.push_back(conv_spec(c, "conv3", b, 32, 8, 8, 64, 5, 1, 2, 1));
  s.push_back(pool_spec(c, "pool3", b, 64, 8, 8, 3, 2, "AVE"));
  return s;
}

}  // namespace poseidon::bench
