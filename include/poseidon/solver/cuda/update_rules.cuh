// The fused parameter update on CUDA: one grid-stride kernel per parameter on the context's stream.
// Included from update_rules.hpp only under nvcc with POSEIDON_WITH_CUDA.
#pragma once

#include <poseidon/math/cuda/blas.cuh>
#include <poseidon/solver/update_rules.hpp>

POSEIDON_NAMESPACE_BEGIN
namespace detail {

template <>
struct FusedUpdate<CUDA> {
  template <class Op>
  static void run(DeviceContext<CUDA>& ctx, std::size_t n, const Op& op) {
    math::detail::for_each_index(ctx, n, op);
  }
};

}  // namespace detail
POSEIDON_NAMESPACE_END
