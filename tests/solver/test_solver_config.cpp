#include <doctest/doctest.h>

#include "solver_testing.hpp"

#include <poseidon/solver/lr_policy.hpp>
#include <poseidon/solver/solver_config.hpp>

#include <cmath>
#include <sstream>
#include <string>

using namespace poseidon;

namespace {

std::string error_of(std::string_view text) {
  try {
    (void)SolverConfig::from_text(text, "s.prototxt");
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

bool contains(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("SolverConfig: Caffe's defaults") {
  const auto c = SolverConfig::from_text("net: \"n.prototxt\"");
  CHECK(c.type == "SGD");
  CHECK(c.lr_policy == "fixed");
  CHECK(c.iter_size == 1);
  CHECK(c.average_loss == 1);
  CHECK(c.clip_gradients == -1.0f);
  CHECK(c.regularization_type == "L2");
  CHECK(c.momentum2 == 0.999f);
  CHECK(c.delta == 1e-8f);
  CHECK(c.rms_decay == 0.99f);
  CHECK(c.test_initialization);
  CHECK(c.snapshot_after_train);
  CHECK(c.random_seed == -1);
  CHECK(c.solver_mode == "GPU");
  CHECK(c.device_id == 0);
  CHECK(c.display == 0);
  CHECK(c.max_iter == 0);
  CHECK(c.test_iter.empty());
}

TEST_CASE("SolverConfig: reads every field of Caffe's lenet solver, and the consolidated form") {
  const auto c = SolverConfig::from_text(R"(
    net: "lenet_train_test.prototxt"
    test_iter: 100 test_interval: 500 base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005
    lr_policy: "inv" gamma: 0.0001 power: 0.75 display: 100 max_iter: 10000
    snapshot: 5000 snapshot_prefix: "examples/mnist/lenet" solver_mode: GPU device_id: 1
    type: "Adam" momentum2: 0.995 delta: 1e-6 iter_size: 2 average_loss: 20 clip_gradients: 10
    regularization_type: "L1" random_seed: 1701 test_initialization: false snapshot_after_train: false
    stepvalue: 10 stepvalue: 20 stepsize: 7 test_compute_loss: true debug_info: false
    snapshot_format: BINARYPROTO snapshot_diff: false layer_wise_reduce: true weights: "a.poseidonmodel")");
  CHECK(c.net == "lenet_train_test.prototxt");
  CHECK(c.test_iter == std::vector<int>{100});
  CHECK(c.test_interval == 500);
  CHECK(c.base_lr == 0.01f);
  CHECK(c.momentum == 0.9f);
  CHECK(c.weight_decay == 0.0005f);
  CHECK(c.lr_policy == "inv");
  CHECK(c.gamma == 0.0001f);
  CHECK(c.power == 0.75f);
  CHECK(c.display == 100);
  CHECK(c.max_iter == 10000);
  CHECK(c.snapshot == 5000);
  CHECK(c.snapshot_prefix == "examples/mnist/lenet");
  CHECK(c.device_id == 1);
  CHECK(c.type == "Adam");
  CHECK(c.momentum2 == 0.995f);
  CHECK(c.delta == 1e-6f);
  CHECK(c.iter_size == 2);
  CHECK(c.average_loss == 20);
  CHECK(c.clip_gradients == 10.0f);
  CHECK(c.regularization_type == "L1");
  CHECK(c.random_seed == 1701);
  CHECK_FALSE(c.test_initialization);
  CHECK_FALSE(c.snapshot_after_train);
  CHECK(c.stepvalue == std::vector<int>{10, 20});
  CHECK(c.test_compute_loss);
  CHECK(c.weights == std::vector<std::string>{"a.poseidonmodel"});

  // The deprecated solver_type enum maps to type.
  CHECK(SolverConfig::from_text("solver_type: NESTEROV").type == "Nesterov");
  CHECK(SolverConfig::from_text("solver_type: ADADELTA").type == "AdaDelta");

  // Caffe's consolidated lenet solver: net_param inline, two test nets told apart by test_state.
  const auto lenet = SolverConfig::from_prototxt(std::string(POSEIDON_TEST_DATA_DIR) + "/../../net/data/lenet_consolidated_solver.prototxt");
  CHECK(lenet.net_param.has_value());
  CHECK(lenet.test_iter == std::vector<int>{100, 600});
  REQUIRE(lenet.test_state.size() == 2);
  CHECK(lenet.test_state[1].stages == std::vector<std::string>{"test-on-train-set"});
  CHECK(lenet.num_test_nets() == 2);
}

TEST_CASE("SolverConfig: errors name the file, line and field") {
  const std::string bad = std::string(POSEIDON_TEST_DATA_DIR) + "/bad_solver.prototxt";
  try {
    (void)SolverConfig::from_prototxt(bad);
    FAIL("expected an error");
  } catch (const Error& e) {
    const std::string m = e.what();
    CHECK(contains(m, "bad_solver.prototxt:4:1"));
    CHECK(contains(m, "unknown field 'momentun'"));
  }
  std::string m = error_of("base_lr: 0.1\nlr_policy: \"cosine\"");
  CHECK(contains(m, "s.prototxt:2:1: field 'lr_policy'"));
  CHECK(contains(m, "unknown lr_policy 'cosine'"));
  m = error_of("type: \"Adagrad\"");
  CHECK(contains(m, "s.prototxt:1:1: field 'type'"));
  CHECK(contains(m, "AdaGrad"));
  m = error_of("regularization_type: \"L3\"");
  CHECK(contains(m, "s.prototxt:1:1: field 'regularization_type'"));
  m = error_of("base_lr: fast");
  CHECK(contains(m, "s.prototxt:1:"));
  CHECK(contains(m, "base_lr"));
  m = error_of("type: \"AdaGrad\"\nmomentum: 0.9");
  CHECK(contains(m, "s.prototxt:2:1: field 'momentum'"));
  m = error_of("snapshot: 100");
  CHECK(contains(m, "snapshot_prefix"));
  m = error_of("lr_policy: \"multistep\"\nstepvalue: 100\nstepvalue: 50");
  CHECK(contains(m, "stepvalues must increase"));
  m = error_of("lr_policy: \"step\"");
  CHECK(contains(m, "stepsize"));
  m = error_of("test_net: \"a\"\ntest_net: \"b\"\ntest_iter: 1\ntrain_net: \"c\"");
  CHECK(contains(m, "test_iter must be given for each test net"));
  m = error_of("net: \"a\"\nnet_param { name: \"x\" }");
  CHECK(contains(m, "either net or net_param"));
  m = error_of("net: \"a\"\ntest_iter: 5");
  CHECK(contains(m, "test_interval must be positive"));
  m = error_of("iter_size: 0");
  CHECK(contains(m, "s.prototxt:1:1: field 'iter_size'"));
  m = error_of("solver_mode: TPU");
  CHECK(contains(m, "s.prototxt:1:"));
  CHECK(contains(m, "TPU"));
}

TEST_CASE("SolverConfig: a relative net path falls back to the solver file's directory") {
  const std::string file = std::string(POSEIDON_TEST_DATA_DIR) + "/dummy_solver.prototxt";
  const auto c = SolverConfig::from_prototxt(file);
  CHECK(c.resolve(c.net, "net") == std::filesystem::path(POSEIDON_TEST_DATA_DIR) / "dummy_net.prototxt");
  std::ostringstream log;
  SGDSolver<CPU, float> s(c, SolverOptions().log_to(log));
  CHECK(s.num_test_nets() == 1);
  s.solve();
  CHECK(s.iter() == 6);
  CHECK(contains(log.str(), "Optimization Done."));

  auto missing = SolverConfig::from_text("net: \"no_such_net.prototxt\"\nbase_lr: 0.1", "m.prototxt");
  try {
    SGDSolver<CPU, float> bad(missing, SolverOptions().log_to(log));
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(contains(e.what(), "m.prototxt:1:1: field 'net'"));
    CHECK(contains(e.what(), "no_such_net.prototxt"));
  }
}

TEST_CASE("lr policies follow Caffe's formulas") {
  auto cfg = [](std::string_view extra) { return SolverConfig::from_text(detail::concat("base_lr: 0.1\n", extra)).lr(); };
  const auto fixed = cfg("lr_policy: \"fixed\"");
  CHECK(fixed.rate(0) == doctest::Approx(0.1));
  CHECK(fixed.rate(12345) == doctest::Approx(0.1));

  const auto step = cfg("lr_policy: \"step\" gamma: 0.5 stepsize: 10");
  CHECK(step.rate(0) == doctest::Approx(0.1));
  CHECK(step.rate(9) == doctest::Approx(0.1));
  CHECK(step.rate(10) == doctest::Approx(0.05));
  CHECK(step.rate(25) == doctest::Approx(0.025));

  const auto exp = cfg("lr_policy: \"exp\" gamma: 0.99");
  CHECK(exp.rate(3) == doctest::Approx(0.1 * 0.99 * 0.99 * 0.99));

  const auto inv = cfg("lr_policy: \"inv\" gamma: 0.0001 power: 0.75");
  CHECK(inv.rate(0) == doctest::Approx(0.1));
  CHECK(inv.rate(5000) == doctest::Approx(0.1 / std::pow(1.5, 0.75)).epsilon(1e-6));

  const auto ms = cfg("lr_policy: \"multistep\" gamma: 0.1 stepvalue: 5 stepvalue: 8");
  CHECK(ms.rate(4) == doctest::Approx(0.1));
  CHECK(ms.rate(5) == doctest::Approx(0.01));
  CHECK(ms.rate(7) == doctest::Approx(0.01));
  CHECK(ms.rate(8) == doctest::Approx(0.001));
  CHECK(ms.rate(100) == doctest::Approx(0.001));
  CHECK(ms.multistep_position(7) == 1);

  const auto poly = cfg("lr_policy: \"poly\" power: 2 max_iter: 100");
  CHECK(poly.rate(0) == doctest::Approx(0.1));
  CHECK(poly.rate(50) == doctest::Approx(0.1 * 0.25));
  CHECK(poly.rate(100) == doctest::Approx(0.0));

  const auto sig = cfg("lr_policy: \"sigmoid\" gamma: -0.1 stepsize: 20");
  CHECK(sig.rate(20) == doctest::Approx(0.05));
  CHECK(sig.rate(0) == doctest::Approx(0.1 / (1 + std::exp(-2.0))));
  CHECK(sig.rate(40) == doctest::Approx(0.1 / (1 + std::exp(2.0))));
}

TEST_CASE("The solver logs multistep transitions and uses the policy's rate") {
  std::ostringstream log;
  auto c = SolverConfig::from_text(R"(
    base_lr: 1 lr_policy: "multistep" gamma: 0.5 stepvalue: 2 stepvalue: 3 display: 1 max_iter: 4)");
  c.net_param = parse_prototxt(poseidon_solver_test::kOneParamNet);
  SGDSolver<CPU, double> s(c, SolverOptions().log_to(log));
  s.step(4);
  const std::string out = log.str();
  CHECK(contains(out, "Iteration 1, lr = 1\n"));
  CHECK(contains(out, "MultiStep Status: Iteration 2, step = 1\n"));
  CHECK(contains(out, "Iteration 2, lr = 0.5\n"));
  CHECK(contains(out, "MultiStep Status: Iteration 3, step = 2\n"));
  CHECK(contains(out, "Iteration 3, lr = 0.25\n"));
}
