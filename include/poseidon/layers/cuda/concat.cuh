// Concat on CUDA: the layer is device-generic (it copies rows with math::copy, cudaMemcpyAsync on
// ctx.stream()), so the CUDA side needs only its registration.
#pragma once

#include <poseidon/layers/concat.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/math/blas.hpp>

POSEIDON_NAMESPACE_BEGIN

POSEIDON_REGISTER_LAYER_CUDA("Concat", ConcatLayer)

POSEIDON_NAMESPACE_END
