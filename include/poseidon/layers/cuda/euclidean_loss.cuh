// EuclideanLoss on CUDA: the layer is device-generic (math::sub, dot and scale: cuBLAS and
// grid-stride kernels on ctx.stream()), so the CUDA side needs only its registration.
#pragma once

#include <poseidon/layers/euclidean_loss.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/math/blas.hpp>

POSEIDON_NAMESPACE_BEGIN

POSEIDON_REGISTER_LAYER_CUDA("EuclideanLoss", EuclideanLossLayer)

POSEIDON_NAMESPACE_END
