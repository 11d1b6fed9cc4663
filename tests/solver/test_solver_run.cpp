#include <doctest/doctest.h>

#include "solver_testing.hpp"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

using namespace poseidon;
namespace fs = std::filesystem;
using poseidon_solver_test::kResumeNet;
using poseidon_solver_test::SeqDataLayer;

namespace {

fs::path temp_dir(std::string_view name) {
  const fs::path d = fs::temp_directory_path() / detail::concat("poseidon_run_", name, "_", ::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream is(s);
  for (std::string l; std::getline(is, l);) out.push_back(l);
  return out;
}

// The net goes inline (net_param) so that test_iter is checked against it on parsing.
SolverConfig resume_config(std::string_view text) {
  return SolverConfig::from_text(detail::concat(text, "\nnet_param {\n", kResumeNet, "\n}\n"));
}

// Index of the first line at or after `from` matching `re`; -1 when none.
int find_line(const std::vector<std::string>& lines, const std::string& re, int from = 0) {
  const std::regex r(re);
  for (std::size_t i = static_cast<std::size_t>(from); i < lines.size(); ++i)
    if (std::regex_match(lines[i], r)) return static_cast<int>(i);
  return -1;
}

const std::string kNum = R"([-+0-9.e]+)";

}  // namespace

TEST_CASE("Log lines are Caffe's, in Caffe's order") {
  const auto dir = temp_dir("log");
  std::ostringstream log;
  auto c = resume_config(detail::concat(R"(
    test_iter: 2 test_interval: 2 base_lr: 0.01 momentum: 0.9 lr_policy: "fixed" display: 2 max_iter: 4
    snapshot: 4 snapshot_prefix: ")", (dir / "run").string(), "\""));
  SGDSolver<CPU, float> s(c, SolverOptions().log_to(log).with_progress(SolverOptions::Progress::off));
  s.solve();
  const auto L = lines_of(log.str());
  const std::string run = (dir / "run").string();
  int at = 0;
  auto expect = [&](const std::string& re) {
    const int i = find_line(L, re, at);
    CAPTURE(re);
    CAPTURE(log.str());
    REQUIRE(i >= 0);
    at = i + 1;
  };
  expect("Solver scaffolding done\\.");
  expect("Solving resume_mlp");
  expect("Learning Rate Policy: fixed");
  expect("Iteration 0, Testing net \\(#0\\)");
  expect("    Test net output #0: loss = (" + kNum + ") \\(\\* 1 = \\1 loss\\)");
  expect("    Test net output #1: loss_noise = " + kNum + " \\(\\* 0\\.5 = " + kNum + " loss\\)");
  expect("Iteration 0, loss = " + kNum);
  expect("    Train net output #0: loss = (" + kNum + ") \\(\\* 1 = \\1 loss\\)");
  expect("    Train net output #1: loss_noise = " + kNum + " \\(\\* 0\\.5 = " + kNum + " loss\\)");
  expect("Iteration 0, lr = 0\\.01");
  expect("Iteration 2, Testing net \\(#0\\)");
  expect("Iteration 2, loss = " + kNum);
  expect("Iteration 2, lr = 0\\.01");
  expect("Snapshotting to binary proto file " + run + "_iter_4\\.poseidonmodel");
  expect("Snapshotting solver state to binary proto file " + run + "_iter_4\\.solverstate");
  expect("Iteration 4, loss = " + kNum);
  expect("Iteration 4, Testing net \\(#0\\)");
  expect("Optimization Done\\.");
  CHECK(L.back() == "Optimization Done.");
  // snapshot 4 divides max_iter 4: no second snapshot after training.
  CHECK(find_line(L, "Snapshotting to .*", find_line(L, "Snapshotting to .*") + 1) == -1);
  CHECK(log.str().find('\r') == std::string::npos);

  // The 0.5-weighted output's "(* w = w*x loss)" is the product.
  const std::regex r("    Train net output #1: loss_noise = (" + kNum + ") \\(\\* 0\\.5 = (" + kNum + ") loss\\)");
  std::smatch m;
  const std::string l = L[static_cast<std::size_t>(find_line(L, "    Train net output #1.*"))];
  REQUIRE(std::regex_match(l, m, r));
  CHECK(std::stod(m[2]) == doctest::Approx(0.5 * std::stod(m[1])).epsilon(1e-4));
  fs::remove_all(dir);
}

TEST_CASE("glog prefix and the progress line") {
  std::ostringstream log;
  auto c = resume_config("base_lr: 0.01 display: 1 max_iter: 3");
  SGDSolver<CPU, float> s(c, SolverOptions().log_to(log).with_glog_prefix().with_progress(SolverOptions::Progress::on));
  s.solve();
  const std::string out = log.str();
  CHECK(std::regex_search(out, std::regex(R"(\r\[3/3\] 100\.0%  [0-9.]+ it/s  ETA 0s  loss [0-9.]+)")));
  // Every log line (after the progress line is cleared) carries the glog prefix.
  std::string cleaned = std::regex_replace(out, std::regex("\r[^\r\n]*\r\x1b\\[K"), "");
  cleaned = std::regex_replace(cleaned, std::regex("\r\x1b\\[K"), "");
  const std::regex prefix(R"(I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [a-z_]+\.hpp:\d+\] .*)");
  for (const auto& l : lines_of(cleaned)) {
    CAPTURE(l);
    CHECK(std::regex_match(l, prefix));
  }
  CHECK(cleaned.find("] Iteration 1, loss = ") != std::string::npos);
  CHECK(cleaned.find("] Optimization Done.") != std::string::npos);

  // Automatic: a string stream is not a terminal, so no progress line.
  std::ostringstream plain;
  SGDSolver<CPU, float> q(c, SolverOptions().log_to(plain));
  q.solve();
  CHECK(plain.str().find('\r') == std::string::npos);
}

TEST_CASE("Metrics CSV: iteration, seconds, loss, lr, then each test output") {
  const auto dir = temp_dir("csv");
  std::ostringstream log;
  auto c = resume_config(detail::concat(R"(
    test_iter: 1 test_interval: 4 base_lr: 0.01 lr_policy: "step" gamma: 0.5 stepsize: 4 display: 2 max_iter: 8
    snapshot_prefix: ")", (dir / "run").string(), "\""));
  {
    SGDSolver<CPU, float> s(c, SolverOptions().log_to(log));
    CHECK(s.metrics_path() == fs::path((dir / "run").string() + "_metrics.csv"));
    s.solve();
  }
  std::ifstream is(dir / "run_metrics.csv");
  std::vector<std::vector<std::string>> rows;
  for (std::string l; std::getline(is, l);) {
    std::vector<std::string> cells;
    std::string cell;
    std::istringstream ls(l);
    while (std::getline(ls, cell, ',')) cells.push_back(cell);
    if (!l.empty() && l.back() == ',') cells.push_back("");
    rows.push_back(cells);
  }
  REQUIRE(rows.size() == 6);
  CHECK(rows[0] == std::vector<std::string>{"iteration", "seconds", "loss", "lr", "test/loss", "test/loss_noise"});
  const std::vector<std::string> iters = {"0", "2", "4", "6", "8"};
  const std::vector<double> lrs = {0.01, 0.01, 0.005, 0.005, 0.0025};
  double last_secs = 0;
  for (std::size_t i = 0; i < iters.size(); ++i) {
    const auto& r = rows[i + 1];
    CAPTURE(i);
    REQUIRE(r.size() == 6);
    CHECK(r[0] == iters[i]);
    CHECK(std::stod(r[1]) >= last_secs);
    last_secs = std::stod(r[1]);
    CHECK(std::stod(r[2]) > 0);
    CHECK(std::stod(r[3]) == doctest::Approx(lrs[i]));
    const bool tested = i % 2 == 0;
    CHECK(r[4].empty() == !tested);
    CHECK(r[5].empty() == !tested);
    if (tested) CHECK(std::stod(r[4]) > 0);
  }
  // An empty path disables the file; no prefix means no file either.
  SolverOptions off;
  off.log = &log;
  off.metrics_csv = fs::path();
  SGDSolver<CPU, float> none(c, off);
  CHECK(none.metrics_path().empty());
  fs::remove_all(dir);
}

namespace {

template <class T>
struct RunResult {
  std::vector<std::vector<T>> params, history;
  std::size_t cursor = 0;
  std::string rng;
  T smoothed = 0;
};

template <class T>
RunResult<T> result_of(Solver<CPU, T>& s) {
  RunResult<T> r;
  for (const auto& p : s.net().learnable_params()) r.params.push_back(p.tensor->data_to_host());
  for (const auto& h : s.history()) r.history.push_back(h.data_to_host());
  r.cursor = dynamic_cast<SeqDataLayer<CPU, T>&>(s.net().layer_by_name("seq")).cursor();
  r.rng = s.context().rng().state();
  r.smoothed = s.smoothed_loss();
  return r;
}

template <class T>
bool bytes_equal(const std::vector<std::vector<T>>& a, const std::vector<std::vector<T>>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].size() != b[i].size() || std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(T)) != 0) return false;
  return true;
}

}  // namespace

TEST_CASE_TEMPLATE("Restore then solve continues bit-identically to an uninterrupted run", T, float, double) {
  for (const std::string type : {"SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"}) {
    CAPTURE(type);
    const auto dir = temp_dir(detail::concat("resume_", type, sizeof(T)));
    const bool no_momentum = type == "AdaGrad" || type == "RMSProp";
    const std::string common = detail::concat(
        "type: \"", type, "\" base_lr: 0.02 momentum: ", no_momentum ? "0" : "0.9",
        " weight_decay: 0.001 lr_policy: \"multistep\" gamma: 0.5 ",
        "stepvalue: 7 stepvalue: 13 display: 5 average_loss: 4 test_iter: 2 test_interval: 5 iter_size: 2 ",
        "clip_gradients: 5 ");
    std::ostringstream log;
    // A: 20 iterations at once.
    auto ca = resume_config(common + "max_iter: 20 random_seed: 42");
    auto a = make_solver<CPU, T>(ca, SolverOptions().log_to(log));
    a->solve();
    // B: 10 iterations, snapshot at the end.
    auto cb = resume_config(common + detail::concat("max_iter: 10 random_seed: 42 snapshot_prefix: \"", (dir / "b").string(), "\""));
    auto b = make_solver<CPU, T>(cb, SolverOptions().log_to(log));
    b->solve();
    REQUIRE(fs::exists(dir / "b_iter_10.solverstate"));
    // C: another seed (other initial weights and RNG), restored from B's state, on to 20.
    auto cc = resume_config(common + "max_iter: 20 random_seed: 999");
    auto c = make_solver<CPU, T>(cc, SolverOptions().log_to(log));
    c->solve(dir / "b_iter_10.solverstate");
    CHECK(c->iter() == 20);
    const auto ra = result_of(*a);
    const auto rc = result_of(*c);
    CHECK(bytes_equal(ra.params, rc.params));
    CHECK(bytes_equal(ra.history, rc.history));
    CHECK(ra.cursor == rc.cursor);
    CHECK(ra.rng == rc.rng);
    CHECK(std::memcmp(&ra.smoothed, &rc.smoothed, sizeof(T)) == 0);
    // And B really stopped elsewhere.
    CHECK_FALSE(bytes_equal(ra.params, result_of(*b).params));
    fs::remove_all(dir);
  }
}

TEST_CASE("A small MLP learns a separable problem (convergence smoke test)") {
  // Two classes in the plane split by x0 + 0.5 x1 = 0, with a margin; targets -1 / +1.
  const int n = 256;
  std::vector<float> x, y;
  Rng r(2024);
  while (static_cast<int>(y.size()) < n) {
    const float a = r.uniform<float>(-1, 1), b = r.uniform<float>(-1, 1);
    const float s = a + 0.5f * b;
    if (std::abs(s) < 0.2f) continue;
    x.push_back(a);
    x.push_back(b);
    y.push_back(s > 0 ? 1.0f : -1.0f);
  }
  auto c = SolverConfig::from_text(R"(
    base_lr: 0.1 momentum: 0.9 weight_decay: 0.0001 lr_policy: "fixed" max_iter: 500 display: 100
    average_loss: 20 random_seed: 1)");
  c.net_param = parse_prototxt(R"(
    name: "sep"
    layer { name: "data" type: "MemoryData" top: "x" top: "label"
            memory_data_param { batch_size: 32 channels: 2 height: 1 width: 1 } }
    layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
            inner_product_param { num_output: 16 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0 } } }
    layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
    layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "y"
            inner_product_param { num_output: 1 weight_filler { type: "xavier" } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "label" top: "loss" })");
  std::ostringstream log;
  SGDSolver<CPU, float> s(c, SolverOptions().log_to(log));
  dynamic_cast<MemoryDataLayer<CPU, float>&>(s.net().layer_by_name("data")).reset(x, y);
  s.step(1);
  const float initial = s.smoothed_loss();
  s.solve();
  CAPTURE(log.str());
  CHECK(initial > 0.2f);
  CHECK(s.smoothed_loss() < 0.06f);  // 0.037 with this seed; initial 0.57
  int correct = 0;
  for (int b = 0; b < n / 32; ++b) {
    (void)s.net().forward();
    const auto out = s.net().blob("y").data_to_host();
    const auto lab = s.net().blob("label").data_to_host();
    for (std::size_t i = 0; i < out.size(); ++i) correct += (out[i] > 0) == (lab[i] > 0);
  }
  CHECK(correct >= n * 97 / 100);
}

TEST_CASE("The smoothed loss is the mean of the last average_loss losses, exactly 0 when they are") {
  // One sample a batch, loss = x^2 / 2 against a label of 0: the losses are known in advance.
  const std::vector<float> xs{0.3f, 0.7f, 0.1f, 0.9f, 0.0f, 0.0f, 0.0f};
  auto c = SolverConfig::from_text("base_lr: 0.1 lr_policy: \"fixed\" max_iter: 100 display: 0 average_loss: 3");
  c.net_param = parse_prototxt(R"(
    name: "fixed_losses"
    layer { name: "data" type: "MemoryData" top: "x" top: "label"
            memory_data_param { batch_size: 1 channels: 1 height: 1 width: 1 } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "x" bottom: "label" top: "loss" })");
  std::ostringstream log;
  SGDSolver<CPU, float> s(c, SolverOptions().log_to(log).with_progress(SolverOptions::Progress::off));
  dynamic_cast<MemoryDataLayer<CPU, float>&>(s.net().layer_by_name("data")).reset(xs, std::vector<float>(xs.size(), 0));
  std::vector<double> losses;
  for (float x : xs) {
    s.step(1);
    losses.push_back(static_cast<double>(static_cast<float>(0.5 * double(x) * double(x))));
    const std::size_t k = std::min<std::size_t>(losses.size(), 3);
    double mean = 0;
    for (std::size_t i = losses.size() - k; i < losses.size(); ++i) mean += losses[i];
    mean /= static_cast<double>(k);
    CAPTURE(losses.size());
    CHECK(s.smoothed_loss() == doctest::Approx(mean).epsilon(1e-6));
  }
  CHECK(s.smoothed_loss() == 0.0f);  // three zero losses: no drift left over from the earlier ones
}
