// Library-wide configuration: version, the versioned inline namespace and portability macros.
// Every other header includes this one first.
#pragma once

#define POSEIDON_VERSION_MAJOR 0
#define POSEIDON_VERSION_MINOR 1
#define POSEIDON_VERSION_PATCH 0

// A versioned inline namespace keeps the ABI of two library versions apart when
// both end up in one program (the fmt / doctest convention).
#define POSEIDON_NAMESPACE_BEGIN \
  namespace poseidon {           \
  inline namespace v0 {
#define POSEIDON_NAMESPACE_END \
  }                            \
  }

#if defined(__CUDACC__)
#define POSEIDON_HOST_DEVICE __host__ __device__
#else
#define POSEIDON_HOST_DEVICE
#endif

#if defined(__GNUC__) || defined(__clang__)
#define POSEIDON_RESTRICT __restrict__
#else
#define POSEIDON_RESTRICT
#endif
