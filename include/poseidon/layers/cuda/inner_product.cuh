// InnerProduct on CUDA: the layer is written with math:: calls only (cuBLAS gemm/gemv on
// ctx.stream()), so the CUDA side needs no kernel of its own, only its registration.
#pragma once

#include <poseidon/layers/inner_product.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/math/blas.hpp>

POSEIDON_NAMESPACE_BEGIN

POSEIDON_REGISTER_LAYER_CUDA("InnerProduct", InnerProductLayer)

POSEIDON_NAMESPACE_END
