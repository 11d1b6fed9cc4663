// Split on CUDA: the layer is device-generic (it shares the bottom's data and sums the top
// diffs with math::add/axpy), so the CUDA side needs only its registration.
#pragma once

#include <poseidon/layers/split.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/math/blas.hpp>

POSEIDON_NAMESPACE_BEGIN

POSEIDON_REGISTER_LAYER_CUDA("Split", SplitLayer)

POSEIDON_NAMESPACE_END
