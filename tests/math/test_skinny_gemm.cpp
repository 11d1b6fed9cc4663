// The small-batch GEMM kernel (C = A B^T) against OpenBLAS on the same operands: batch sizes
// 1-32, ragged edges (sizes that are not multiples of the vector width or of the kernel's
// blocks), alpha and beta, 1 or 2 threads; and the products it must leave to BLAS.
#include <doctest/doctest.h>
#include <poseidon/math/blas.hpp>
#include <poseidon/math/skinny_gemm.hpp>

#include <cmath>
#include <random>
#include <vector>

namespace pd = poseidon;

namespace {

std::vector<float> random_vector(std::size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// C = alpha op(A) op(B) + beta C by OpenBLAS (the reference) and by the skinny kernel.
void compare(bool ta, bool tb, int m, int n, int k, float alpha, float beta, int threads) {
  CAPTURE(ta);
  CAPTURE(tb);
  CAPTURE(m);
  CAPTURE(n);
  CAPTURE(k);
  CAPTURE(alpha);
  CAPTURE(beta);
  CAPTURE(threads);
  std::mt19937 rng(static_cast<unsigned>(m * 131 + n * 7 + k));
  const auto A = random_vector(static_cast<std::size_t>(m) * k, rng);
  const auto B = random_vector(static_cast<std::size_t>(k) * n, rng);
  const auto C0 = random_vector(static_cast<std::size_t>(m) * n, rng);
  auto want = C0, got = C0;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, A.data(),
              ta ? m : k, B.data(), tb ? k : n, beta, want.data(), n);
  const bool taken = pd::math::detail::skinny_sgemm(ta, tb, m, n, k, alpha, A.data(), B.data(), beta, got.data(), threads);
  if (!taken) {
    // Only a CPU without AVX-512 (or POSEIDON_SKINNY_GEMM=0) declines a shape it covers.
    MESSAGE("skinny kernel declined (no AVX-512?)");
    CHECK(got == C0);
    return;
  }
  // Both sum k products of values in [-1, 1] in float: the difference is rounding, bounded
  // well inside k * 2^-22 of the magnitude.
  const float tol = 4e-6f * static_cast<float>(k) + 1e-6f;
  std::size_t bad = 0;
  for (std::size_t i = 0; i < want.size(); ++i)
    if (!(std::fabs(want[i] - got[i]) <= tol * (1.0f + std::fabs(want[i])))) ++bad;
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("skinny gemm, forward shape: C = A B^T with a small batch of rows") {
  for (int m : {1, 3, 8, 11, 16, 25, 32})
    for (int threads : {1, 2}) {
      compare(false, true, m, 1030, 301, 1.0f, 0.0f, threads);  // n % 6 = 4, k % 16 = 13
      compare(false, true, m, 257, 513, 0.5f, 1.0f, threads);   // n % 6 = 5
      compare(false, true, m, 6 * 40 + 3, 64, 1.0f, 0.0f, threads);  // n % 6 = 3, no tail in k
      compare(false, true, m, 259, 4096, 1.0f, -0.75f, threads);
      compare(false, true, m, 6 * 50 + 2, 300, 2.0f, 0.5f, threads);  // n % 6 = 2
    }
}

TEST_CASE("skinny gemm declines what it does not cover, leaving C alone") {
  std::vector<float> a(33 * 100, 1.0f), b(100 * 1000, 1.0f), c(33 * 1000, 3.0f);
  CHECK_FALSE(pd::math::detail::skinny_sgemm(false, true, 33, 1000, 100, 1.0f, a.data(), b.data(), 0.0f, c.data(), 1));
  CHECK_FALSE(pd::math::detail::skinny_sgemm(true, true, 4, 1000, 100, 1.0f, a.data(), b.data(), 0.0f, c.data(), 1));
  CHECK_FALSE(pd::math::detail::skinny_sgemm(false, false, 4, 1000, 100, 1.0f, a.data(), b.data(), 0.0f, c.data(), 1));
  CHECK_FALSE(pd::math::detail::skinny_sgemm(true, false, 1000, 100, 4, 1.0f, b.data(), a.data(), 0.0f, c.data(), 1));
  CHECK_FALSE(pd::math::detail::skinny_sgemm(false, true, 4, 10, 10, 1.0f, a.data(), b.data(), 0.0f, c.data(), 1));
  CHECK(c == std::vector<float>(33 * 1000, 3.0f));
}

TEST_CASE("math::gemm routes a skinny float product through the kernel with the same result as BLAS") {
  pd::math::CpuContext ctx(1);
  std::mt19937 rng(5);
  const int m = 8, n = 700, k = 400;
  const auto A = random_vector(static_cast<std::size_t>(m) * k, rng);
  const auto B = random_vector(static_cast<std::size_t>(n) * k, rng);
  std::vector<float> want(static_cast<std::size_t>(m) * n), got(want.size());
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, A.data(), k, B.data(), k, 0.0f, want.data(), n);
  pd::math::gemm(ctx, pd::math::Trans::no, pd::math::Trans::yes, m, n, k, 1.0f, A.data(), B.data(), 0.0f, got.data());
  for (std::size_t i = 0; i < want.size(); ++i) REQUIRE(std::fabs(want[i] - got[i]) <= 1e-3f);
}
