// Device tags: empty structs that select implementations by overload and specialisation.
// They hold no state; streams, handles and thread pools live in DeviceContext<D>.
#pragma once

#include <poseidon/core/concepts.hpp>
#include <poseidon/core/config.hpp>

#include <type_traits>

POSEIDON_NAMESPACE_BEGIN

struct CPU {
  static constexpr const char* name = "CPU";
  static constexpr bool is_gpu = false;
};

struct CUDA {
  static constexpr const char* name = "CUDA";
  static constexpr bool is_gpu = true;
};

template <class D>
inline constexpr bool is_cpu_v = std::is_same_v<D, CPU>;
template <class D>
inline constexpr bool is_cuda_v = std::is_same_v<D, CUDA>;

/// True when the CUDA backend is compiled into this translation unit (nvcc with POSEIDON_WITH_CUDA).
#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
inline constexpr bool cuda_compiled = true;
#else
inline constexpr bool cuda_compiled = false;
#endif

namespace detail {
template <class...>
inline constexpr bool dependent_false = false;
}  // namespace detail

/// Fails compilation with a readable message when a kernel has no specialisation for a device.
/// Use as the body of a primary template: `static_assert(detail::no_kernel_for<D>, "...")`.
#define POSEIDON_NO_KERNEL(D, what)                                                                   \
  static_assert(::poseidon::detail::dependent_false<D>,                                               \
                what " has no kernel for this device. CUDA kernels are compiled only by nvcc: build " \
                     "this translation unit as CUDA (a .cu file) with POSEIDON_WITH_CUDA")

static_assert(device<CPU>);
static_assert(device<CUDA>);

POSEIDON_NAMESPACE_END
