// Dropout on CUDA: the mask comes from a counter-based generator (SplitMix64 evaluated at each
// index) keyed by two draws of ctx.rng(), so a reseeded context reproduces the mask exactly.
#pragma once

#include <poseidon/core/rng.hpp>
#include <poseidon/layers/cuda/kernel_support.cuh>
#include <poseidon/layers/dropout.hpp>

#include <cstdint>

POSEIDON_NAMESPACE_BEGIN
namespace detail {
namespace gpu {
/// The i-th output of SplitMix64 seeded with key, computed without the i - 1 before it: each
/// thread draws its own units with no generator state in memory. The masks differ from the
/// CPU's (mt19937) draws, but have the same distribution.
__host__ __device__ inline std::uint64_t splitmix64_at(std::uint64_t key, std::uint64_t i) {
  std::uint64_t z = key + (i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

struct DropoutMaskOp {
  std::uint64_t key;
  std::uint64_t threshold;
  std::uint8_t* mask;
  // The high 32 bits, compared as the CPU compares one 32-bit draw: P(kept) = 1 - threshold / 2^32.
  __device__ void operator()(std::size_t i) const {
    mask[i] = static_cast<std::uint8_t>((splitmix64_at(key, i) >> 32) >= threshold);
  }
};

template <class T>
struct DropoutApplyOp {
  const T* x;
  const std::uint8_t* mask;
  T scale;
  T* y;
  __device__ void operator()(std::size_t i) const { y[i] = mask[i] ? x[i] * scale : T(0); }
};
}  // namespace gpu

template <class T>
struct DropoutKernel<CUDA, T> {
  static void draw_mask(Rng& rng, std::size_t n, std::uint64_t threshold, std::uint8_t* mask) {
    const std::uint64_t hi = rng.next_u32();
    const std::uint64_t key = (hi << 32) | rng.next_u32();
    gpu::for_each_index(n, gpu::DropoutMaskOp{key, threshold, mask});
  }
  /// y = x * mask * scale; x and y may alias (in-place forward and backward).
  static void apply(std::size_t n, const T* x, const std::uint8_t* mask, T scale, T* y) {
    gpu::for_each_index(n, gpu::DropoutApplyOp<T>{x, mask, scale, y});
  }
};
}  // namespace detail

POSEIDON_REGISTER_LAYER_CUDA("Dropout", DropoutLayer)

POSEIDON_NAMESPACE_END
