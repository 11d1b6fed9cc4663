// Solvers on CUDA: every update rule matches the CPU, snapshots move between devices, and a
// restored CUDA solver continues bit-identically.
#include <doctest/doctest.h>
#include <poseidon/layers/inner_product.hpp>
#include <poseidon/layers/relu.hpp>
#include <poseidon/net/snapshot.hpp>
#include <poseidon/solver/sgd.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

using namespace poseidon;
namespace fs = std::filesystem;

namespace cuda_solver_test {

// Deterministic batches from a cursor (resumable), on any device through host copies.
template <class D, class T>
class DevSeqLayer final : public Layer<D, T>, public ResumableLayer {
 public:
  using typename Layer<D, T>::Context;
  using typename Layer<D, T>::Vec;
  explicit DevSeqLayer(const LayerParameter& p) : Layer<D, T>(p) {}
  [[nodiscard]] std::string_view type() const override { return "DevSeq"; }
  [[nodiscard]] int exact_num_bottom() const override { return 0; }
  [[nodiscard]] int exact_num_top() const override { return 2; }
  [[nodiscard]] bool allow_backward_to(int) const override { return false; }
  void reshape(const Vec&, const Vec& t) override {
    t[0]->reshape({8, 5});
    t[1]->reshape({8, 3});
  }
  [[nodiscard]] std::string save_state() const override { return std::to_string(cursor_); }
  void load_state(std::string_view b) override { cursor_ = std::stoul(std::string(b)); }

 protected:
  void forward_impl(Context&, const Vec&, const Vec& t) override {
    std::vector<T> x(40), y(24);
    for (std::size_t k = 0; k < 8; ++k, cursor_ = (cursor_ + 1) % 61) {
      for (std::size_t j = 0; j < 5; ++j) x[k * 5 + j] = static_cast<T>(std::sin(0.37 * double(cursor_) + double(j)));
      for (std::size_t j = 0; j < 3; ++j) y[k * 3 + j] = static_cast<T>(std::cos(0.21 * double(cursor_) * double(j + 1)));
    }
    t[0]->copy_data_from_host(x);
    t[1]->copy_data_from_host(y);
  }
  void backward_impl(Context&, const Vec&, const std::vector<bool>&, const Vec&) override {}

 private:
  std::size_t cursor_ = 0;
};

// Caffe's EuclideanLoss through math:: only (no host access to device memory).
template <class D, class T>
class DevEuclideanLayer final : public Layer<D, T> {
 public:
  using typename Layer<D, T>::Context;
  using typename Layer<D, T>::Vec;
  explicit DevEuclideanLayer(const LayerParameter& p) : Layer<D, T>(p) {}
  [[nodiscard]] std::string_view type() const override { return "DevEuclidean"; }
  [[nodiscard]] int exact_num_bottom() const override { return 2; }
  [[nodiscard]] int exact_num_top() const override { return 1; }
  [[nodiscard]] bool is_loss() const override { return true; }
  void reshape(const Vec& b, const Vec& t) override {
    t[0]->reshape(Shape{});
    diff_.reshape(b[0]->shape());
  }

 protected:
  void forward_impl(Context& ctx, const Vec& b, const Vec& t) override {
    const std::size_t n = b[0]->count();
    math::sub(ctx, n, b[0]->data(), b[1]->data(), diff_.data());
    const T loss = math::dot(ctx, n, diff_.data(), diff_.data()) / static_cast<T>(b[0]->shape(0)) / T(2);
    const std::vector<T> v{loss};
    t[0]->copy_data_from_host(v);
  }
  void backward_impl(Context& ctx, const Vec& t, const std::vector<bool>& pd, const Vec& b) override {
    const T w = t[0]->diff_to_host()[0];
    for (std::size_t i = 0; i < 2; ++i)
      if (pd[i])
        math::scale(ctx, b[i]->count(), (i == 0 ? w : -w) / static_cast<T>(b[i]->shape(0)), diff_.data(), b[i]->diff());
  }

 private:
  Tensor<D, T> diff_;
};

const char* kNet = R"(
  name: "dev_mlp"
  layer { name: "seq" type: "DevSeq" top: "x" top: "t" }
  layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
          inner_product_param { num_output: 7 weight_filler { type: "gaussian" std: 0.4 } bias_filler { type: "constant" value: 0.05 } } }
  layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
  layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "y"
          param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
          inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.4 } } }
  layer { name: "loss" type: "DevEuclidean" bottom: "y" bottom: "t" top: "loss" })";

SolverConfig config(std::string_view type, std::string_view extra = "") {
  return SolverConfig::from_text(detail::concat(
      "type: \"", type, "\" base_lr: 0.05 momentum: ", (type == "AdaGrad" || type == "RMSProp") ? "0" : "0.9",
      " weight_decay: 0.01 lr_policy: \"step\" gamma: 0.5 stepsize: 3 iter_size: 2 clip_gradients: 2 ", extra,
      "\nnet_param {", kNet, "}"));
}

template <class D, class T>
std::vector<std::vector<T>> params_of(Solver<D, T>& s) {
  std::vector<std::vector<T>> out;
  for (const auto& p : s.net().learnable_params()) out.push_back(p.tensor->data_to_host());
  return out;
}

fs::path temp_dir(std::string_view name) {
  const fs::path d = fs::temp_directory_path() / detail::concat("poseidon_cuda_solver_", name, "_", ::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace cuda_solver_test

namespace poseidon {
inline const bool cuda_solver_test_reg[] = {
    detail::register_layer<cuda_solver_test::DevSeqLayer, CPU>("DevSeq"),
    detail::register_layer<cuda_solver_test::DevSeqLayer, CUDA>("DevSeq"),
    detail::register_layer<cuda_solver_test::DevEuclideanLayer, CPU>("DevEuclidean"),
    detail::register_layer<cuda_solver_test::DevEuclideanLayer, CUDA>("DevEuclidean"),
};
}

using namespace cuda_solver_test;

TEST_CASE_TEMPLATE("Every update rule on CUDA matches the CPU", T, float, double) {
  const auto dir = temp_dir("rules");
  for (const char* type : {"SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"}) {
    CAPTURE(type);
    std::ostringstream log;
    auto cpu = make_solver<CPU, T>(config(type), SolverOptions().log_to(log));
    auto gpu = make_solver<CUDA, T>(config(type), SolverOptions().log_to(log));
    // Same starting weights: through a snapshot file (also checks CPU -> CUDA loading).
    save_weights(cpu->net(), dir / "init.poseidonmodel");
    (void)load_weights(gpu->net(), dir / "init.poseidonmodel");
    cpu->step(7);
    gpu->step(7);
    const auto a = params_of(*cpu);
    const auto b = params_of(*gpu);
    const double eps = std::is_same_v<T, float> ? 2e-4 : 1e-10;
    for (std::size_t p = 0; p < a.size(); ++p)
      for (std::size_t i = 0; i < a[p].size(); ++i) CHECK(double(b[p][i]) == doctest::Approx(double(a[p][i])).epsilon(eps).scale(1.0));
  }
  fs::remove_all(dir);
}

TEST_CASE("A restored CUDA solver continues bit-identically; its snapshot loads on the CPU") {
  const auto dir = temp_dir("resume");
  for (const char* type : {"SGD", "Adam"}) {
    CAPTURE(type);
    std::ostringstream log;
    auto a = make_solver<CUDA, float>(config(type, "max_iter: 10 random_seed: 3"), SolverOptions().log_to(log));
    a->solve();
    auto b = make_solver<CUDA, float>(
        config(type, detail::concat("max_iter: 5 random_seed: 3 snapshot_prefix: \"", (dir / "b").string(), "\"")),
        SolverOptions().log_to(log));
    b->solve();
    auto c = make_solver<CUDA, float>(config(type, "max_iter: 10 random_seed: 77"), SolverOptions().log_to(log));
    c->solve(dir / "b_iter_5.solverstate");
    const auto pa = params_of(*a);
    const auto pc = params_of(*c);
    REQUIRE(pa.size() == pc.size());
    for (std::size_t i = 0; i < pa.size(); ++i)
      CHECK(std::memcmp(pa[i].data(), pc[i].data(), pa[i].size() * sizeof(float)) == 0);
    for (std::size_t i = 0; i < a->history().size(); ++i)
      CHECK(a->history()[i].data_to_host() == c->history()[i].data_to_host());

    // The CUDA solver's state restores into a CPU solver too.
    auto cpu = make_solver<CPU, float>(config(type, "max_iter: 10"), SolverOptions().log_to(log));
    cpu->restore(dir / "b_iter_5.solverstate");
    CHECK(cpu->iter() == 5);
    CHECK(params_of(*cpu) == params_of(*b));
  }
  fs::remove_all(dir);
}
