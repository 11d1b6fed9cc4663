// The numeric gradient checker every layer test calls (Caffe's GradientChecker, dlib's test_layer):
// compares backward's gradients with central finite differences of a random projection of the tops.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/rng.hpp>
#include <poseidon/layers/layer.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct GradientCheckOptions {
  double step = 1e-2;        // finite-difference step (use ~1e-4 for double)
  double threshold = 1e-2;   // allowed |analytic - numeric| / max(|analytic|, |numeric|, 1)
  /// Bottoms to check (empty: all). Labels and other non-differentiable inputs are left out.
  std::vector<int> bottoms;
  bool check_params = true;
  /// At most this many elements per tensor, spread evenly (0: every element).
  std::size_t max_checks_per_tensor = 0;
  /// Skip bottom elements within kink_range of kink, where the layer is not differentiable (ReLU at 0).
  double kink = 0;
  double kink_range = -1;
  std::uint64_t seed = 1234;
};

struct GradientMismatch {
  std::string where;  // "bottom 0" or "param 1"
  std::size_t index;
  double analytic;
  double numeric;
};

struct GradientCheckReport {
  std::size_t checked = 0;
  double worst_error = 0;
  std::vector<GradientMismatch> mismatches;

  [[nodiscard]] bool ok() const { return mismatches.empty() && checked > 0; }
  [[nodiscard]] std::string str() const {
    std::ostringstream os;
    os << "checked " << checked << " derivatives, worst relative error " << worst_error << ", "
       << mismatches.size() << " mismatches";
    for (std::size_t i = 0; i < mismatches.size() && i < 10; ++i) {
      const auto& m = mismatches[i];
      os << "\n  " << m.where << "[" << m.index << "]: analytic " << m.analytic << " vs numeric " << m.numeric;
    }
    return os.str();
  }
};

/// Sets the layer up on the given tensors, then checks d(objective)/d(x) for the chosen bottoms and
/// all parameters, with objective = sum_i <w_i, top_i> for fixed random w_i. The context's RNG is
/// reseeded before every forward so that stochastic layers (Dropout) see the same draws each time.
template <class D, class T>
GradientCheckReport check_gradients(Layer<D, T>& layer, DeviceContext<D>& ctx, const std::vector<Tensor<D, T>*>& bottom,
                                    const std::vector<Tensor<D, T>*>& top, const GradientCheckOptions& opt = {}) {
  GradientCheckReport report;
  const std::uint64_t fwd_seed = opt.seed * 7919 + 17;
  layer.setup(ctx, bottom, top);
  ctx.rng().seed(fwd_seed);
  layer.forward(ctx, bottom, top);

  // Random projection weights for each top.
  Rng wrng(opt.seed);
  std::vector<std::vector<T>> weights(top.size());
  for (std::size_t i = 0; i < top.size(); ++i) {
    weights[i].resize(top[i]->count());
    for (auto& w : weights[i]) w = static_cast<T>(wrng.uniform<double>(-1.0, 1.0));
  }
  auto objective = [&] {
    ctx.rng().seed(fwd_seed);
    layer.forward(ctx, bottom, top);
    double s = 0;
    for (std::size_t i = 0; i < top.size(); ++i) {
      const auto v = top[i]->data_to_host();
      for (std::size_t j = 0; j < v.size(); ++j) s += static_cast<double>(v[j]) * static_cast<double>(weights[i][j]);
    }
    return s;
  };

  std::vector<int> check_bottoms = opt.bottoms;
  if (check_bottoms.empty())
    for (std::size_t i = 0; i < bottom.size(); ++i) check_bottoms.push_back(static_cast<int>(i));
  std::vector<bool> propagate(bottom.size(), false);
  for (int b : check_bottoms) propagate[static_cast<std::size_t>(b)] = true;

  // Analytic gradients: one forward, top diffs = weights, one backward.
  // Zero first, then set the top diffs: a top may share its diff with a bottom (Flatten, Reshape).
  objective();
  for (auto& p : layer.blobs()) p->zero_diff();
  for (std::size_t i = 0; i < bottom.size(); ++i)
    if (propagate[i]) bottom[i]->zero_diff();
  for (std::size_t i = 0; i < top.size(); ++i) top[i]->copy_diff_from_host(weights[i]);
  layer.backward(ctx, top, propagate, bottom);

  struct Target {
    Tensor<D, T>* t;
    std::string where;
    std::vector<T> analytic;
    bool is_bottom;
  };
  std::vector<Target> targets;
  for (int b : check_bottoms) {
    auto* t = bottom[static_cast<std::size_t>(b)];
    // An in-place or shared bottom would have its diff clobbered; checked layers use distinct tensors.
    targets.push_back({t, detail::concat("bottom ", b), t->diff_to_host(), true});
  }
  if (opt.check_params)
    for (std::size_t p = 0; p < layer.blobs().size(); ++p)
      if (layer.param_propagate_down(p))
        targets.push_back({layer.blobs()[p].get(), detail::concat("param ", p), layer.blobs()[p]->diff_to_host(), false});

  for (auto& tg : targets) {
    std::vector<T> x = tg.t->data_to_host();
    const std::size_t n = x.size();
    const std::size_t stride =
        (opt.max_checks_per_tensor && n > opt.max_checks_per_tensor) ? n / opt.max_checks_per_tensor : 1;
    for (std::size_t j = 0; j < n; j += stride) {
      if (tg.is_bottom && opt.kink_range > 0 && std::abs(static_cast<double>(x[j]) - opt.kink) < opt.kink_range) continue;
      const T orig = x[j];
      x[j] = static_cast<T>(orig + opt.step);
      tg.t->copy_data_from_host(x);
      const double plus = objective();
      x[j] = static_cast<T>(orig - opt.step);
      tg.t->copy_data_from_host(x);
      const double minus = objective();
      x[j] = orig;
      tg.t->copy_data_from_host(x);
      const double numeric = (plus - minus) / (2 * opt.step);
      const double analytic = static_cast<double>(tg.analytic[j]);
      const double scale = std::max({std::abs(analytic), std::abs(numeric), 1.0});
      const double err = std::abs(analytic - numeric) / scale;
      report.worst_error = std::max(report.worst_error, err);
      ++report.checked;
      if (!(err <= opt.threshold)) report.mismatches.push_back({tg.where, j, analytic, numeric});
    }
  }
  return report;
}

POSEIDON_NAMESPACE_END
