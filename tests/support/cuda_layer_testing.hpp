// Helpers for CUDA layer tests (tests/<dir>/cuda_test_*.cu, nvcc only): run one layer on both
// devices over the same inputs and parameters and compare every output, and the gradient check on the GPU.
#pragma once

#include <doctest/doctest.h>
#include <poseidon/core/context.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/rng.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/gradient_checker.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "support/layer_testing.hpp"

namespace poseidon::testing {

using GpuCtx = DeviceContext<CUDA>;

template <class T>
Tensor<CUDA, T> to_gpu(const Tensor<CPU, T>& t) {
  Tensor<CUDA, T> g(t.shape());
  g.copy_from(t, true);
  return g;
}

/// One assertion per comparison, naming the first mismatch and the count: |gpu - cpu| <=
/// eps * max(1, |gpu|, |cpu|); eps 0 asks for bit-identical values.
template <class T>
void expect_close(const std::string& what, const std::vector<T>& gpu, const std::vector<T>& cpu, double eps) {
  REQUIRE(gpu.size() == cpu.size());
  std::size_t bad = 0, first = 0;
  double worst = 0;
  for (std::size_t i = 0; i < gpu.size(); ++i) {
    const double a = static_cast<double>(gpu[i]), b = static_cast<double>(cpu[i]);
    const double err = std::abs(a - b) / std::max({1.0, std::abs(a), std::abs(b)});
    const bool ok = eps == 0 ? a == b : err <= eps;  // NaN fails both
    worst = std::max(worst, err);
    if (!ok && bad++ == 0) first = i;
  }
  INFO(what, ": ", bad, " of ", gpu.size(), " values differ beyond ", eps, " (worst relative error ", worst,
       "); first at ", first, ": GPU ", gpu.empty() ? 0.0 : double(gpu[first]), " vs CPU ",
       cpu.empty() ? 0.0 : double(cpu[first]));
  CHECK(bad == 0);
  // POSEIDON_CUDA_TEST_REPORT=1 prints every comparison's worst error (how docs/cuda.md's margins were read).
  if (std::getenv("POSEIDON_CUDA_TEST_REPORT"))
    MESSAGE(what, " (", std::string(sizeof(T) == 4 ? "float" : "double"), ", ", gpu.size(),
            " values): worst relative error ", worst, ", allowed ", eps);
}

struct CompareOptions {
  bool in_place = false;    // top[0] is bottom[0]
  int passes = 2;           // forward + backward rounds (state such as running averages carries over)
  std::uint64_t seed = 11;  // of both contexts (fillers) and of the top diffs
};

/// Runs the layer of p on the CPU and on the GPU over the same bottoms, with the CPU's parameters
/// copied to the GPU after setup (prepare, when given, first edits the CPU layer's blobs), and
/// compares the tops, the returned loss, the blobs, the bottom diffs and the parameter diffs.
template <class T>
void compare_with_cpu(const LayerParameter& p, const std::vector<Tensor<CPU, T>>& inputs, double eps,
                      CompareOptions o = {}, const std::function<void(Layer<CPU, T>&)>& prepare = {}) {
  REQUIRE(LayerRegistry<CUDA, T>::has(p.type));
  auto cpu = make_layer<CPU, T>(p);
  auto gpu = make_layer<CUDA, T>(p);
  Ctx cctx(0, o.seed);
  GpuCtx gctx(0, o.seed);

  std::vector<Tensor<CPU, T>> cb;
  std::vector<Tensor<CUDA, T>> gb;
  for (const auto& t : inputs) {
    cb.push_back(t.clone());
    gb.push_back(to_gpu(t));
  }
  const std::size_t ntop = std::max<std::size_t>(p.top.size(), 1);
  std::vector<Tensor<CPU, T>> ct(ntop);
  std::vector<Tensor<CUDA, T>> gt(ntop);
  std::vector<Tensor<CPU, T>*> cbv, ctv;
  std::vector<Tensor<CUDA, T>*> gbv, gtv;
  for (std::size_t i = 0; i < cb.size(); ++i) {
    cbv.push_back(&cb[i]);
    gbv.push_back(&gb[i]);
  }
  for (std::size_t i = 0; i < ntop; ++i) {
    ctv.push_back(o.in_place && i == 0 ? &cb[0] : &ct[i]);
    gtv.push_back(o.in_place && i == 0 ? &gb[0] : &gt[i]);
  }

  cpu->setup(cctx, cbv, ctv);
  gpu->setup(gctx, gbv, gtv);
  if (prepare) prepare(*cpu);
  REQUIRE(cpu->blobs().size() == gpu->blobs().size());
  for (std::size_t i = 0; i < cpu->blobs().size(); ++i) gpu->blobs()[i]->copy_from(*cpu->blobs()[i], true);

  std::vector<bool> propagate(cb.size());
  for (std::size_t i = 0; i < cb.size(); ++i) propagate[i] = cpu->allow_backward_to(static_cast<int>(i));

  Rng diffs(o.seed + 1);
  for (int pass = 0; pass < o.passes; ++pass) {
    CAPTURE(pass);
    const T closs = cpu->forward(cctx, cbv, ctv);
    const T gloss = gpu->forward(gctx, gbv, gtv);
    expect_close("loss", std::vector<T>{gloss}, std::vector<T>{closs}, eps);
    for (std::size_t i = 0; i < ntop; ++i) {
      REQUIRE(gtv[i]->shape() == ctv[i]->shape());
      expect_close(detail::concat("top ", i, " data"), gtv[i]->data_to_host(), ctv[i]->data_to_host(), eps);
    }
    for (std::size_t i = 0; i < cpu->blobs().size(); ++i)
      expect_close(detail::concat("blob ", i, " data"), gpu->blobs()[i]->data_to_host(),
                   cpu->blobs()[i]->data_to_host(), eps);

    for (std::size_t i = 0; i < ntop; ++i) {
      std::vector<T> dy(ctv[i]->count());
      for (auto& v : dy) v = static_cast<T>(diffs.uniform<double>(-1, 1));
      ctv[i]->copy_diff_from_host(dy);
      gtv[i]->copy_diff_from_host(dy);
    }
    cpu->backward(cctx, ctv, propagate, cbv);
    gpu->backward(gctx, gtv, propagate, gbv);
    for (std::size_t i = 0; i < cb.size(); ++i)
      if (propagate[i])
        expect_close(detail::concat("bottom ", i, " diff"), gbv[i]->diff_to_host(), cbv[i]->diff_to_host(), eps);
    for (std::size_t i = 0; i < cpu->blobs().size(); ++i)
      if (cpu->param_propagate_down(i))
        expect_close(detail::concat("blob ", i, " diff"), gpu->blobs()[i]->diff_to_host(),
                     cpu->blobs()[i]->diff_to_host(), eps);
  }
}

/// The message of the Error that setting up p's layer on device D over one bottom of shape `in`
/// throws, or "" when setup succeeds. Building the layer must succeed: parse errors are not setup's.
template <class D>
std::string setup_error(const LayerParameter& p, const Shape& in) {
  auto layer = make_layer<D, float>(p);
  DeviceContext<D> ctx;
  Tensor<D, float> x(in), y;
  try {
    layer->setup(ctx, {&x}, {&y});
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

/// p's layer refuses a bottom of shape `in` at setup, and the GPU's refusal reads as the CPU's.
inline void expect_same_setup_error(const LayerParameter& p, const Shape& in) {
  const std::string cpu = setup_error<CPU>(p, in), gpu = setup_error<CUDA>(p, in);
  INFO("CPU: '", cpu, "', GPU: '", gpu, "'");
  CHECK(!cpu.empty());
  CHECK(gpu == cpu);
}

/// The shared numeric gradient checker on the GPU (it reads and writes through host copies).
template <class T>
void expect_gpu_gradients(const LayerParameter& p, const std::vector<Tensor<CPU, T>>& inputs,
                          const std::function<void(GradientCheckOptions&)>& adjust = {}) {
  auto layer = make_layer<CUDA, T>(p);
  std::vector<Tensor<CUDA, T>> gb;
  for (const auto& t : inputs) gb.push_back(to_gpu(t));
  std::vector<Tensor<CUDA, T>> gt(std::max<std::size_t>(p.top.size(), 1));
  std::vector<Tensor<CUDA, T>*> bv, tv;
  for (auto& t : gb) bv.push_back(&t);
  for (auto& t : gt) tv.push_back(&t);
  GradientCheckOptions o = default_check_options<T>();
  if (adjust) adjust(o);
  GpuCtx ctx(0, 7);
  const GradientCheckReport r = check_gradients(*layer, ctx, bv, tv, o);
  // Built first: nvcc warns about nodiscard calls made inside doctest's lazy INFO capture.
  const std::string report = detail::concat(layer->describe(), " on CUDA: ", r.str());
  INFO(report);
  CHECK(r.ok());
}

}  // namespace poseidon::testing
