// SolverConfig: Caffe's SolverParameter read from a solver prototxt (or built in C++), every
// field with Caffe's default, checked up front with errors that name the file, line and field.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/net/prototxt.hpp>
#include <poseidon/net/state.hpp>
#include <poseidon/solver/lr_policy.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct SolverConfig {
  // ---- the nets (exactly one train source; test nets as Caffe counts them) ----
  std::string net;                               // net file with TRAIN and TEST phases
  std::optional<Message> net_param;              // the same, inline
  std::string train_net;                         // train-only net file
  std::optional<Message> train_net_param;
  std::vector<std::string> test_net;             // test-only net files
  std::vector<Message> test_net_param;
  std::optional<NetState> train_state;           // phase is forced to TRAIN
  std::vector<NetState> test_state;              // one per test net when given; phase forced to TEST
  std::vector<std::string> weights;              // weights files loaded into the train net at start

  // ---- testing ----
  std::vector<int> test_iter;
  int test_interval = 0;
  bool test_compute_loss = false;
  bool test_initialization = true;

  // ---- optimisation ----
  std::string type = "SGD";                      // SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam
  float base_lr = 0;
  std::string lr_policy = "fixed";               // Caffe has no default (it aborts); we take fixed
  float gamma = 0;
  float power = 0;
  int stepsize = 0;
  std::vector<int> stepvalue;
  int max_iter = 0;
  float momentum = 0;
  float momentum2 = 0.999f;
  float delta = 1e-8f;
  float rms_decay = 0.99f;
  float weight_decay = 0;
  std::string regularization_type = "L2";
  float clip_gradients = -1;
  int iter_size = 1;

  // ---- reporting and snapshots ----
  int display = 0;
  int average_loss = 1;
  int snapshot = 0;
  std::string snapshot_prefix;
  bool snapshot_after_train = true;
  bool snapshot_diff = false;                    // accepted; our weight files hold data only
  std::string snapshot_format = "BINARYPROTO";   // accepted; we always write our own format
  bool debug_info = false;                       // accepted, ignored

  // ---- machine ----
  std::string solver_mode = "GPU";               // accepted; the device is the Solver's template argument
  int device_id = 0;                             // used by Solver<CUDA> when it makes its own context
  std::int64_t random_seed = -1;                 // < 0: the context's seed is left as it is
  bool layer_wise_reduce = true;                 // accepted, ignored

  // ---- where it came from ----
  std::string source = "<builder>";              // file name for messages
  std::filesystem::path source_dir;              // relative net paths fall back to this directory
  std::map<std::string, SourceLoc> field_locs;   // where each field was written (last occurrence)

  static constexpr std::string_view solver_types[] = {"SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"};

  /// Reads a solver prototxt. A relative `net`/`train_net`/`test_net` path is taken relative to the
  /// working directory when it exists there, else relative to this file's directory.
  static SolverConfig from_prototxt(const std::filesystem::path& file) {
    SolverConfig c = from_message(read_prototxt(file));
    c.source = file.string();
    c.source_dir = file.parent_path();
    return c;
  }
  static SolverConfig from_text(std::string_view text, std::string_view name = "<solver>") {
    SolverConfig c = from_message(parse_prototxt(text, name));
    c.source = std::string(name);
    return c;
  }

  static SolverConfig from_message(const Message& m) {
    m.check_fields({"net", "net_param", "train_net", "test_net", "train_net_param", "test_net_param", "train_state",
                    "test_state", "weights", "test_iter", "test_interval", "test_compute_loss", "test_initialization",
                    "base_lr", "display", "average_loss", "max_iter", "iter_size", "lr_policy", "gamma", "power",
                    "momentum", "weight_decay", "regularization_type", "stepsize", "stepvalue", "clip_gradients",
                    "snapshot", "snapshot_prefix", "snapshot_diff", "snapshot_format", "solver_mode", "device_id",
                    "random_seed", "type", "delta", "momentum2", "rms_decay", "debug_info", "snapshot_after_train",
                    "solver_type", "layer_wise_reduce"},
                   "solver parameters");
    SolverConfig c;
    c.source = m.loc().file.empty() ? std::string("<solver>") : m.loc().file;
    for (const auto& f : m.fields()) c.field_locs[f.name] = f.loc;

    c.net = m.get("net", c.net);
    if (m.has("net_param")) c.net_param = m.child("net_param");
    c.train_net = m.get("train_net", c.train_net);
    if (m.has("train_net_param")) c.train_net_param = m.child("train_net_param");
    c.test_net = m.get_all<std::string>("test_net");
    for (const Message* t : m.children("test_net_param")) c.test_net_param.push_back(*t);
    if (m.has("train_state")) c.train_state = read_state(m.child("train_state"), Phase::train);
    for (const Message* s : m.children("test_state")) c.test_state.push_back(read_state(*s, Phase::test));
    c.weights = m.get_all<std::string>("weights");

    c.test_iter = m.get_all<int>("test_iter");
    c.test_interval = m.get("test_interval", c.test_interval);
    c.test_compute_loss = m.get("test_compute_loss", c.test_compute_loss);
    c.test_initialization = m.get("test_initialization", c.test_initialization);

    c.type = m.get("type", c.type);
    if (m.has("solver_type")) {  // Caffe's deprecated enum; `type` wins when both are given (Caffe refuses both)
      const int t = m.get_enum("solver_type", {"SGD", "NESTEROV", "ADAGRAD", "RMSPROP", "ADADELTA", "ADAM"}, 0);
      POSEIDON_CHECK(!m.has("type"), c.at("solver_type"), ": give either type or the deprecated solver_type, not both");
      c.type = std::string(solver_types[static_cast<std::size_t>(t)]);
    }
    c.base_lr = m.get("base_lr", c.base_lr);
    c.lr_policy = m.get("lr_policy", c.lr_policy);
    c.gamma = m.get("gamma", c.gamma);
    c.power = m.get("power", c.power);
    c.stepsize = m.get("stepsize", c.stepsize);
    c.stepvalue = m.get_all<int>("stepvalue");
    c.max_iter = m.get("max_iter", c.max_iter);
    c.momentum = m.get("momentum", c.momentum);
    c.momentum2 = m.get("momentum2", c.momentum2);
    c.delta = m.get("delta", c.delta);
    c.rms_decay = m.get("rms_decay", c.rms_decay);
    c.weight_decay = m.get("weight_decay", c.weight_decay);
    c.regularization_type = m.get("regularization_type", c.regularization_type);
    c.clip_gradients = m.get("clip_gradients", c.clip_gradients);
    c.iter_size = m.get("iter_size", c.iter_size);

    c.display = m.get("display", c.display);
    c.average_loss = m.get("average_loss", c.average_loss);
    c.snapshot = m.get("snapshot", c.snapshot);
    c.snapshot_prefix = m.get("snapshot_prefix", c.snapshot_prefix);
    c.snapshot_after_train = m.get("snapshot_after_train", c.snapshot_after_train);
    c.snapshot_diff = m.get("snapshot_diff", c.snapshot_diff);
    if (m.has("snapshot_format"))
      c.snapshot_format = m.get_enum("snapshot_format", {"HDF5", "BINARYPROTO"}, 1) == 0 ? "HDF5" : "BINARYPROTO";
    c.debug_info = m.get("debug_info", c.debug_info);
    if (m.has("solver_mode")) c.solver_mode = m.get_enum("solver_mode", {"CPU", "GPU"}, 1) == 0 ? "CPU" : "GPU";
    c.device_id = m.get("device_id", c.device_id);
    c.random_seed = m.get("random_seed", c.random_seed);
    c.layer_wise_reduce = m.get("layer_wise_reduce", c.layer_wise_reduce);
    c.validate();
    return c;
  }

  /// "file:line:col: field 'name'" when the field was read from a file, else "solver field 'name'".
  [[nodiscard]] std::string at(std::string_view field) const {
    auto it = field_locs.find(std::string(field));
    if (it != field_locs.end() && it->second.line) return detail::concat(it->second.str(), ": field '", field, "'");
    return detail::concat(source, ": field '", field, "'");
  }

  /// Checks values and combinations that Caffe checks (some only at run time); throws naming the field.
  void validate() const {
    bool known_type = false;
    for (auto t : solver_types) known_type = known_type || type == t;
    if (!known_type) {
      std::string list;
      for (auto t : solver_types) list += detail::concat(list.empty() ? "" : ", ", t);
      detail::raise(at("type"), ": unknown solver type '", type, "'; expected one of: ", list);
    }
    const LrPolicy::Kind k = LrPolicy::parse(lr_policy, at("lr_policy"));
    POSEIDON_CHECK(regularization_type == "L1" || regularization_type == "L2", at("regularization_type"),
                   ": unknown regularization_type '", regularization_type, "'; expected L1 or L2");
    POSEIDON_CHECK(iter_size >= 1, at("iter_size"), ": must be at least 1, got ", iter_size);
    POSEIDON_CHECK(average_loss >= 1, at("average_loss"), ": must be at least 1, got ", average_loss);
    POSEIDON_CHECK(max_iter >= 0, at("max_iter"), ": must not be negative, got ", max_iter);
    POSEIDON_CHECK(display >= 0, at("display"), ": must not be negative, got ", display);
    POSEIDON_CHECK(snapshot >= 0, at("snapshot"), ": must not be negative, got ", snapshot);
    POSEIDON_CHECK(test_interval >= 0, at("test_interval"), ": must not be negative, got ", test_interval);
    for (int t : test_iter) POSEIDON_CHECK(t >= 0, at("test_iter"), ": must not be negative, got ", t);
    if (k == LrPolicy::Kind::step)
      POSEIDON_CHECK(stepsize > 0, at(field_locs.count("stepsize") ? "stepsize" : "lr_policy"),
                     ": lr_policy \"step\" needs stepsize > 0, got ", stepsize);
    if (k == LrPolicy::Kind::poly)
      POSEIDON_CHECK(max_iter > 0, at(field_locs.count("max_iter") ? "max_iter" : "lr_policy"),
                     ": lr_policy \"poly\" needs max_iter > 0");
    for (std::size_t i = 1; i < stepvalue.size(); ++i)
      POSEIDON_CHECK(stepvalue[i] > stepvalue[i - 1], at("stepvalue"), ": stepvalues must increase, got ",
                     stepvalue[i - 1], " then ", stepvalue[i]);
    if (type == "AdaGrad" || type == "RMSProp")
      POSEIDON_CHECK(momentum == 0.0f, at("momentum"), ": momentum cannot be used with ", type, " (Caffe refuses it too)");
    POSEIDON_CHECK(snapshot == 0 || !snapshot_prefix.empty(), at("snapshot"),
                   ": snapshot is specified but snapshot_prefix is not");
    const int generic = (net.empty() ? 0 : 1) + (net_param ? 1 : 0);
    POSEIDON_CHECK(generic <= 1, at("net_param"), ": give either net or net_param, not both");
    const int train = generic + (train_net.empty() ? 0 : 1) + (train_net_param ? 1 : 0);
    POSEIDON_CHECK(train <= 1, at(!train_net.empty() ? "train_net" : "train_net_param"),
                   ": give exactly one of net, net_param, train_net, train_net_param");
    const std::size_t specific = test_net.size() + test_net_param.size();
    if (generic)
      POSEIDON_CHECK(test_iter.size() >= specific, at("test_iter"), ": test_iter must be given for each test net (",
                     specific, " test nets, ", test_iter.size(), " test_iter)");
    else
      POSEIDON_CHECK(test_iter.size() == specific, at(test_iter.empty() ? "test_net" : "test_iter"),
                     ": test_iter must be given for each test net (", specific, " test nets, ", test_iter.size(),
                     " test_iter)");
    POSEIDON_CHECK(test_state.empty() || test_state.size() == num_test_nets(), at("test_state"),
                   ": test_state must be left out or given once per test net (", num_test_nets(), " test nets, ",
                   test_state.size(), " test_state)");
    POSEIDON_CHECK(num_test_nets() == 0 || test_interval > 0, at("test_interval"),
                   ": test nets are defined, so test_interval must be positive");
  }

  /// Test nets: test_net_param ones, then test_net files, then TEST instances of net/net_param (Caffe's order).
  [[nodiscard]] std::size_t num_test_nets() const {
    const bool generic = !net.empty() || net_param.has_value();
    return generic ? test_iter.size() : test_net.size() + test_net_param.size();
  }

  [[nodiscard]] LrPolicy lr() const {
    LrPolicy p;
    p.kind = LrPolicy::parse(lr_policy, at("lr_policy"));
    p.base_lr = base_lr;
    p.gamma = gamma;
    p.power = power;
    p.stepsize = stepsize;
    p.stepvalue = stepvalue;
    p.max_iter = max_iter;
    return p;
  }

  /// A net path as given when it exists relative to the working directory, else relative to the
  /// solver file's directory (so `net: "lenet.prototxt"` works from anywhere).
  [[nodiscard]] std::filesystem::path resolve(const std::string& path, std::string_view field) const {
    namespace fs = std::filesystem;
    const fs::path p(path);
    if (p.is_absolute() || fs::exists(p)) {
      POSEIDON_CHECK(fs::exists(p), at(field), ": file '", path, "' does not exist");
      return p;
    }
    if (!source_dir.empty() && fs::exists(source_dir / p)) return source_dir / p;
    detail::raise(at(field), ": file '", path, "' not found in the working directory ", fs::current_path().string(),
                  source_dir.empty() ? std::string() : detail::concat(" nor next to the solver file in ", source_dir.string()));
  }

 private:
  static NetState read_state(const Message& s, Phase phase) {
    s.check_fields({"phase", "level", "stage"}, "solver net state");
    NetState st;
    st.phase = phase;
    st.level = s.get("level", 0);
    st.stages = s.get_all<std::string>("stage");
    return st;
  }
};

POSEIDON_NAMESPACE_END
