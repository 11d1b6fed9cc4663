// DeviceContext<CUDA>::kernel_scope: a layer pass launches its own kernels on the context's stream,
// never on the legacy default stream (which would serialise it against every other stream).
#include <doctest/doctest.h>
#include <poseidon/core/context.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/cuda/kernel_support.cuh>
#include <poseidon/layers/pooling.hpp>

#include "support/layer_params.hpp"

#include <cuda_runtime.h>

#include <vector>

using namespace poseidon;
using namespace poseidon::testing;

TEST_CASE("kernel_scope binds the context's stream for this thread and restores the previous one") {
  DeviceContext<CUDA> a, b;
  REQUIRE(a.stream() != b.stream());
  CHECK(detail::gpu::layer_stream() == cudaStreamLegacy);
  {
    const auto outer = a.kernel_scope();
    CHECK(detail::gpu::layer_stream() == a.stream());
    {
      const auto inner = b.kernel_scope();
      CHECK(detail::gpu::layer_stream() == b.stream());
    }
    CHECK(detail::gpu::layer_stream() == a.stream());
  }
  CHECK(detail::gpu::layer_stream() == cudaStreamLegacy);
}

TEST_CASE("a layer's forward and backward kernels are captured from the context's stream") {
  // While ctx.stream() (a blocking stream) is being captured into a graph, any launch on the
  // legacy default stream fails with cudaErrorStreamCaptureImplicit; so a pass that captures
  // cleanly, and leaves kernel nodes in the graph, ran its kernels on ctx.stream().
  DeviceContext<CUDA> ctx;
  Tensor<CUDA, float> x({2, 3, 8, 8}), y;
  std::vector<float> v(x.count());
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((i * 37) % 101) - 50.0f;
  x.copy_data_from_host(v);
  PoolingLayer<CUDA, float> pool(pool_param(pool_msg("MAX", 3, 2)));
  pool.setup(ctx, {&x}, {&y});
  pool.forward(ctx, {&x}, {&y});  // allocates everything the pass needs outside the capture
  y.copy_diff_from_host(std::vector<float>(y.count(), 1.0f));
  pool.backward(ctx, {&y}, {true}, {&x});
  ctx.synchronize();

  for (const bool backward : {false, true}) {
    CAPTURE(backward);
    REQUIRE(cudaStreamBeginCapture(ctx.stream(), cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    bool threw = false;
    try {
      if (backward)
        pool.backward(ctx, {&y}, {true}, {&x});
      else
        pool.forward(ctx, {&x}, {&y});
    } catch (const std::exception& e) {
      threw = true;
      MESSAGE(e.what());
    }
    cudaGraph_t graph = nullptr;
    const cudaError_t end = cudaStreamEndCapture(ctx.stream(), &graph);
    CHECK_FALSE(threw);
    REQUIRE(end == cudaSuccess);
    std::size_t nodes = 0;
    REQUIRE(cudaGraphGetNodes(graph, nullptr, &nodes) == cudaSuccess);
    CHECK(nodes > 0);
    cudaGraphDestroy(graph);
    (void)cudaGetLastError();
  }
}
