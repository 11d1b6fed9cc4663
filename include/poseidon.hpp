// Poseidon: data-parallel deep learning on CPU and GPU clusters over commodity networks.
// The umbrella header: everything a trainer program uses. Nothing inside the library includes it.
#pragma once

#include <poseidon/core/concepts.hpp>
#include <poseidon/core/config.hpp>
#include <poseidon/core/context.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/filler.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/core/rng.hpp>
#include <poseidon/core/shape.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/fwd.hpp>

#include <poseidon/math/blas.hpp>
#include <poseidon/math/im2col.hpp>

#include <poseidon/layers/all.hpp>
#include <poseidon/layers/gradient_checker.hpp>
#include <poseidon/layers/registry.hpp>

#include <poseidon/net/builder.hpp>
#include <poseidon/net/net.hpp>
#include <poseidon/net/prototxt.hpp>
#include <poseidon/net/snapshot.hpp>

#include <poseidon/solver/lr_policy.hpp>
#include <poseidon/solver/sgd.hpp>
#include <poseidon/solver/solver.hpp>
#include <poseidon/solver/solver_config.hpp>
#include <poseidon/solver/solver_state.hpp>

#include <poseidon/data/cifar10.hpp>
#include <poseidon/data/dummy_data_layer.hpp>
#include <poseidon/data/idx.hpp>
#include <poseidon/data/idx_data_layer.hpp>
#include <poseidon/data/memory_data_layer.hpp>
#include <poseidon/data/transform.hpp>

#include <poseidon/comm/cluster.hpp>
#include <poseidon/comm/collectives.hpp>
#include <poseidon/comm/inproc_transport.hpp>
#include <poseidon/comm/transport.hpp>
#if defined(POSEIDON_WITH_FABRIC)
#include <poseidon/comm/fabric_transport.hpp>
#endif
