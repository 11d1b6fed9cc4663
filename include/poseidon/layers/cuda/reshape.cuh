// Reshape on CUDA: the layer is device-generic (it shares the bottom's memory and moves no data),
// so the CUDA side needs only its registration.
#pragma once

#include <poseidon/layers/reshape.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/math/blas.hpp>

POSEIDON_NAMESPACE_BEGIN

POSEIDON_REGISTER_LAYER_CUDA("Reshape", ReshapeLayer)

POSEIDON_NAMESPACE_END
