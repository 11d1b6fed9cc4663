// DeviceContext<D>: the per-device state that tags never hold (BLAS threads, RNG; for CUDA the
// stream and the cuBLAS/cuDNN handles). Every math call and layer pass receives one explicitly.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/rng.hpp>

#include <cblas.h>
#include <omp.h>

#include <cstdint>

POSEIDON_NAMESPACE_BEGIN

template <class D>
class DeviceContext;

/// CPU state: the thread count shared by OpenBLAS and our OpenMP loops, and the RNG.
template <>
class DeviceContext<CPU> {
 public:
  using device_type = CPU;

  /// threads <= 0 keeps the library defaults (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS or all cores).
  explicit DeviceContext(int threads = 0, std::uint64_t seed = Rng::default_seed) : rng_(seed) {
    if (threads > 0) set_threads(threads);
    threads_ = omp_get_max_threads();
  }

  void set_threads(int n) {
    POSEIDON_CHECK(n > 0, "DeviceContext<CPU>: thread count must be positive, got ", n);
    openblas_set_num_threads(n);
    omp_set_num_threads(n);
    threads_ = n;
  }
  [[nodiscard]] int threads() const { return threads_; }
  Rng& rng() { return rng_; }
  /// CPU work is synchronous; present so device-generic code can call it.
  void synchronize() const {}
  /// Device-generic code brackets a layer pass with this (see DeviceContext<CUDA>); nothing to do here.
  struct KernelScope {};
  [[nodiscard]] KernelScope kernel_scope() const { return {}; }

  /// A per-thread default for code that does not manage contexts itself.
  static DeviceContext& thread_default() {
    thread_local DeviceContext ctx;
    return ctx;
  }

 private:
  int threads_ = 1;
  Rng rng_;
};

POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/core/cuda/context.cuh>
#endif
