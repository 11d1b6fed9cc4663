// Flatten on CUDA: the layer is device-generic (it shares the bottom's memory and moves no data),
// so the CUDA side needs only its registration.
#pragma once

#include <poseidon/layers/flatten.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/math/blas.hpp>

POSEIDON_NAMESPACE_BEGIN

POSEIDON_REGISTER_LAYER_CUDA("Flatten", FlattenLayer)

POSEIDON_NAMESPACE_END
