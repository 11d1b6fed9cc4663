// Net<CUDA> training end to end: Caffe's LeNet (examples/lenet) fed by MemoryData, trained on the
// CPU and on the GPU from the same seed; the loss curves agree, a CUDA snapshot resumes on the
// CPU, and the GPU's steady-state iterations make no cudaMalloc calls.
#include <doctest/doctest.h>
#include <poseidon/data/memory_data_layer.hpp>
#include <poseidon/layers/all.hpp>
#include <poseidon/net/prototxt.hpp>
#include <poseidon/net/snapshot.hpp>
#include <poseidon/solver/sgd.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <unistd.h>
#include <vector>

using namespace poseidon;
namespace fs = std::filesystem;

namespace cuda_lenet_test {

constexpr int batch = 32, samples = 8 * batch;

// Caffe's LeNet as the example ships it, with its two IdxData layers (Fashion-MNIST files, which
// a GPU runner may not have) replaced by one MemoryData layer of the same tops.
Message lenet() {
  // $POSEIDON_SOURCE_DIR wins over the build's source tree, for binaries run on another machine.
  const char* root = std::getenv("POSEIDON_SOURCE_DIR");
  const fs::path file = fs::path(root && *root ? root : POSEIDON_SOURCE_DIR) / "examples/lenet/lenet_train_test.prototxt";
  REQUIRE_MESSAGE(fs::exists(file), "cannot find ", file.string());
  const Message m = read_prototxt(file);
  Message net;
  net.set("name", std::string("LeNet"));
  net.add("layer", parse_prototxt(detail::concat(
                       R"(name: "data" type: "MemoryData" top: "data" top: "label"
                          memory_data_param { batch_size: )",
                       batch, " channels: 1 height: 28 width: 28 }")));
  int replaced = 0;
  for (const Message* l : m.children("layer")) {
    if (l->get<std::string>("type", "") == "IdxData") {
      ++replaced;
      continue;
    }
    net.add("layer", *l);
  }
  REQUIRE(replaced == 2);
  return net;
}

// Learnable synthetic digits: a bright bar whose row depends on the label, over weak texture.
template <class T>
void synthetic(std::vector<T>& data, std::vector<T>& labels) {
  data.assign(std::size_t(samples) * 28 * 28, T(0));
  labels.resize(samples);
  for (int k = 0; k < samples; ++k) {
    const int label = (k * 7 + 3) % 10;
    labels[std::size_t(k)] = static_cast<T>(label);
    for (int y = 0; y < 28; ++y)
      for (int x = 0; x < 28; ++x) {
        const double texture = 0.1 * std::sin(0.37 * (k + 1) + 0.71 * y + 0.13 * x);
        const double bar = (y >= 2 + 2 * label && y < 4 + 2 * label && x > 3 && x < 24) ? 0.8 : 0.0;
        data[(std::size_t(k) * 28 + std::size_t(y)) * 28 + std::size_t(x)] = static_cast<T>(texture + bar);
      }
  }
}

SolverConfig solver_config(const fs::path& prefix) {
  // Caffe's LeNet solver (examples/lenet/lenet_solver.prototxt) without tests and display.
  auto c = SolverConfig::from_text(detail::concat(
      "base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: \"inv\" gamma: 0.0001 power: 0.75 "
      "max_iter: 20 random_seed: 1701 snapshot_after_train: false snapshot_prefix: \"",
      prefix.string(), "\""));
  c.net_param = lenet();
  return c;
}

template <class D, class T>
std::unique_ptr<Solver<D, T>> make(const fs::path& prefix, std::ostream& log) {
  auto s = make_solver<D, T>(solver_config(prefix), SolverOptions().log_to(log).with_metrics_csv({}));
  auto* mem = dynamic_cast<MemoryDataLayer<D, T>*>(&s->net().layer_by_name("data"));
  REQUIRE(mem != nullptr);
  std::vector<T> data, labels;
  synthetic(data, labels);
  mem->reset(data, labels);
  return s;
}

template <class D, class T>
T loss_of(Solver<D, T>& s) {
  return s.net().blob("loss").data_to_host()[0];
}

template <class D, class T>
std::vector<std::vector<T>> params_of(Solver<D, T>& s) {
  std::vector<std::vector<T>> out;
  for (const auto& p : s.net().learnable_params()) out.push_back(p.tensor->data_to_host());
  return out;
}

// max |a - b| / max(1, |a|) over every parameter value.
template <class T>
double param_error(const std::vector<std::vector<T>>& a, const std::vector<std::vector<T>>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (std::size_t p = 0; p < a.size(); ++p) {
    REQUIRE(a[p].size() == b[p].size());
    for (std::size_t i = 0; i < a[p].size(); ++i)
      worst = std::max(worst, std::abs(double(a[p][i]) - double(b[p][i])) / std::max(1.0, std::abs(double(a[p][i]))));
  }
  return worst;
}

fs::path temp_dir() {
  const fs::path d = fs::temp_directory_path() / detail::concat("poseidon_cuda_lenet_", ::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace cuda_lenet_test

using namespace cuda_lenet_test;

// Tolerances. The GPU's convolutions and pooling are cuDNN's, its inner products cuBLAS's; the
// CPU's are im2col + OpenBLAS: the same sums in other orders (and cuDNN may use TF32 tensor cores
// for float). Measured on the CPU, this run barely amplifies such differences: float against
// double stays within 1e-7 of the loss over the 20 iterations, relative noise of 1e-7 on the
// initial weights (double) moves the loss by at most 1.2e-8, and of 1e-3 (float; TF32-sized)
// by at most 4.2e-4. The bounds are about ten times those: float 5e-3, double 1e-10 (rounding
// ~1e-16 leaves that room for FFT-like cuDNN algorithms), while the net learns the loss from
// 2.31 down to 0.09 (the test requires it to halve): the curves compared are curves of learning.
TEST_CASE_TEMPLATE("LeNet trains on CUDA as on the CPU; a CUDA snapshot resumes on the CPU", T, float, double) {
  REQUIRE_MESSAGE((LayerRegistry<CUDA, T>::has("Convolution")), "no CUDA Convolution layer is registered");
  REQUIRE_MESSAGE((LayerRegistry<CUDA, T>::has("Pooling")), "no CUDA Pooling layer is registered");
  constexpr bool is_float = std::is_same_v<T, float>;
  const double first_tol = is_float ? 1e-3 : 1e-12;  // iteration 0: one forward, no training yet
  const double curve_tol = is_float ? 5e-3 : 1e-10;
  const double param_tol = is_float ? 5e-3 : 1e-10;

  const fs::path dir = temp_dir();
  std::ostringstream log;
  auto cpu = make<CPU, T>(dir / "cpu", log);
  auto gpu = make<CUDA, T>(dir / "gpu", log);
  // The same seed draws the same initial weights (fillers draw on the host).
  REQUIRE(param_error(params_of(*cpu), params_of(*gpu)) == 0.0);

  std::vector<double> cpu_loss, gpu_loss;
  fs::path state;
  for (int it = 0; it < 20; ++it) {
    cpu->step(1);
    gpu->step(1);
    cpu_loss.push_back(double(loss_of(*cpu)));
    gpu_loss.push_back(double(loss_of(*gpu)));
    if (it == 9) state = gpu->snapshot();  // after 10 updates
  }
  for (std::size_t i = 0; i < cpu_loss.size(); ++i) {
    CAPTURE(i);
    CAPTURE(cpu_loss[i]);
    CAPTURE(gpu_loss[i]);
    const double tol = i == 0 ? first_tol : curve_tol;
    CHECK(std::abs(gpu_loss[i] - cpu_loss[i]) <= tol * std::max(1.0, std::abs(cpu_loss[i])));
  }
  // The comparison means something only if the net learned.
  CHECK(cpu_loss.back() < 0.5 * cpu_loss.front());
  CHECK(param_error(params_of(*cpu), params_of(*gpu)) <= param_tol);

  // The GPU's snapshot at iteration 10, restored on the CPU, continues like the CPU run.
  auto resumed = make<CPU, T>(dir / "resumed", log);
  auto reference = make<CUDA, T>(dir / "unused", log);
  resumed->restore(state);
  CHECK(resumed->iter() == 10);
  // The restored weights are the GPU's bits (read back through the weights file).
  (void)load_weights(reference->net(), fs::path(state).replace_extension(".poseidonmodel"));
  CHECK(param_error(params_of(*resumed), params_of(*reference)) == 0.0);
  for (int it = 10; it < 20; ++it) {
    resumed->step(1);
    CAPTURE(it);
    const double l = double(loss_of(*resumed));
    CHECK(std::abs(l - cpu_loss[std::size_t(it)]) <= curve_tol * std::max(1.0, std::abs(cpu_loss[std::size_t(it)])));
  }
  CHECK(param_error(params_of(*cpu), params_of(*resumed)) <= param_tol);
  fs::remove_all(dir);
}

TEST_CASE("steady-state training iterations on CUDA make no cudaMalloc calls") {
  REQUIRE_MESSAGE((LayerRegistry<CUDA, float>::has("Convolution")), "no CUDA Convolution layer is registered");
  if (!CudaCachingAllocator::instance().caching()) return;  // POSEIDON_CUDA_NO_CACHING set
  const fs::path dir = temp_dir();
  std::ostringstream log;
  auto gpu = make<CUDA, float>(dir / "gpu", log);
  gpu->step(3);  // warm-up: blobs, history, workspaces, scratch buffers are allocated
  const int device = gpu->context().device();
  const auto before = cuda_memory_stats(device);
  gpu->step(10);
  const auto after = cuda_memory_stats(device);
  CHECK(after.cuda_malloc_calls == before.cuda_malloc_calls);
  CHECK(after.cuda_free_calls == before.cuda_free_calls);
  CHECK(after.bytes_in_use == before.bytes_in_use);
  MESSAGE("LeNet on CUDA: ", after.bytes_in_use, " bytes in use, ", after.bytes_cached, " cached, ",
          after.cuda_malloc_calls, " cudaMalloc calls in all, ", after.allocations - before.allocations,
          " allocations in 10 steady iterations, all from the cache");
  fs::remove_all(dir);
}
