// Solver<D, T>: Caffe's Solver — owns the train and test nets, runs iterations (iter_size
// accumulation, clipping, normalisation, regularisation, update), tests, logs, metrics, snapshots.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/context.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/math/blas.hpp>
#include <poseidon/net/net.hpp>
#include <poseidon/net/prototxt.hpp>
#include <poseidon/net/snapshot.hpp>
#include <poseidon/solver/lr_policy.hpp>
#include <poseidon/solver/solver_config.hpp>
#include <poseidon/solver/solver_state.hpp>
#include <poseidon/solver/update_rules.hpp>

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <source_location>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

/// How a solver reports; none of this is in Caffe's SolverParameter.
struct SolverOptions {
  enum class Progress { automatic, on, off };

  std::ostream* log = nullptr;  // nullptr: std::cerr (where glog writes)
  bool glog_prefix = false;     // prefix lines as glog does: "I0312 14:03:22.123456  4242 solver.hpp:301] "
  Progress progress = Progress::automatic;  // automatic: only when the log stream is a terminal
  /// Unset: <snapshot_prefix>_metrics.csv, or no metrics without a prefix. An empty path disables them.
  std::optional<std::filesystem::path> metrics_csv;

  // Chainable setters: SolverOptions().log_to(os).with_progress(SolverOptions::Progress::off).
  SolverOptions& log_to(std::ostream& os) {
    log = &os;
    return *this;
  }
  SolverOptions& with_glog_prefix(bool on = true) {
    glog_prefix = on;
    return *this;
  }
  SolverOptions& with_progress(Progress p) {
    progress = p;
    return *this;
  }
  SolverOptions& with_metrics_csv(std::filesystem::path file) {
    metrics_csv = std::move(file);
    return *this;
  }
};

/// One test output: its name (with [k] for element k of a multi-element blob) and mean value.
template <class T>
struct TestOutput {
  std::string name;
  T value = 0;
};

template <class D, class T = float>
class Solver {
 public:
  using Context = DeviceContext<D>;
  using net_type = Net<D, T>;
  using tensor_type = Tensor<D, T>;

  /// Builds the train net and the test nets (sharing the train net's weights), all on one context.
  /// A null ctx makes a fresh one; random_seed >= 0 reseeds its RNG before any net is built.
  explicit Solver(SolverConfig config, SolverOptions options = {}, std::shared_ptr<Context> ctx = nullptr)
      : cfg_(std::move(config)), opts_(std::move(options)), lr_(cfg_.lr()) {
    cfg_.validate();
    log_ = opts_.log ? opts_.log : &std::cerr;
    ctx_ = ctx ? std::move(ctx) : make_context();
    if (cfg_.random_seed >= 0) ctx_->rng().seed(static_cast<std::uint64_t>(cfg_.random_seed));
    build_nets();
    for (const auto& w : cfg_.weights) {
      const auto path = cfg_.resolve(w, "weights");
      log("Finetuning from ", path.string());
      load_weights(*net_, path);
    }
    const auto& params = net_->learnable_params();
    for (const auto& p : params) history_.emplace_back(p.tensor->shape());
    scratch_a_.resize(params.size());
    scratch_b_.resize(params.size());
    metrics_path_ = opts_.metrics_csv ? *opts_.metrics_csv
                    : cfg_.snapshot_prefix.empty() ? std::filesystem::path()
                                                   : std::filesystem::path(cfg_.snapshot_prefix + "_metrics.csv");
    start_ = Clock::now();
    log("Solver scaffolding done.");
  }
  virtual ~Solver() = default;
  Solver(const Solver&) = delete;
  Solver& operator=(const Solver&) = delete;

  /// Caffe's solver type string ("SGD", "Adam", ...).
  [[nodiscard]] virtual std::string_view type() const = 0;

  // ---- running ------------------------------------------------------------------------------
  /// Trains to max_iter, snapshots (snapshot_after_train), reports the final loss and tests;
  /// returns those final test outputs (one list per test net; empty when max_iter is not a
  /// multiple of test_interval, as Caffe then skips the closing test).
  std::vector<std::vector<TestOutput<T>>> solve() { return solve_impl(nullptr); }
  /// Restores a solver state first (Caffe's `caffe train --snapshot`).
  std::vector<std::vector<TestOutput<T>>> solve(const std::filesystem::path& resume_file) {
    return solve_impl(&resume_file);
  }

  /// Runs `iters` iterations (tests, display and snapshots as configured).
  void step(int iters) {
    const int stop = iter_ + iters;
    step_start_iter_ = iter_;
    step_start_time_ = Clock::now();
    while (iter_ < stop) {
      net_->clear_param_diffs();
      std::vector<std::vector<TestOutput<T>>> tested;
      if (cfg_.test_interval && iter_ % cfg_.test_interval == 0 && (iter_ > 0 || cfg_.test_initialization))
        tested = test_all();
      const bool display = cfg_.display && iter_ % cfg_.display == 0;
      const T loss = forward_backward();
      update_smoothed_loss(loss);
      if (display) log_train_outputs();
      const double rate = learning_rate();
      apply_update();
      if (display || !tested.empty()) write_metrics(iter_, display, rate, tested);
      ++iter_;  // counts the updates done, as in Caffe
      if (cfg_.snapshot && iter_ % cfg_.snapshot == 0) snapshot();
      show_progress(stop, iter_ == stop);
    }
    clear_progress();
  }

  /// Runs every test net (Caffe's TestAll); returns each net's outputs.
  std::vector<std::vector<TestOutput<T>>> test_all() {
    std::vector<std::vector<TestOutput<T>>> all;
    for (int i = 0; i < num_test_nets(); ++i) all.push_back(test(i));
    return all;
  }

  /// Runs test net `id` for its test_iter batches; logs and returns the mean of each output.
  std::vector<TestOutput<T>> test(int id) {
    POSEIDON_CHECK(id >= 0 && id < num_test_nets(), "Solver::test: no test net #", id, " (", num_test_nets(), " test nets)");
    log("Iteration ", iter_, ", Testing net (#", id, ")");
    net_type& tn = *test_nets_[static_cast<std::size_t>(id)];
    tn.share_trained_layers_with(*net_);
    const int n = cfg_.test_iter[static_cast<std::size_t>(id)];
    std::vector<T> score;
    std::vector<std::pair<std::string, int>> which;  // (blob, element)
    T loss = 0;
    for (int i = 0; i < n; ++i) {
      const T l = tn.forward();
      if (cfg_.test_compute_loss) loss += l;
      std::size_t k = 0;
      for (const auto& name : tn.output_blob_names()) {
        const auto v = tn.blob(name).data_to_host();
        for (std::size_t e = 0; e < v.size(); ++e, ++k) {
          if (i == 0) {
            score.push_back(v[e]);
            which.emplace_back(name, static_cast<int>(e));
          } else {
            score[k] += v[e];
          }
        }
      }
    }
    if (cfg_.test_compute_loss) log("Test loss: ", n ? loss / static_cast<T>(n) : T(0));
    std::vector<TestOutput<T>> out;
    for (std::size_t i = 0; i < score.size(); ++i) {
      const auto& [name, e] = which[i];
      const T mean = score[i] / static_cast<T>(n);
      const T w = output_loss_weight(tn, name);
      std::ostringstream extra;
      if (w != T(0)) extra << " (* " << w << " = " << w * mean << " loss)";
      log("    Test net output #", i, ": ", name, " = ", mean, extra.str());
      const bool multi = tn.blob(name).count() > 1;
      out.push_back({multi ? detail::concat(name, "[", e, "]") : name, mean});
    }
    return out;
  }

  // ---- one iteration, step by step (the seams for the distributed trainer) -----------------
  // step() does, per iteration:
  //   net().clear_param_diffs(); T loss = forward_backward();
  //   apply_update():  rate = learning_rate(); clip_gradients();
  //                    for each parameter i in learnable_params() order: apply_update(i);
  //   ++iter
  // A distributed trainer reduces the gradients into each parameter's diff between
  // forward_backward() and apply_update(i), computes the global clipping factor from the reduced
  // gradient_sumsq(i) of every parameter (scale_gradients), and calls apply_update(i) once per
  // parameter it owns, in any order across parameters: each call touches parameter i alone.

  /// iter_size forward/backward passes accumulating gradients; returns the mean loss.
  T forward_backward() {
    T loss = 0;
    for (int i = 0; i < cfg_.iter_size; ++i) loss += net_->forward_backward();
    return loss / static_cast<T>(cfg_.iter_size);
  }

  /// The learning rate at the current iteration (pure: depends on iter() only).
  [[nodiscard]] double learning_rate() const { return lr_.rate(iter_); }

  /// Applies one full update to every parameter: the lr line, clipping, then apply_update(i).
  void apply_update() {
    const double rate = learning_rate();
    if (cfg_.display && iter_ % cfg_.display == 0) log("Iteration ", iter_, ", lr = ", static_cast<T>(rate));
    const int step = lr_.kind == LrPolicy::Kind::multistep ? lr_.multistep_position(iter_) : 0;
    if (step != lr_step_) {
      lr_step_ = step;
      log("MultiStep Status: Iteration ", iter_, ", step = ", lr_step_);
    }
    clip_gradients();
    for (int i = 0; i < num_params(); ++i) apply_update(i, static_cast<T>(rate));
  }

  /// The per-parameter update: normalize, regularize, compute_update_value, data -= diff.
  void apply_update(int param_id) { apply_update(param_id, static_cast<T>(learning_rate())); }
  void apply_update(int param_id, T rate) {
    if (fused_update(param_id, rate)) return;
    normalize(param_id);
    regularize(param_id);
    compute_update_value(param_id, rate);
    update_param(param_id);
  }

  /// Sum of squares of parameter i's gradient (for a global clipping norm over shards).
  [[nodiscard]] T gradient_sumsq(int param_id) {
    auto& t = param(param_id);
    return math::sumsq(*ctx_, t.count(), t.diff());
  }
  /// Caffe's ClipGradients: when the global L2 norm of all gradients exceeds clip_gradients,
  /// scales them all down to it. Like Caffe, this runs before the iter_size normalisation.
  void clip_gradients() {
    if (cfg_.clip_gradients < 0) return;
    T sumsq = 0;
    for (int i = 0; i < num_params(); ++i) sumsq += gradient_sumsq(i);
    const T factor = clip_factor(sumsq);
    if (factor != T(1))
      for (int i = 0; i < num_params(); ++i) scale_gradient(i, factor);
  }
  /// The clipping factor for a global sum of squares (1 when no clipping applies); logs Caffe's line.
  T clip_factor(T global_sumsq) {
    const T clip = static_cast<T>(cfg_.clip_gradients);
    if (clip < T(0)) return T(1);
    const T l2 = std::sqrt(global_sumsq);
    if (!(l2 > clip)) return T(1);
    const T f = clip / l2;
    log("Gradient clipping: scaling down gradients (L2 norm ", l2, " > ", clip, ") by scale factor ", f);
    return f;
  }
  void scale_gradient(int param_id, T factor) {
    auto& t = param(param_id);
    math::scal(*ctx_, t.count(), factor, t.diff());
  }
  /// Divides the accumulated gradient by iter_size (the loss is a mean over the iter_size passes).
  void normalize(int param_id) {
    if (cfg_.iter_size == 1) return;
    scale_gradient(param_id, T(1) / static_cast<T>(cfg_.iter_size));
  }
  /// Adds weight decay (L2: decay * w; L1: decay * sign(w)) scaled by the parameter's decay_mult.
  void regularize(int param_id) {
    const auto& lp = net_->learnable_params()[static_cast<std::size_t>(param_id)];
    const T local_decay = static_cast<T>(cfg_.weight_decay) * static_cast<T>(lp.decay_mult);
    if (local_decay == T(0)) return;
    auto& t = *lp.tensor;
    if (cfg_.regularization_type == "L2") {
      math::axpy(*ctx_, t.count(), local_decay, t.data(), t.diff());
    } else {
      auto& s = scratch_a(param_id);
      math::sign(*ctx_, t.count(), t.data(), s.data());
      math::axpy(*ctx_, t.count(), local_decay, s.data(), t.diff());
    }
  }
  /// Turns parameter i's gradient into the step to subtract (the solver type's rule); the rate
  /// is the policy's, before lr_mult.
  virtual void compute_update_value(int param_id, T rate) = 0;
  /// normalize, regularize, compute_update_value and update_param of parameter i in one pass over
  /// memory, where a solver type has such a pass for the case at hand; false: not done, the steps
  /// run one by one. The result must match theirs up to float rounding (and leave the step in
  /// diff, as they do).
  virtual bool fused_update(int /*param_id*/, T /*rate*/) { return false; }
  /// data -= diff (Caffe's Blob::Update).
  void update_param(int param_id) {
    auto& t = param(param_id);
    math::axpy(*ctx_, t.count(), T(-1), t.diff(), t.data());
  }

  // ---- snapshots ------------------------------------------------------------------------------
  /// Writes <prefix>_iter_N.poseidonmodel and <prefix>_iter_N.solverstate; returns the state's path.
  std::filesystem::path snapshot() {
    POSEIDON_CHECK(!cfg_.snapshot_prefix.empty(), cfg_.source, ": cannot snapshot: snapshot_prefix is not set");
    const std::string base = detail::concat(cfg_.snapshot_prefix, "_iter_", iter_);
    const std::filesystem::path model = base + ".poseidonmodel";
    const std::filesystem::path state = base + ".solverstate";
    log("Snapshotting to binary proto file ", model.string());
    save_weights(*net_, model);
    log("Snapshotting solver state to binary proto file ", state.string());
    save_state(state, model.filename().string());
    return state;
  }

  /// Restores a state written by snapshot() (and the weights file it names); the next step()
  /// continues bit-identically to the run that wrote it.
  void restore(const std::filesystem::path& state_file) {
    const SolverState s = SolverState::read(state_file);
    const std::string name = state_file.string();
    POSEIDON_CHECK(s.type == type(), name, ": solver state was written by solver type ", s.type, "; this solver is ",
                   type());
    POSEIDON_CHECK(s.history.size() == history_.size(), name, ": ", s.history.size(),
                   " history tensors in the file but this solver has ", history_.size(), " (another net?)");
    for (std::size_t i = 0; i < history_.size(); ++i)
      POSEIDON_CHECK(s.history[i].shape == history_[i].shape(), name, ": history tensor ", i, " ('",
                     param_name(static_cast<int>(i) % std::max(1, num_params())), "') has shape ",
                     s.history[i].shape.str(), " in the file but ", history_[i].shape().str(), " here");
    std::vector<std::pair<ResumableLayer*, const std::string*>> layers;
    for (const auto& ls : s.layer_states) {
      net_type* n = net_by_key(ls.net);
      POSEIDON_CHECK(n, name, ": state for layer '", ls.layer, "' of net '", ls.net, "', which this solver does not have");
      const int li = n->layer_index(ls.layer);
      auto* r = li < 0 ? nullptr : dynamic_cast<ResumableLayer*>(&n->layer(li));
      POSEIDON_CHECK(r, name, ": state for layer '", ls.layer, "' of the ", ls.net,
                     " net, which has no such resumable layer");
      layers.emplace_back(r, &ls.bytes);
    }
    std::filesystem::path weights(s.weights_file);
    if (weights.is_relative()) weights = state_file.parent_path() / weights;
    load_weights(*net_, weights);
    for (std::size_t i = 0; i < history_.size(); ++i) history_[i].copy_data_from_host(s.history[i].values<T>());
    for (auto& [r, bytes] : layers) r->load_state(*bytes);
    ctx_->rng().set_state(s.rng_state);
    iter_ = static_cast<int>(s.iter);
    lr_step_ = static_cast<int>(s.lr_step);
    smoothed_loss_ = static_cast<T>(s.smoothed_loss);
    losses_.clear();
    for (double l : s.losses) losses_.push_back(static_cast<T>(l));
    loss_pos_ = s.loss_pos;
    elapsed_base_ = s.elapsed_seconds;
    start_ = Clock::now();
    restored_ = true;
  }

  // ---- inspection -----------------------------------------------------------------------------
  [[nodiscard]] int iter() const { return iter_; }
  /// For trainers that drive iterations themselves (the PS clock); step() advances it on its own.
  void set_iter(int iter) { iter_ = iter; }
  [[nodiscard]] net_type& net() { return *net_; }
  [[nodiscard]] const net_type& net() const { return *net_; }
  [[nodiscard]] int num_test_nets() const { return static_cast<int>(test_nets_.size()); }
  [[nodiscard]] net_type& test_net(int i) { return *test_nets_.at(static_cast<std::size_t>(i)); }
  [[nodiscard]] const SolverConfig& config() const { return cfg_; }
  [[nodiscard]] Context& context() { return *ctx_; }
  [[nodiscard]] int num_params() const { return static_cast<int>(net_->learnable_params().size()); }
  /// History tensors: num_params() per set (momentum; AdaDelta and Adam keep a second set after it).
  [[nodiscard]] std::vector<tensor_type>& history() { return history_; }
  [[nodiscard]] T smoothed_loss() const { return smoothed_loss_; }
  [[nodiscard]] const std::filesystem::path& metrics_path() const { return metrics_path_; }

 protected:
  /// For fused_update overrides: one pass of `rule` (update_rules.hpp) over parameter i on the
  /// context's device, with Caffe's normalize and regularize before it and update_param after.
  /// second_history: the rule also keeps history set 1 (AdaDelta, Adam).
  template <class Rule>
  bool fused_apply(int param_id, const Rule& rule, bool second_history = false) {
    const auto& lp = net_->learnable_params()[static_cast<std::size_t>(param_id)];
    detail::UpdatePrologue<T> pre;
    pre.normalize = cfg_.iter_size != 1;
    pre.inv_iter_size = T(1) / static_cast<T>(cfg_.iter_size);
    pre.decay = static_cast<T>(cfg_.weight_decay) * static_cast<T>(lp.decay_mult);
    pre.l1 = cfg_.regularization_type != "L2";  // validate() admits L1 and L2 only
    auto& p = param(param_id);
    detail::apply_fused_update(*ctx_, p.count(), p.data(), p.diff(), history(0, param_id).data(),
                               second_history ? history(1, param_id).data() : nullptr, pre, rule);
    return true;
  }
  tensor_type& param(int i) { return *net_->learnable_params()[static_cast<std::size_t>(i)].tensor; }
  [[nodiscard]] T lr_mult(int i) const {
    return static_cast<T>(net_->learnable_params()[static_cast<std::size_t>(i)].lr_mult);
  }
  [[nodiscard]] std::string param_name(int i) const {
    return net_->learnable_params()[static_cast<std::size_t>(i)].name;
  }
  /// Adds a second set of history tensors (AdaDelta's update history, Adam's second moment).
  void add_history_set() {
    for (const auto& p : net_->learnable_params()) history_.emplace_back(p.tensor->shape());
  }
  tensor_type& history(int set, int i) {
    return history_[static_cast<std::size_t>(set * num_params() + i)];
  }
  // Scratch tensors (Caffe's update_ and temp_): contents never outlive one compute_update_value.
  tensor_type& scratch_a(int i) { return scratch(scratch_a_, i); }
  tensor_type& scratch_b(int i) { return scratch(scratch_b_, i); }
  /// The first part of a log line; captures the caller's location for the glog prefix.
  struct LogText {
    std::string_view text;
    std::source_location where;
    LogText(const char* t, std::source_location w = std::source_location::current()) : text(t), where(w) {}
  };
  template <class... Parts>
  void log(LogText first, const Parts&... parts) {
    std::ostringstream os;
    os << first.text;
    ((os << parts), ...);
    write_line(os.str(), first.where);
  }

  std::shared_ptr<Context> ctx_;

 private:
  using Clock = std::chrono::steady_clock;

  static std::shared_ptr<Context> make_default_context(int device) {
    if constexpr (is_cpu_v<D>) {
      (void)device;
      return std::make_shared<Context>();
    } else {
      return std::make_shared<Context>(device);
    }
  }
  std::shared_ptr<Context> make_context() const { return make_default_context(cfg_.device_id); }

  tensor_type& scratch(std::vector<tensor_type>& v, int i) {
    auto& t = v[static_cast<std::size_t>(i)];
    if (t.count() != param(i).count() || t.shape() != param(i).shape()) t.reshape(param(i).shape());
    return t;
  }

  void build_nets() {
    NetState train = cfg_.train_state.value_or(NetState{});
    train.phase = Phase::train;
    if (cfg_.train_net_param) {
      log("Creating training net specified in train_net_param.");
      net_ = std::make_unique<net_type>(*cfg_.train_net_param, train, ctx_);
    } else if (!cfg_.train_net.empty()) {
      const auto p = cfg_.resolve(cfg_.train_net, "train_net");
      log("Creating training net from train_net file: ", p.string());
      net_ = std::make_unique<net_type>(read_prototxt(p), train, ctx_);
    } else if (cfg_.net_param) {
      log("Creating training net specified in net_param.");
      net_ = std::make_unique<net_type>(*cfg_.net_param, train, ctx_);
    } else if (!cfg_.net.empty()) {
      const auto p = cfg_.resolve(cfg_.net, "net");
      log("Creating training net from net file: ", p.string());
      generic_ = read_prototxt(p);
      net_ = std::make_unique<net_type>(*generic_, train, ctx_);
    } else {
      detail::raise(cfg_.source, ": no train net: give one of net, net_param, train_net, train_net_param");
    }
    if (cfg_.net_param) generic_ = *cfg_.net_param;
    // Caffe's order: test_net_param, then test_net files, then TEST instances of net/net_param.
    std::vector<Message> defs;
    for (const auto& m : cfg_.test_net_param) defs.push_back(m);
    for (const auto& f : cfg_.test_net) defs.push_back(read_prototxt(cfg_.resolve(f, "test_net")));
    while (generic_ && defs.size() < cfg_.test_iter.size()) defs.push_back(*generic_);
    for (std::size_t i = 0; i < defs.size(); ++i) {
      NetState st = cfg_.test_state.empty() ? NetState{} : cfg_.test_state[i];
      st.phase = Phase::test;
      log("Creating test net (#", i, ")");
      test_nets_.push_back(std::make_unique<net_type>(defs[i], st, ctx_));
      test_nets_.back()->share_trained_layers_with(*net_);
    }
  }

  net_type* net_by_key(std::string_view key) {
    if (key == "train") return net_.get();
    for (std::size_t i = 0; i < test_nets_.size(); ++i)
      if (key == detail::concat("test", i)) return test_nets_[i].get();
    return nullptr;
  }

  void save_state(const std::filesystem::path& file, const std::string& weights_name) {
    SolverState s;
    s.type = std::string(type());
    s.iter = static_cast<std::uint64_t>(iter_);
    s.lr_step = static_cast<std::uint32_t>(lr_step_);
    s.elapsed_seconds = elapsed();
    s.rng_state = ctx_->rng().state();
    s.smoothed_loss = static_cast<double>(smoothed_loss_);
    for (T l : losses_) s.losses.push_back(static_cast<double>(l));
    s.loss_pos = static_cast<std::uint32_t>(loss_pos_);
    s.weights_file = weights_name;
    auto collect = [&s](net_type& n, const std::string& key) {
      for (int i = 0; i < n.num_layers(); ++i)
        if (auto* r = dynamic_cast<ResumableLayer*>(&n.layer(i))) s.layer_states.push_back({key, n.layer(i).name(), r->save_state()});
    };
    collect(*net_, "train");
    for (std::size_t i = 0; i < test_nets_.size(); ++i) collect(*test_nets_[i], detail::concat("test", i));
    std::vector<std::pair<Shape, std::vector<T>>> hist;
    for (const auto& h : history_) hist.emplace_back(h.shape(), h.data_to_host());
    s.write(file, hist);
  }

  std::vector<std::vector<TestOutput<T>>> solve_impl(const std::filesystem::path* resume) {
    log("Solving ", net_->name());
    log("Learning Rate Policy: ", cfg_.lr_policy);
    if (resume) {
      log("Restoring previous solver status from ", resume->string());
      restore(*resume);
    }
    step(cfg_.max_iter - iter_);
    if (cfg_.snapshot_after_train && !cfg_.snapshot_prefix.empty() && (!cfg_.snapshot || iter_ % cfg_.snapshot != 0))
      snapshot();
    // Caffe's closing report: a forward-only pass for the loss, and the tests, when their
    // intervals divide max_iter.
    const bool display = cfg_.display && iter_ % cfg_.display == 0;
    if (display) {
      update_smoothed_loss(net_->forward());
      log("Iteration ", iter_, ", loss = ", smoothed_loss_);
    }
    std::vector<std::vector<TestOutput<T>>> tested;
    if (cfg_.test_interval && iter_ % cfg_.test_interval == 0) tested = test_all();
    if (display || !tested.empty()) write_metrics(iter_, display, learning_rate(), tested);
    log("Optimization Done.");
    return tested;
  }

  // The mean of the last average_loss losses, as Caffe's UpdateSmoothedLoss defines it. Caffe
  // keeps it as a running sum, which drifts: a loss of exactly 0 was shown as 4e-09 or -4e-08.
  // The window is summed afresh in double each time instead (average_loss is small). The window
  // persists across step() calls (and snapshots).
  void update_smoothed_loss(T loss) {
    const std::size_t n = static_cast<std::size_t>(cfg_.average_loss);
    if (losses_.size() < n) {
      losses_.push_back(loss);
    } else {
      losses_[loss_pos_] = loss;
      loss_pos_ = (loss_pos_ + 1) % n;
    }
    double sum = 0;
    for (T l : losses_) sum += static_cast<double>(l);
    smoothed_loss_ = static_cast<T>(sum / static_cast<double>(losses_.size()));
  }

  void log_train_outputs() {
    log("Iteration ", iter_, ", loss = ", smoothed_loss_);
    int k = 0;
    for (const auto& name : net_->output_blob_names()) {
      const auto v = net_->blob(name).data_to_host();
      const T w = output_loss_weight(*net_, name);
      for (T x : v) {
        std::ostringstream extra;
        if (w != T(0)) extra << " (* " << w << " = " << w * x << " loss)";
        log("    Train net output #", k++, ": ", name, " = ", x, extra.str());
      }
    }
  }

  // The loss weight the layer producing output blob `name` gives it (Caffe's blob_loss_weights).
  static T output_loss_weight(net_type& n, const std::string& name) {
    const tensor_type* b = &n.blob(name);
    T w = 0;
    for (int i = 0; i < n.num_layers(); ++i) {
      const auto& tops = n.top_vecs(i);
      for (std::size_t j = 0; j < tops.size(); ++j)
        if (tops[j] == b && n.layer(i).loss_weight(j) != T(0)) w = n.layer(i).loss_weight(j);
    }
    return w;
  }

  // ---- logging, progress and metrics ------------------------------------------------------------
  void write_line(const std::string& msg, const std::source_location& where) {
    if (progress_shown_) {
      *log_ << "\r\033[K";
      progress_shown_ = false;
    }
    if (opts_.glog_prefix) *log_ << glog_prefix(where);
    *log_ << msg << '\n';
    log_->flush();
  }

  static std::string glog_prefix(const std::source_location& where) {
    const auto now = std::chrono::system_clock::now();
    const std::time_t t = std::chrono::system_clock::to_time_t(now);
    std::tm tm{};
    localtime_r(&t, &tm);
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() % 1000000;
    std::string file = where.file_name();
    if (auto p = file.find_last_of('/'); p != std::string::npos) file.erase(0, p + 1);
    char buf[64];
    std::snprintf(buf, sizeof buf, "I%02d%02d %02d:%02d:%02d.%06ld %5d ", tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                  tm.tm_min, tm.tm_sec, static_cast<long>(us), static_cast<int>(::getpid()));
    return detail::concat(buf, file, ":", where.line(), "] ");
  }

  [[nodiscard]] bool progress_enabled() const {
    switch (opts_.progress) {
      case SolverOptions::Progress::on:
        return true;
      case SolverOptions::Progress::off:
        return false;
      case SolverOptions::Progress::automatic:
        break;
    }
    if (log_ == &std::cerr || log_ == &std::clog) return ::isatty(2) != 0;
    if (log_ == &std::cout) return ::isatty(1) != 0;
    return false;
  }

  static std::string format_duration(double s) {
    if (!(s >= 0) || s > 1e8) return "?";
    const long t = static_cast<long>(s + 0.5);
    char buf[32];
    if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
    else std::snprintf(buf, sizeof buf, "%lds", t);
    return buf;
  }

  // "\r[ 1200/10000] 12.0%  85.3 it/s  ETA 1m43s  loss 0.4213", at most ten times a second.
  void show_progress(int stop, bool last) {
    if (!progress_enabled()) return;
    const auto now = Clock::now();
    if (!last && now - last_progress_ < std::chrono::milliseconds(100)) return;
    last_progress_ = now;
    const double secs = std::chrono::duration<double>(now - step_start_time_).count();
    const double rate = secs > 0 ? (iter_ - step_start_iter_) / secs : 0;
    const int width = static_cast<int>(std::to_string(stop).size());
    char buf[160];
    std::snprintf(buf, sizeof buf, "\r[%*d/%d] %5.1f%%  %.1f it/s  ETA %s  loss %.4f\033[K", width, iter_, stop,
                  stop > 0 ? 100.0 * iter_ / stop : 100.0, rate,
                  format_duration(rate > 0 ? (stop - iter_) / rate : -1).c_str(), static_cast<double>(smoothed_loss_));
    *log_ << buf;
    log_->flush();
    progress_shown_ = true;
  }
  void clear_progress() {
    if (!progress_shown_) return;
    *log_ << "\r\033[K";
    log_->flush();
    progress_shown_ = false;
  }

  [[nodiscard]] double elapsed() const {
    return elapsed_base_ + std::chrono::duration<double>(Clock::now() - start_).count();
  }

  // One row per display or test iteration: iteration,seconds,loss,lr,<test outputs...>; empty
  // cells where that iteration had no display (loss) or no test. Test columns are named
  // test/<output> (test<k>/<output> with several test nets), apart from the train loss.
  void write_metrics(int iter, bool with_loss, double rate, const std::vector<std::vector<TestOutput<T>>>& tested) {
    if (metrics_path_.empty()) return;
    if (!metrics_) {
      namespace fs = std::filesystem;
      // A restored run continues its file; a fresh one starts it anew.
      const bool append = restored_ && fs::exists(metrics_path_) && fs::file_size(metrics_path_) > 0;
      metrics_ = std::make_unique<std::ofstream>(metrics_path_, append ? std::ios::app : std::ios::trunc);
      POSEIDON_CHECK(*metrics_, "cannot open the metrics file ", metrics_path_.string(), " for writing");
      for (int i = 0; i < num_test_nets(); ++i) {
        auto& tn = *test_nets_[static_cast<std::size_t>(i)];
        for (const auto& name : tn.output_blob_names()) {
          const std::size_t c = tn.blob(name).count();
          for (std::size_t e = 0; e < c; ++e) {
            std::string col = c > 1 ? detail::concat(name, "[", e, "]") : name;
            metric_columns_.push_back({i, col});
          }
        }
      }
      if (!append) {
        *metrics_ << "iteration,seconds,loss,lr";
        for (const auto& [k, c] : metric_columns_)
          *metrics_ << ',' << (num_test_nets() > 1 ? detail::concat("test", k, "/", c) : "test/" + c);
        *metrics_ << '\n';
      }
    }
    std::ostringstream row;
    row.precision(std::numeric_limits<T>::max_digits10);
    row << iter << ',';
    {
      std::ostringstream secs;
      secs.setf(std::ios::fixed);
      secs.precision(3);
      secs << elapsed();
      row << secs.str();
    }
    row << ',';
    if (with_loss) row << smoothed_loss_;
    row << ',' << static_cast<T>(rate);
    for (const auto& [k, c] : metric_columns_) {
      row << ',';
      if (static_cast<std::size_t>(k) >= tested.size()) continue;
      for (const auto& o : tested[static_cast<std::size_t>(k)])
        if (o.name == c) {
          row << o.value;
          break;
        }
    }
    *metrics_ << row.str() << '\n';
    metrics_->flush();
  }

  SolverConfig cfg_;
  SolverOptions opts_;
  LrPolicy lr_;
  std::ostream* log_ = nullptr;
  std::unique_ptr<net_type> net_;
  std::vector<std::unique_ptr<net_type>> test_nets_;
  std::optional<Message> generic_;
  std::vector<tensor_type> history_;
  std::vector<tensor_type> scratch_a_, scratch_b_;
  int iter_ = 0;
  int lr_step_ = 0;
  T smoothed_loss_ = 0;
  std::vector<T> losses_;
  std::size_t loss_pos_ = 0;
  bool restored_ = false;
  double elapsed_base_ = 0;
  Clock::time_point start_;
  Clock::time_point step_start_time_;
  Clock::time_point last_progress_;
  int step_start_iter_ = 0;
  bool progress_shown_ = false;
  std::filesystem::path metrics_path_;
  std::unique_ptr<std::ofstream> metrics_;
  std::vector<std::pair<int, std::string>> metric_columns_;  // (test net, output)
};

POSEIDON_NAMESPACE_END
