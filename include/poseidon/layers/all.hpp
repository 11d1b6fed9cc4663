// Every layer Poseidon ships. Including a layer's header registers it with LayerRegistry, so
// this list is the one registration line a new layer adds (besides its header and its test).
#pragma once

#include <poseidon/layers/accuracy.hpp>
#include <poseidon/layers/batch_norm.hpp>
#include <poseidon/layers/concat.hpp>
#include <poseidon/layers/convolution.hpp>
#include <poseidon/layers/dropout.hpp>
#include <poseidon/layers/eltwise.hpp>
#include <poseidon/layers/euclidean_loss.hpp>
#include <poseidon/layers/flatten.hpp>
#include <poseidon/layers/inner_product.hpp>
#include <poseidon/layers/input.hpp>
#include <poseidon/layers/lrn.hpp>
#include <poseidon/layers/pooling.hpp>
#include <poseidon/layers/relu.hpp>
#include <poseidon/layers/reshape.hpp>
#include <poseidon/layers/scale.hpp>
#include <poseidon/layers/sigmoid.hpp>
#include <poseidon/layers/softmax.hpp>
#include <poseidon/layers/softmax_loss.hpp>
#include <poseidon/layers/split.hpp>
#include <poseidon/layers/tanh.hpp>
