// The doctest main of CUDA test binaries: with no usable CUDA device it prints why and exits 77,
// which ctest reports as skipped (never as passed); otherwise it runs the tests.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <cstdio>

int main(int argc, char** argv) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    std::printf("SKIPPED: no CUDA device available (%s); these CUDA tests did not run\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return 77;
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
