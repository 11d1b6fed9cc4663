#include <doctest/doctest.h>

#include "solver_testing.hpp"

#include <cmath>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

using namespace poseidon;
using poseidon_solver_test::kOneParamNet;

namespace {

// Three steps of gradients for the 2x2 weight (initially all 0.5; one entry made negative so L1's sign matters).
const std::vector<std::vector<double>> kGrads = {
    {0.1, -0.2, 0.3, -0.4}, {-0.5, 0.25, 0.05, 0.4}, {0.3, 0.3, -0.1, 0.2}};
const std::vector<double> kW0 = {0.5, -0.25, 0.5, 0.75};

SolverConfig config(std::string_view text, std::string_view net = kOneParamNet) {
  auto c = SolverConfig::from_text(text);
  c.net_param = parse_prototxt(net);
  return c;
}

// Drives `solver` for the three steps, writing each gradient into the weight's diff, and returns
// the weights after each step.
template <class T>
std::vector<std::vector<double>> drive(Solver<CPU, T>& s) {
  auto& w = *s.net().learnable_params()[0].tensor;
  std::vector<T> w0(kW0.begin(), kW0.end());
  w.copy_data_from_host(w0);
  std::vector<std::vector<double>> out;
  for (std::size_t t = 0; t < kGrads.size(); ++t) {
    s.net().clear_param_diffs();
    std::vector<T> g(kGrads[t].begin(), kGrads[t].end());
    w.copy_diff_from_host(g);
    s.apply_update();
    s.set_iter(s.iter() + 1);
    const auto v = w.data_to_host();
    out.emplace_back(v.begin(), v.end());
  }
  return out;
}

// The reference: per element, state carried in `st` (zero-initialised), returns the step to subtract.
using Rule = std::function<double(double g, double w, int t, std::vector<double>& st)>;
std::vector<std::vector<double>> reference(const Rule& rule, int nstate) {
  std::vector<double> w = kW0;
  std::vector<std::vector<double>> st(w.size(), std::vector<double>(static_cast<std::size_t>(nstate), 0.0));
  std::vector<std::vector<double>> out;
  for (std::size_t t = 0; t < kGrads.size(); ++t) {
    for (std::size_t i = 0; i < w.size(); ++i) w[i] -= rule(kGrads[t][i], w[i], static_cast<int>(t), st[i]);
    out.push_back(w);
  }
  return out;
}

template <class T>
void check_rule(std::string_view text, const Rule& rule, int nstate) {
  std::ostringstream log;
  auto s = make_solver<CPU, T>(config(text), SolverOptions().log_to(log));
  const auto got = drive(*s);
  const auto want = reference(rule, nstate);
  // Hyperparameters are floats in Caffe's SolverParameter (0.1f != 0.1), hence 2e-7 for double.
  const double tol = std::is_same_v<T, float> ? 2e-6 : 2e-7;
  for (std::size_t t = 0; t < want.size(); ++t)
    for (std::size_t i = 0; i < want[t].size(); ++i) {
      CAPTURE(text);
      CAPTURE(t);
      CAPTURE(i);
      CHECK(got[t][i] == doctest::Approx(want[t][i]).epsilon(tol).scale(1.0));
    }
}

}  // namespace

TEST_CASE_TEMPLATE("SGD with momentum: history = lr g + m history; w -= history", T, float, double) {
  check_rule<T>("type: \"SGD\" base_lr: 0.1 momentum: 0.9",
                [](double g, double, int, std::vector<double>& h) { return h[0] = 0.1 * g + 0.9 * h[0]; }, 1);
}

TEST_CASE_TEMPLATE("Nesterov: w -= (1 + m) h_new - m h_old", T, float, double) {
  check_rule<T>("type: \"Nesterov\" base_lr: 0.1 momentum: 0.9",
                [](double g, double, int, std::vector<double>& h) {
                  const double old = h[0];
                  h[0] = 0.9 * h[0] + 0.1 * g;
                  return 1.9 * h[0] - 0.9 * old;
                },
                1);
}

TEST_CASE_TEMPLATE("AdaGrad: w -= lr g / (sqrt(sum g^2) + delta)", T, float, double) {
  check_rule<T>("type: \"AdaGrad\" base_lr: 0.1 delta: 1e-3",
                [](double g, double, int, std::vector<double>& h) {
                  h[0] += g * g;
                  return 0.1 * g / (std::sqrt(h[0]) + 1e-3);
                },
                1);
}

TEST_CASE_TEMPLATE("RMSProp: mean square with rms_decay", T, float, double) {
  check_rule<T>("type: \"RMSProp\" base_lr: 0.01 rms_decay: 0.9 delta: 1e-4",
                [](double g, double, int, std::vector<double>& h) {
                  h[0] = 0.1 * g * g + 0.9 * h[0];
                  return 0.01 * g / (std::sqrt(h[0]) + 1e-4);
                },
                1);
}

TEST_CASE_TEMPLATE("AdaDelta: update scaled by RMS(update history) / RMS(gradient history)", T, float, double) {
  check_rule<T>("type: \"AdaDelta\" base_lr: 1 momentum: 0.95 delta: 1e-6",
                [](double g, double, int, std::vector<double>& h) {
                  h[0] = 0.95 * h[0] + 0.05 * g * g;
                  const double dx = g * std::sqrt((h[1] + 1e-6) / (h[0] + 1e-6));
                  h[1] = 0.95 * h[1] + 0.05 * dx * dx;
                  return 1.0 * dx;
                },
                2);
}

TEST_CASE_TEMPLATE("Adam: bias-corrected moments", T, float, double) {
  check_rule<T>("type: \"Adam\" base_lr: 0.01 momentum: 0.9 momentum2: 0.999 delta: 1e-8",
                [](double g, double, int t, std::vector<double>& h) {
                  h[0] = 0.9 * h[0] + 0.1 * g;
                  h[1] = 0.999 * h[1] + 0.001 * g * g;
                  const int k = t + 1;
                  const double corr = std::sqrt(1 - std::pow(0.999, k)) / (1 - std::pow(0.9, k));
                  return 0.01 * corr * h[0] / (std::sqrt(h[1]) + 1e-8);
                },
                2);
}

TEST_CASE_TEMPLATE("Weight decay: L2 adds decay * w, L1 adds decay * sign(w); decay_mult and lr_mult apply", T, float,
                   double) {
  check_rule<T>("type: \"SGD\" base_lr: 0.1 weight_decay: 0.2",
                [](double g, double w, int, std::vector<double>&) { return 0.1 * (g + 0.2 * w); }, 0);
  check_rule<T>("type: \"SGD\" base_lr: 0.1 weight_decay: 0.2 regularization_type: \"L1\"",
                [](double g, double w, int, std::vector<double>&) { return 0.1 * (g + 0.2 * ((w > 0) - (w < 0))); }, 0);
  // lr_mult 3 and decay_mult 0.5 on the weight.
  std::string net = kOneParamNet;
  net.replace(net.find("inner_product_param"), 0, "param { lr_mult: 3 decay_mult: 0.5 } ");
  std::ostringstream log;
  SGDSolver<CPU, T> s(config("base_lr: 0.1 weight_decay: 0.2 momentum: 0.5", net), SolverOptions().log_to(log));
  const auto got = drive<T>(s);
  const auto want = reference(
      [](double g, double w, int, std::vector<double>& h) { return h[0] = 0.3 * (g + 0.1 * w) + 0.5 * h[0]; }, 1);
  for (std::size_t i = 0; i < 4; ++i) CHECK(got[2][i] == doctest::Approx(want[2][i]).epsilon(1e-6));
}

TEST_CASE("Gradient clipping scales all gradients to the global L2 norm, with Caffe's log line") {
  std::ostringstream log;
  SGDSolver<CPU, double> s(config("base_lr: 1 clip_gradients: 0.5"), SolverOptions().log_to(log));
  const auto got = drive<double>(s);
  const auto want = reference(
      [](double g, double, int t, std::vector<double>&) {
        double sq = 0;
        for (double x : kGrads[static_cast<std::size_t>(t)]) sq += x * x;
        const double n = std::sqrt(sq);
        return n > 0.5 ? g * 0.5 / n : g;
      },
      0);
  for (std::size_t t = 0; t < 3; ++t)
    for (std::size_t i = 0; i < 4; ++i) CHECK(got[t][i] == doctest::Approx(want[t][i]).epsilon(2e-7));
  CHECK(log.str().find("Gradient clipping: scaling down gradients (L2 norm 0.547723 > 0.5) by scale factor 0.912871\n") !=
        std::string::npos);
  // Below the threshold nothing is scaled and nothing logged.
  std::ostringstream quiet;
  SGDSolver<CPU, double> q(config("base_lr: 1 clip_gradients: 10"), SolverOptions().log_to(quiet));
  const auto plain = drive<double>(q);
  CHECK(plain[0][0] == doctest::Approx(0.5 - 0.1));
  CHECK(quiet.str().find("Gradient clipping") == std::string::npos);
}

TEST_CASE("The per-parameter seam: apply_update(i) equals the whole-net update") {
  const char* text = "type: \"Adam\" base_lr: 0.01 momentum: 0.9 weight_decay: 0.01";
  std::ostringstream log;
  auto a = make_solver<CPU, float>(config(text, poseidon_solver_test::kResumeNet), SolverOptions().log_to(log));
  auto b = make_solver<CPU, float>(config(text, poseidon_solver_test::kResumeNet), SolverOptions().log_to(log));
  for (int it = 0; it < 3; ++it) {
    for (auto* s : {a.get(), b.get()}) {
      s->net().clear_param_diffs();
      (void)s->forward_backward();
    }
    a->apply_update();
    // The distributed trainer's order: any order over parameters, one call each.
    for (int i = b->num_params() - 1; i >= 0; --i) b->apply_update(i);
    a->set_iter(a->iter() + 1);
    b->set_iter(b->iter() + 1);
  }
  for (int i = 0; i < a->num_params(); ++i)
    CHECK(a->net().learnable_params()[static_cast<std::size_t>(i)].tensor->data_to_host() ==
          b->net().learnable_params()[static_cast<std::size_t>(i)].tensor->data_to_host());
}

TEST_CASE("iter_size 2 with batch B equals iter_size 1 with batch 2B") {
  auto net = [](int batch) {
    return detail::concat(R"(
      name: "mem"
      layer { name: "data" type: "MemoryData" top: "x" top: "label"
              memory_data_param { batch_size: )", batch, R"( channels: 3 height: 1 width: 1 } }
      layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
              inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.1 } } }
      layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
      layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "y"
              inner_product_param { num_output: 1 weight_filler { type: "gaussian" std: 0.5 } } }
      layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "label" top: "loss" })");
  };
  std::vector<float> data(16 * 3), labels(16);
  Rng r(3);
  for (auto& v : data) v = r.uniform<float>(-1, 1);
  for (auto& v : labels) v = r.uniform<float>(-1, 1);
  auto run = [&](int batch, int iter_size, std::vector<float>* losses) {
    std::ostringstream log;
    auto c = config(detail::concat("base_lr: 0.05 momentum: 0.9 weight_decay: 0.01 random_seed: 5 iter_size: ", iter_size),
                    net(batch));
    SGDSolver<CPU, float> s(c, SolverOptions().log_to(log));
    dynamic_cast<MemoryDataLayer<CPU, float>&>(s.net().layer_by_name("data")).reset(data, labels);
    for (int it = 0; it < 4; ++it) {
      s.net().clear_param_diffs();
      losses->push_back(s.forward_backward());
      s.apply_update();
      s.set_iter(s.iter() + 1);
    }
    std::vector<std::vector<float>> out;
    for (const auto& p : s.net().learnable_params()) out.push_back(p.tensor->data_to_host());
    return out;
  };
  std::vector<float> la, lb;
  const auto a = run(4, 2, &la);
  const auto b = run(8, 1, &lb);
  for (std::size_t i = 0; i < la.size(); ++i) CHECK(la[i] == doctest::Approx(lb[i]).epsilon(1e-5));
  REQUIRE(a.size() == b.size());
  for (std::size_t p = 0; p < a.size(); ++p)
    for (std::size_t i = 0; i < a[p].size(); ++i) CHECK(a[p][i] == doctest::Approx(b[p][i]).epsilon(1e-5).scale(1.0));
}

TEST_CASE_TEMPLATE("The fused update pass matches Caffe's step-by-step path for every rule", T, float, double) {
  // apply_update takes the fused pass (update_rules.hpp); normalize, regularize,
  // compute_update_value and update_param are Caffe's steps. Both are driven with the same
  // gradients for three steps, with a bias whose lr_mult is 2 and decay_mult 0.
  const char* net = R"(
name: "two_params"
layer { name: "in" type: "Input" top: "x" top: "t" input_param { shape { dim: 2 dim: 24 } shape { dim: 2 dim: 16 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        inner_product_param { num_output: 16 weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "uniform" min: -1 max: 1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
)";
  const char* rules[] = {
      "type: \"SGD\" base_lr: 0.1 momentum: 0.9",
      "type: \"Nesterov\" base_lr: 0.1 momentum: 0.9",
      "type: \"AdaGrad\" base_lr: 0.1 delta: 1e-3",
      "type: \"RMSProp\" base_lr: 0.01 rms_decay: 0.9 delta: 1e-4",
      "type: \"AdaDelta\" base_lr: 1 momentum: 0.95 delta: 1e-6",
      "type: \"Adam\" base_lr: 0.01 momentum: 0.9 momentum2: 0.999 delta: 1e-8",
  };
  const char* extras[] = {"", " weight_decay: 0.01", " weight_decay: 0.01 regularization_type: \"L1\"",
                          " weight_decay: 0.005 iter_size: 2"};
  for (const char* rule : rules)
    for (const char* extra : extras) {
      const std::string text = std::string(rule) + " random_seed: 5" + extra;
      CAPTURE(text);
      std::ostringstream log;
      auto fused = make_solver<CPU, T>(config(text, net), SolverOptions().log_to(log));
      auto steps = make_solver<CPU, T>(config(text, net), SolverOptions().log_to(log));
      std::mt19937 gen(11);
      std::uniform_real_distribution<double> dist(-1, 1);
      for (int t = 0; t < 3; ++t) {
        for (std::size_t i = 0; i < fused->net().learnable_params().size(); ++i) {
          auto& a = *fused->net().learnable_params()[i].tensor;
          auto& b = *steps->net().learnable_params()[i].tensor;
          REQUIRE(a.data_to_host() == b.data_to_host());  // same seed, same start; then same as far as rounding allows
          std::vector<T> g(a.count());
          for (auto& v : g) v = static_cast<T>(dist(gen));
          a.copy_diff_from_host(g);
          b.copy_diff_from_host(g);
        }
        fused->apply_update();
        const auto rate = static_cast<T>(steps->learning_rate());
        for (int i = 0; i < steps->num_params(); ++i) {
          steps->normalize(i);
          steps->regularize(i);
          steps->compute_update_value(i, rate);
          steps->update_param(i);
        }
        for (std::size_t i = 0; i < fused->net().learnable_params().size(); ++i) {
          const auto a = fused->net().learnable_params()[i].tensor->data_to_host();
          const auto b = steps->net().learnable_params()[i].tensor->data_to_host();
          const auto da = fused->net().learnable_params()[i].tensor->diff_to_host();
          const auto db = steps->net().learnable_params()[i].tensor->diff_to_host();
          const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-14;
          for (std::size_t j = 0; j < a.size(); ++j) {
            CAPTURE(t);
            CAPTURE(i);
            CAPTURE(j);
            REQUIRE(double(a[j]) == doctest::Approx(double(b[j])).epsilon(tol).scale(1.0));
            REQUIRE(double(da[j]) == doctest::Approx(double(db[j])).epsilon(tol).scale(1.0));
          }
          // Copy the step-by-step weights over so that rounding differences do not grow.
          fused->net().learnable_params()[i].tensor->copy_data_from_host(b);
        }
        for (std::size_t k = 0; k < fused->history().size(); ++k)
          fused->history()[k].copy_data_from_host(steps->history()[k].data_to_host());
        fused->set_iter(fused->iter() + 1);
        steps->set_iter(steps->iter() + 1);
      }
    }
}
