// Pooling on CUDA: hand-written kernels with Caffe's (and the CPU layer's) exact semantics, MAX with
// its argmax and tie rule, AVE with Caffe's divisor; included from pooling.hpp only under nvcc.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/context.hpp>
#include <poseidon/core/cuda/check.cuh>
#include <poseidon/core/device.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/cuda/kernel_support.cuh>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/pooling.hpp>
#include <poseidon/layers/registry.hpp>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <string_view>
#include <vector>

POSEIDON_NAMESPACE_BEGIN
namespace detail::gpu {

// Why not cuDNN: its output size is floor((in + 2 pad - kernel) / stride) + 1, so Caffe's default
// CEIL rounding (an extra, clipped window) has no cuDNN equivalent; its average counts either all
// padding or none, where Caffe counts padding only up to the padded extent (a window hanging past
// it is cut there); and its MAX backward recomputes the winner from x and y, where Caffe keeps an
// argmax (ties to the first in row-major order, also the mask top). These kernels follow the CPU
// layer operation for operation: the same comparisons, and sums in the same order, so they give its
// bits wherever the CPU's own order is unchanged.

using PoolGeom = PoolGeometry;  // the CPU layer's geometry, also usable in kernels

// The outputs [lo, hi) along one axis whose window holds input position i: a window o covers
// [o*stride - pad, o*stride - pad + kernel) (MAX clips it to the image, AVE to the padded extent
// and then to the image: either way it holds i exactly when the unclipped window does).
__device__ inline void covering(int i, int pad, int kernel, int stride, int out, int& lo, int& hi) {
  const int p = i + pad;
  lo = p < kernel ? 0 : (p - kernel) / stride + 1;
  hi = min(p / stride + 1, out);
}

// The CPU's AVE window: the divisor counts the window clipped to the padded image, the sum runs
// over the window clipped to the image; an empty window averages nothing (0).
__device__ inline int ave_window(const PoolGeom& g, int ph, int pw, int& hs, int& he, int& ws, int& we) {
  hs = ph * g.stride_h - g.pad_h;
  ws = pw * g.stride_w - g.pad_w;
  he = min(hs + g.kernel_h, g.height + g.pad_h);
  we = min(ws + g.kernel_w, g.width + g.pad_w);
  const int size = (he - hs) * (we - ws);
  hs = max(hs, 0);
  ws = max(ws, 0);
  he = min(he, g.height);
  we = min(we, g.width);
  return (he > hs && we > ws) ? size : 0;
}

// One thread per output. The window's first element starts the scan and only a strictly larger
// value replaces it: the first maximum in row-major order wins, as on the CPU (NaN included).
template <class T>
__global__ void max_pool_forward_kernel(std::size_t n, PoolGeom g, const T* x, T* y, int* argmax, T* mask) {
  const std::size_t out_plane = g.out_plane();
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(blockDim.x) * gridDim.x) {
    const std::size_t pl = i / out_plane;
    const int o = static_cast<int>(i % out_plane);
    const int ph = o / g.out_w, pw = o % g.out_w;
    const int hs = max(ph * g.stride_h - g.pad_h, 0);
    const int he = min(ph * g.stride_h - g.pad_h + g.kernel_h, g.height);
    const int ws = max(pw * g.stride_w - g.pad_w, 0);
    const int we = min(pw * g.stride_w - g.pad_w + g.kernel_w, g.width);
    const T* xp = x + pl * g.in_plane();
    int best = -1;
    T v = T(0);
    if (hs < he && ws < we) {
      best = hs * g.width + ws;
      v = xp[best];
      for (int h = hs; h < he; ++h)
        for (int w = ws; w < we; ++w)
          if (xp[h * g.width + w] > v) {
            v = xp[h * g.width + w];
            best = h * g.width + w;
          }
    }
    y[i] = v;
    argmax[i] = best;
    if (mask) mask[i] = static_cast<T>(best);
  }
}

// One thread per input: the gradients of the outputs whose argmax it is, added in increasing
// output order from 0, the CPU's scatter order; no atomics, so every run gives the same bits.
template <class T>
__global__ void max_pool_backward_kernel(std::size_t n, PoolGeom g, const T* dy, const int* argmax, T* dx) {
  const std::size_t in_plane = g.in_plane(), out_plane = g.out_plane();
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(blockDim.x) * gridDim.x) {
    const std::size_t pl = i / in_plane;
    const int j = static_cast<int>(i % in_plane);
    const int h = j / g.width, w = j % g.width;
    int ph0, ph1, pw0, pw1;
    covering(h, g.pad_h, g.kernel_h, g.stride_h, g.out_h, ph0, ph1);
    covering(w, g.pad_w, g.kernel_w, g.stride_w, g.out_w, pw0, pw1);
    const T* dyp = dy + pl * out_plane;
    const int* ap = argmax + pl * out_plane;
    T grad = T(0);
    for (int ph = ph0; ph < ph1; ++ph)
      for (int pw = pw0; pw < pw1; ++pw) {
        const int o = ph * g.out_w + pw;
        if (ap[o] == j) grad += dyp[o];
      }
    dx[i] = grad;
  }
}

template <class T>
__global__ void ave_pool_forward_kernel(std::size_t n, PoolGeom g, const T* x, T* y) {
  const std::size_t out_plane = g.out_plane();
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(blockDim.x) * gridDim.x) {
    const std::size_t pl = i / out_plane;
    const int o = static_cast<int>(i % out_plane);
    int hs, he, ws, we;
    const int size = ave_window(g, o / g.out_w, o % g.out_w, hs, he, ws, we);
    const T* xp = x + pl * g.in_plane();
    T sum = T(0);
    for (int h = hs; h < he; ++h)
      for (int w = ws; w < we; ++w) sum += xp[h * g.width + w];
    y[i] = size > 0 ? sum / static_cast<T>(size) : T(0);
  }
}

// One thread per input: dy / divisor of every window holding it, in increasing output order.
template <class T>
__global__ void ave_pool_backward_kernel(std::size_t n, PoolGeom g, const T* dy, T* dx) {
  const std::size_t in_plane = g.in_plane(), out_plane = g.out_plane();
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(blockDim.x) * gridDim.x) {
    const std::size_t pl = i / in_plane;
    const int j = static_cast<int>(i % in_plane);
    const int h = j / g.width, w = j % g.width;
    int ph0, ph1, pw0, pw1;
    covering(h, g.pad_h, g.kernel_h, g.stride_h, g.out_h, ph0, ph1);
    covering(w, g.pad_w, g.kernel_w, g.stride_w, g.out_w, pw0, pw1);
    const T* dyp = dy + pl * out_plane;
    T grad = T(0);
    for (int ph = ph0; ph < ph1; ++ph)
      for (int pw = pw0; pw < pw1; ++pw) {
        int hs, he, ws, we;
        const int size = ave_window(g, ph, pw, hs, he, ws, we);
        if (size > 0) grad += dyp[ph * g.out_w + pw] / static_cast<T>(size);
      }
    dx[i] = grad;
  }
}

template <class K, class... Args>
void launch_pool(K kernel, cudaStream_t stream, std::size_t n, Args... args) {
  if (n == 0) return;
  kernel<<<grid_for(n), block_threads, 0, stream>>>(n, args...);
  POSEIDON_CUDA_CHECK(cudaGetLastError());
}

}  // namespace detail::gpu

/// The CUDA pooling layer: parameters, checks, output shapes (CEIL/FLOOR rounding, the dropped last
/// window) and argmax are PoolingLayerBase's, shared with the CPU; the kernels above run on the
/// context's stream.
template <class T>
class PoolingLayer<CUDA, T> final : public detail::PoolingLayerBase<CUDA, T> {
  using Base = detail::PoolingLayerBase<CUDA, T>;
  using typename Base::Method;

 public:
  using typename Base::Context;
  using typename Base::Vec;
  using Base::Base;

 protected:
  void forward_impl(Context& ctx, const Vec& bottom, const Vec& top) override {
    namespace gpu = detail::gpu;
    const std::size_t n = top[0]->count();
    if (this->pp_.pool == Method::max)
      gpu::launch_pool(gpu::max_pool_forward_kernel<T>, ctx.stream(), n, this->g_, bottom[0]->data(), top[0]->data(),
                       this->argmax_.data(), top.size() > 1 ? top[1]->data() : static_cast<T*>(nullptr));
    else
      gpu::launch_pool(gpu::ave_pool_forward_kernel<T>, ctx.stream(), n, this->g_, bottom[0]->data(), top[0]->data());
  }

  void backward_impl(Context& ctx, const Vec& top, const std::vector<bool>& propagate_down,
                     const Vec& bottom) override {
    namespace gpu = detail::gpu;
    if (!propagate_down[0]) return;
    const std::size_t n = bottom[0]->count();
    if (this->pp_.pool == Method::max)
      gpu::launch_pool(gpu::max_pool_backward_kernel<T>, ctx.stream(), n, this->g_, top[0]->diff(),
                       static_cast<const int*>(this->argmax_.data()), bottom[0]->diff());
    else
      gpu::launch_pool(gpu::ave_pool_backward_kernel<T>, ctx.stream(), n, this->g_, top[0]->diff(), bottom[0]->diff());
  }
};

POSEIDON_REGISTER_LAYER_CUDA("Pooling", PoolingLayer)

POSEIDON_NAMESPACE_END
