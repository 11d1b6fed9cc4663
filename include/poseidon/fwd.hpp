// Forward declarations of Poseidon's public names, for headers that only mention them.
// Including this costs nothing; include poseidon.hpp (or the specific header) to use them.
#pragma once

#include <poseidon/core/config.hpp>

POSEIDON_NAMESPACE_BEGIN

struct CPU;
struct CUDA;
template <class D>
class DeviceContext;
class Error;
class Rng;
class Shape;
class Message;
template <class D, class T>
class Tensor;
struct LayerParameter;
struct ParamSpec;
template <class D, class T>
class Layer;
template <class D, class T>
class LayerRegistry;
struct NetState;
template <class D, class T>
class Net;
class NetBuilder;
class ResumableLayer;
struct SolverConfig;
struct SolverOptions;
template <class D, class T>
class Solver;

POSEIDON_NAMESPACE_END
