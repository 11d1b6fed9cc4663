// Caffe's learning-rate policies (fixed, step, exp, inv, multistep, poly, sigmoid) as a pure
// function of the iteration, so any worker or a restored solver computes the same rate.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <string_view>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct LrPolicy {
  enum class Kind { fixed, step, exp, inv, multistep, poly, sigmoid };

  Kind kind = Kind::fixed;
  double base_lr = 0;
  double gamma = 0;
  double power = 0;
  int stepsize = 0;
  std::vector<int> stepvalue;  // strictly increasing (checked by SolverConfig)
  int max_iter = 0;

  static constexpr std::string_view names[] = {"fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid"};

  /// The kind for a Caffe lr_policy string; throws naming `where` when unknown.
  static Kind parse(std::string_view name, std::string_view where) {
    for (std::size_t i = 0; i < std::size(names); ++i)
      if (name == names[i]) return static_cast<Kind>(i);
    std::string list;
    for (auto n : names) list += detail::concat(list.empty() ? "" : ", ", n);
    detail::raise(where, ": unknown lr_policy '", name, "'; expected one of: ", list);
  }
  [[nodiscard]] std::string_view name() const { return names[static_cast<std::size_t>(kind)]; }

  /// multistep's position: how many stepvalues have been passed at `iter`. Caffe advances a counter
  /// once per iteration; with strictly increasing stepvalues that counter equals this count, and
  /// computing it keeps a restored or jumped-ahead solver exact.
  [[nodiscard]] int multistep_position(int iter) const {
    return static_cast<int>(std::upper_bound(stepvalue.begin(), stepvalue.end(), iter) - stepvalue.begin());
  }

  /// The rate at `iter` (Caffe's SGDSolver::GetLearningRate), computed in double.
  [[nodiscard]] double rate(int iter) const {
    const double it = iter;
    switch (kind) {
      case Kind::fixed:
        return base_lr;
      case Kind::step:
        return base_lr * std::pow(gamma, static_cast<double>(iter / stepsize));
      case Kind::exp:
        return base_lr * std::pow(gamma, it);
      case Kind::inv:
        return base_lr * std::pow(1.0 + gamma * it, -power);
      case Kind::multistep:
        return base_lr * std::pow(gamma, static_cast<double>(multistep_position(iter)));
      case Kind::poly:
        return base_lr * std::pow(1.0 - it / static_cast<double>(max_iter), power);
      case Kind::sigmoid:
        return base_lr * (1.0 / (1.0 + std::exp(-gamma * (it - static_cast<double>(stepsize)))));
    }
    return base_lr;
  }
};

POSEIDON_NAMESPACE_END
