// Caffe's update rules (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam) with its exact formulas
// and operation order: step by step with math:: calls (compute_update_value, Caffe's structure) and
// fused into one pass per parameter on every device (fused_update, the path apply_update takes).
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/math/blas.hpp>
#include <poseidon/solver/solver.hpp>
#include <poseidon/solver/update_rules.hpp>

#include <cmath>
#include <memory>
#include <string_view>
#include <type_traits>
#include <utility>

POSEIDON_NAMESPACE_BEGIN

/// history = lr * lr_mult * g + momentum * history; step = history.
template <class D, class T = float>
class SGDSolver : public Solver<D, T> {
  using Base = Solver<D, T>;

 public:
  using Base::Base;
  [[nodiscard]] std::string_view type() const override { return "SGD"; }

  void compute_update_value(int i, T rate) override {
    auto& p = this->param(i);
    auto& h = this->history(0, i);
    const T local_rate = rate * this->lr_mult(i);
    const T momentum = static_cast<T>(this->config().momentum);
    math::axpby(*this->ctx_, p.count(), local_rate, p.diff(), momentum, h.data());
    math::copy(*this->ctx_, p.count(), h.data(), p.diff());
  }

  bool fused_update(int i, T rate) override {
    return this->fused_apply(i, detail::SgdRule<T>{rate * this->lr_mult(i), static_cast<T>(this->config().momentum)});
  }
};

/// Nesterov's accelerated gradient, Caffe's formulation: step = (1 + m) * h_new - m * h_old.
template <class D, class T = float>
class NesterovSolver : public Solver<D, T> {
  using Base = Solver<D, T>;

 public:
  using Base::Base;
  [[nodiscard]] std::string_view type() const override { return "Nesterov"; }

  void compute_update_value(int i, T rate) override {
    auto& ctx = *this->ctx_;
    auto& p = this->param(i);
    auto& h = this->history(0, i);
    auto& u = this->scratch_a(i);
    const std::size_t n = p.count();
    const T local_rate = rate * this->lr_mult(i);
    const T m = static_cast<T>(this->config().momentum);
    math::copy(ctx, n, h.data(), u.data());
    math::axpby(ctx, n, local_rate, p.diff(), m, h.data());
    math::axpby(ctx, n, T(1) + m, h.data(), -m, u.data());
    math::copy(ctx, n, u.data(), p.diff());
  }

  bool fused_update(int i, T rate) override {
    return this->fused_apply(i, detail::NesterovRule<T>{rate * this->lr_mult(i), static_cast<T>(this->config().momentum)});
  }
};

/// history += g^2; step = lr * g / (sqrt(history) + delta).
template <class D, class T = float>
class AdaGradSolver : public Solver<D, T> {
  using Base = Solver<D, T>;

 public:
  using Base::Base;
  [[nodiscard]] std::string_view type() const override { return "AdaGrad"; }

  void compute_update_value(int i, T rate) override {
    auto& ctx = *this->ctx_;
    auto& p = this->param(i);
    auto& h = this->history(0, i);
    auto& u = this->scratch_a(i);
    const std::size_t n = p.count();
    const T local_rate = rate * this->lr_mult(i);
    math::sqr(ctx, n, p.diff(), u.data());
    math::add(ctx, n, u.data(), h.data(), h.data());
    math::sqrt(ctx, n, h.data(), u.data());
    math::add_scalar(ctx, n, static_cast<T>(this->config().delta), u.data());
    math::div(ctx, n, p.diff(), u.data(), u.data());
    math::scale(ctx, n, local_rate, u.data(), p.diff());
  }

  bool fused_update(int i, T rate) override {
    return this->fused_apply(i, detail::AdaGradRule<T>{rate * this->lr_mult(i), static_cast<T>(this->config().delta)});
  }
};

/// history = (1 - rms_decay) g^2 + rms_decay history; step = lr * g / (sqrt(history) + delta).
template <class D, class T = float>
class RMSPropSolver : public Solver<D, T> {
  using Base = Solver<D, T>;

 public:
  using Base::Base;
  [[nodiscard]] std::string_view type() const override { return "RMSProp"; }

  void compute_update_value(int i, T rate) override {
    auto& ctx = *this->ctx_;
    auto& p = this->param(i);
    auto& h = this->history(0, i);
    auto& u = this->scratch_a(i);
    const std::size_t n = p.count();
    const T local_rate = rate * this->lr_mult(i);
    const T decay = static_cast<T>(this->config().rms_decay);
    math::sqr(ctx, n, p.diff(), u.data());
    math::axpby(ctx, n, T(1) - decay, u.data(), decay, h.data());
    math::sqrt(ctx, n, h.data(), u.data());
    math::add_scalar(ctx, n, static_cast<T>(this->config().delta), u.data());
    math::div(ctx, n, p.diff(), u.data(), u.data());
    math::scale(ctx, n, local_rate, u.data(), p.diff());
  }

  bool fused_update(int i, T rate) override {
    return this->fused_apply(i, detail::RMSPropRule<T>{rate * this->lr_mult(i), static_cast<T>(this->config().rms_decay),
                                                       static_cast<T>(this->config().delta)});
  }
};

/// Zeiler's AdaDelta as Caffe has it (momentum is the decay; the rate multiplies the step).
/// History set 0: mean squared gradient; set 1: mean squared update.
template <class D, class T = float>
class AdaDeltaSolver : public Solver<D, T> {
  using Base = Solver<D, T>;

 public:
  explicit AdaDeltaSolver(SolverConfig config, SolverOptions options = {},
                          std::shared_ptr<typename Base::Context> ctx = nullptr)
      : Base(std::move(config), std::move(options), std::move(ctx)) {
    this->add_history_set();
  }
  [[nodiscard]] std::string_view type() const override { return "AdaDelta"; }

  void compute_update_value(int i, T rate) override {
    auto& ctx = *this->ctx_;
    auto& p = this->param(i);
    auto& hg = this->history(0, i);
    auto& hu = this->history(1, i);
    auto& u = this->scratch_a(i);
    auto& t = this->scratch_b(i);
    const std::size_t n = p.count();
    const T local_rate = rate * this->lr_mult(i);
    const T m = static_cast<T>(this->config().momentum);
    const T delta = static_cast<T>(this->config().delta);
    math::sqr(ctx, n, p.diff(), u.data());
    math::axpby(ctx, n, T(1) - m, u.data(), m, hg.data());
    math::set(ctx, n, delta, t.data());
    math::add(ctx, n, t.data(), hu.data(), u.data());
    math::add(ctx, n, t.data(), hg.data(), t.data());
    math::div(ctx, n, u.data(), t.data(), u.data());
    math::sqrt(ctx, n, u.data(), u.data());
    math::mul(ctx, n, p.diff(), u.data(), p.diff());
    math::sqr(ctx, n, p.diff(), u.data());
    math::axpby(ctx, n, T(1) - m, u.data(), m, hu.data());
    math::scal(ctx, n, local_rate, p.diff());
  }

  bool fused_update(int i, T rate) override {
    return this->fused_apply(i, detail::AdaDeltaRule<T>{rate * this->lr_mult(i), static_cast<T>(this->config().momentum),
                                                        static_cast<T>(this->config().delta)},
                             true);
  }
};

/// Adam (Kingma & Ba) as Caffe has it: beta1 = momentum, beta2 = momentum2, eps = delta, with the
/// bias correction folded into the rate. History set 0: m; set 1: v.
template <class D, class T = float>
class AdamSolver : public Solver<D, T> {
  using Base = Solver<D, T>;

 public:
  explicit AdamSolver(SolverConfig config, SolverOptions options = {},
                      std::shared_ptr<typename Base::Context> ctx = nullptr)
      : Base(std::move(config), std::move(options), std::move(ctx)) {
    this->add_history_set();
  }
  [[nodiscard]] std::string_view type() const override { return "Adam"; }

  void compute_update_value(int i, T rate) override {
    auto& ctx = *this->ctx_;
    auto& p = this->param(i);
    auto& m = this->history(0, i);
    auto& v = this->history(1, i);
    auto& t = this->scratch_a(i);
    const std::size_t n = p.count();
    const T local_rate = rate * this->lr_mult(i);
    const T beta1 = static_cast<T>(this->config().momentum);
    const T beta2 = static_cast<T>(this->config().momentum2);
    const T correction = adam_correction();
    math::axpby(ctx, n, T(1) - beta1, p.diff(), beta1, m.data());
    math::mul(ctx, n, p.diff(), p.diff(), t.data());
    math::axpby(ctx, n, T(1) - beta2, t.data(), beta2, v.data());
    math::sqrt(ctx, n, v.data(), t.data());
    math::add_scalar(ctx, n, static_cast<T>(this->config().delta), t.data());
    math::div(ctx, n, m.data(), t.data(), t.data());
    math::scale(ctx, n, local_rate * correction, t.data(), p.diff());
  }

  bool fused_update(int i, T rate) override {
    return this->fused_apply(i, detail::AdamRule<T>{rate * this->lr_mult(i) * adam_correction(),
                                                    static_cast<T>(this->config().momentum),
                                                    static_cast<T>(this->config().momentum2),
                                                    static_cast<T>(this->config().delta)},
                             true);
  }

 private:
  // sqrt(1 - beta2^t) / (1 - beta1^t) for this step t = iter + 1, folded into the rate.
  [[nodiscard]] T adam_correction() const {
    const int step = this->iter() + 1;
    return static_cast<T>(std::sqrt(1.0 - std::pow(static_cast<double>(this->config().momentum2), step)) /
                          (1.0 - std::pow(static_cast<double>(this->config().momentum), step)));
  }
};

/// The solver of config.type ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam").
template <class D, class T = float>
std::unique_ptr<Solver<D, T>> make_solver(SolverConfig config, SolverOptions options = {},
                                          std::shared_ptr<DeviceContext<D>> ctx = nullptr) {
  const std::string type = config.type;
  if (type == "SGD") return std::make_unique<SGDSolver<D, T>>(std::move(config), std::move(options), std::move(ctx));
  if (type == "Nesterov")
    return std::make_unique<NesterovSolver<D, T>>(std::move(config), std::move(options), std::move(ctx));
  if (type == "AdaGrad")
    return std::make_unique<AdaGradSolver<D, T>>(std::move(config), std::move(options), std::move(ctx));
  if (type == "RMSProp")
    return std::make_unique<RMSPropSolver<D, T>>(std::move(config), std::move(options), std::move(ctx));
  if (type == "AdaDelta")
    return std::make_unique<AdaDeltaSolver<D, T>>(std::move(config), std::move(options), std::move(ctx));
  if (type == "Adam") return std::make_unique<AdamSolver<D, T>>(std::move(config), std::move(options), std::move(ctx));
  config.validate();  // names the field and the known types
  detail::raise(config.at("type"), ": unknown solver type '", type, "'");
}

POSEIDON_NAMESPACE_END
