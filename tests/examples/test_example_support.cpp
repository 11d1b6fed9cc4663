#include <doctest/doctest.h>
#include <poseidon.hpp>

#include "common/example_support.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

using namespace poseidon;
namespace ex = example_support;

namespace {

void no_usage(std::FILE*) {}

/// argv for Args: the strings live as long as this object.
struct Argv {
  std::vector<std::string> words;
  std::vector<char*> ptrs;
  explicit Argv(std::vector<std::string> w) : words(std::move(w)) {
    words.insert(words.begin(), "prog");
    for (auto& s : words) ptrs.push_back(s.data());
  }
  ex::Args args(long max_int = 1L << 20) { return ex::Args(static_cast<int>(ptrs.size()), ptrs.data(), no_usage, max_int); }
};

/// Every flag of argv read through DeviceFlags, the rest refused as unknown.
ex::DeviceFlags read_device(std::vector<std::string> words) {
  Argv a(std::move(words));
  ex::DeviceFlags d;
  for (auto args = a.args(); args.next();)
    if (!d.read(args)) args.unknown();
  return d;
}

/// What `f` writes to stderr.
template <class F>
std::string stderr_of(F&& f) {
  std::fflush(stderr);
  std::FILE* tmp = std::tmpfile();
  REQUIRE(tmp != nullptr);
  const int saved = ::dup(2);
  ::dup2(::fileno(tmp), 2);
  f();
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  std::rewind(tmp);
  std::string out;
  for (int c; (c = std::fgetc(tmp)) != EOF;) out.push_back(static_cast<char>(c));
  std::fclose(tmp);
  return out;
}

}  // namespace

TEST_CASE("the examples' Args reads flags and values in order") {
  Argv a({"--n", "12", "--x", "0.25", "--s", "text", "--last"});
  auto args = a.args();
  REQUIRE(args.next());
  CHECK(args.flag() == "--n");
  CHECK(args.integer(1) == 12);
  REQUIRE(args.next());
  CHECK(args.positive_number() == 0.25);
  REQUIRE(args.next());
  CHECK(args.value() == "text");
  REQUIRE(args.next());
  CHECK(args.flag() == "--last");
  CHECK_THROWS_WITH_AS(args.value(), "--last needs a value (see --help)", Error);
  CHECK_THROWS_WITH_AS(args.unknown(), "unknown option '--last' (see --help)", Error);
  CHECK_FALSE(args.next());
}

TEST_CASE("the examples' Args refuses bad numbers with the flag's name") {
  auto integer = [](const std::string& v, long min, long max_int = 1L << 20) {
    Argv a({"--k", v});
    auto args = a.args(max_int);
    REQUIRE(args.next());
    return args.integer(min);
  };
  CHECK(integer("0", 0) == 0);
  CHECK(integer("1048576", 1) == 1 << 20);
  CHECK_THROWS_WITH_AS(integer("1048577", 1), "--k needs a positive integer, got '1048577'", Error);
  CHECK(integer("1048577", 1, 1L << 30) == (1 << 20) + 1);
  CHECK_THROWS_WITH_AS(integer("0", 1), "--k needs a positive integer, got '0'", Error);
  CHECK_THROWS_WITH_AS(integer("-1", 0), "--k needs a non-negative integer, got '-1'", Error);
  CHECK_THROWS_WITH_AS(integer("2x", 1), "--k needs a positive integer, got '2x'", Error);
  CHECK_THROWS_WITH_AS(integer("", 0), "--k needs a non-negative integer, got ''", Error);

  auto number = [](const std::string& v, double max) {
    Argv a({"--e", v});
    auto args = a.args();
    REQUIRE(args.next());
    return args.positive_number(max);
  };
  CHECK(number("1e6", 1e6) == 1e6);
  CHECK_THROWS_WITH_AS(number("2e6", 1e6), "--e must be a positive number, got '2e6'", Error);
  for (const char* bad : {"0", "-1", "abc", "", "nan", "1.5x"})
    CHECK_THROWS_WITH_AS(number(bad, 1e6), doctest::Contains("--e must be a positive number"), Error);
}

TEST_CASE("the examples' --device and --device-id") {
  const ex::DeviceFlags defaults = read_device({});
  CHECK(defaults.device == "cpu");
  CHECK(defaults.device_id == 0);
  const ex::DeviceFlags d = read_device({"--device-id", "3", "--device", "cuda"});
  CHECK(d.device == "cuda");
  CHECK(d.device_id == 3);
  CHECK_THROWS_WITH_AS(read_device({"--device", "gpu"}), "--device must be cpu or cuda, got 'gpu'", Error);
  CHECK_THROWS_WITH_AS(read_device({"--device-id", "-1"}), "--device-id needs a non-negative integer, got '-1'", Error);
  CHECK_THROWS_WITH_AS(read_device({"--threads", "2"}), "unknown option '--threads' (see --help)", Error);

  std::FILE* help = std::tmpfile();
  REQUIRE(help != nullptr);
  ex::DeviceFlags::print_help(help, 17);
  std::rewind(help);
  std::string text;
  for (int c; (c = std::fgetc(help)) != EOF;) text.push_back(static_cast<char>(c));
  std::fclose(help);
  CHECK(text ==
        "  --device D     cpu (default) or cuda; cuda needs a binary built with POSEIDON_WITH_CUDA\n"
        "  --device-id N  the GPU to train on with --device cuda (default 0)\n");

  CHECK_NOTHROW(read_device({"--device", "cpu"}).check_built());
#if defined(POSEIDON_WITH_CUDA)
  CHECK_NOTHROW(d.check_built());
#else
  CHECK_THROWS_WITH_AS(d.check_built(), doctest::Contains("--device cuda: this binary was built without CUDA"), Error);
#endif
}

TEST_CASE("the examples' data folder from POSEIDON_DATA_DIR") {
  const char* before = std::getenv("POSEIDON_DATA_DIR");
  const std::optional<std::string> saved = before ? std::optional<std::string>(before) : std::nullopt;
  ::setenv("POSEIDON_DATA_DIR", "/some/where", 1);
  CHECK(ex::data_dir_from_env() == std::filesystem::path("/some/where"));
  ::setenv("POSEIDON_DATA_DIR", "", 1);
  CHECK_FALSE(ex::data_dir_from_env().has_value());
  ::unsetenv("POSEIDON_DATA_DIR");
  CHECK_FALSE(ex::data_dir_from_env().has_value());
  if (saved) ::setenv("POSEIDON_DATA_DIR", saved->c_str(), 1);
}

TEST_CASE("the examples' main reports an error as '<program>: <what>' with status 1") {
  int status = -1;
  CHECK(stderr_of([&] { status = ex::run_main("prog", [] { return 7; }); }).empty());
  CHECK(status == 7);
  const std::string err = stderr_of([&] {
    status = ex::run_main("prog", []() -> int { throw std::runtime_error("it broke"); });
  });
  CHECK(status == 1);
  CHECK(err == "prog: it broke\n");
}

TEST_CASE("the examples' solve reads the closing test's accuracy") {
  // Constant inputs labelled 0: one SGD step makes class 0 win for every image.
  const std::string net = R"(
    layer { name: "data" type: "DummyData" top: "data" top: "label"
            dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }
                               data_filler { type: "constant" value: 1 } data_filler { type: "constant" value: 0 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
            inner_product_param { num_output: 2 weight_filler { type: "constant" value: 0 } } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
    layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include { phase: TEST } }
  )";
  const std::string solver = "net_param {" + net +
                             "} base_lr: 0.1 lr_policy: \"fixed\" test_iter: 1 test_initialization: false display: 0 "
                             "snapshot_after_train: false ";
  CHECK(ex::seed_of(SolverConfig::from_text(solver + "test_interval: 1")) == 1701);
  CHECK(ex::seed_of(SolverConfig::from_text(solver + "test_interval: 1 random_seed: 5")) == 5);
  auto ctx = std::make_shared<DeviceContext<CPU>>(1, 1701);
  for (const char* schedule : {"max_iter: 4 test_interval: 2", "max_iter: 3 test_interval: 2"}) {
    CAPTURE(schedule);
    const ex::SolveResult r = ex::solve_and_test(SolverConfig::from_text(solver + schedule), ctx);
    CHECK(r.accuracy == 1.0);
    CHECK(r.seconds >= 0);
  }
  const std::string no_accuracy = "net_param {" + net.substr(0, net.find("layer { name: \"accuracy\"")) +
                                  "} base_lr: 0.1 lr_policy: \"fixed\" test_iter: 1 test_interval: 1 max_iter: 1 "
                                  "test_initialization: false display: 0 snapshot_after_train: false";
  CHECK_THROWS_WITH_AS(ex::solve_and_test(SolverConfig::from_text(no_accuracy), ctx),
                       "the test net has no 'accuracy' output", Error);
}
