#include <doctest/doctest.h>
#include <poseidon/core/rng.hpp>
#include <poseidon/math/blas.hpp>

#include <vector>

using namespace poseidon;
using math::Trans;

namespace {
template <class T>
std::vector<T> rand_vec(std::size_t n, std::uint64_t seed) {
  Rng r(seed);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(r.uniform<double>(-1, 1));
  return v;
}
}  // namespace

TEST_CASE_TEMPLATE("gemm matches a naive triple loop for every transpose", T, float, double) {
  DeviceContext<CPU> ctx;
  const int M = 7, N = 5, K = 9;
  for (Trans ta : {Trans::no, Trans::yes})
    for (Trans tb : {Trans::no, Trans::yes}) {
      auto A = rand_vec<T>(M * K, 1), B = rand_vec<T>(K * N, 2), C = rand_vec<T>(M * N, 3);
      auto ref = C;
      for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
          double s = 0;
          for (int k = 0; k < K; ++k) {
            const double a = ta == Trans::no ? A[i * K + k] : A[k * M + i];
            const double b = tb == Trans::no ? B[k * N + j] : B[j * K + k];
            s += a * b;
          }
          ref[i * N + j] = static_cast<T>(2 * s + 0.5 * ref[i * N + j]);
        }
      math::gemm(ctx, ta, tb, M, N, K, T(2), A.data(), B.data(), T(0.5), C.data());
      for (int i = 0; i < M * N; ++i) CHECK(double(C[i]) == doctest::Approx(double(ref[i])).epsilon(1e-5));
    }
}

TEST_CASE_TEMPLATE("gemv, axpy, axpby, scal, dot, asum", T, float, double) {
  DeviceContext<CPU> ctx;
  const int M = 4, N = 3;
  auto A = rand_vec<T>(M * N, 4), x = rand_vec<T>(N, 5), xt = rand_vec<T>(M, 6);
  std::vector<T> y(M, T(1)), yt(N, T(0));
  math::gemv(ctx, Trans::no, M, N, T(1), A.data(), x.data(), T(2), y.data());
  math::gemv(ctx, Trans::yes, M, N, T(1), A.data(), xt.data(), T(0), yt.data());
  for (int i = 0; i < M; ++i) {
    double s = 2;
    for (int j = 0; j < N; ++j) s += double(A[i * N + j]) * x[j];
    CHECK(double(y[i]) == doctest::Approx(s).epsilon(1e-5));
  }
  for (int j = 0; j < N; ++j) {
    double s = 0;
    for (int i = 0; i < M; ++i) s += double(A[i * N + j]) * xt[i];
    CHECK(double(yt[j]) == doctest::Approx(s).epsilon(1e-5));
  }
  std::vector<T> a{1, -2, 3}, b{4, 5, -6};
  math::axpy(ctx, 3, T(2), a.data(), b.data());
  CHECK(b == std::vector<T>{6, 1, 0});
  math::axpby(ctx, 3, T(1), a.data(), T(-1), b.data());
  CHECK(b == std::vector<T>{-5, -3, 3});
  math::scal(ctx, 3, T(-2), b.data());
  CHECK(b == std::vector<T>{10, 6, -6});
  CHECK(math::dot(ctx, 3, a.data(), b.data()) == doctest::Approx(10 - 12 - 18));
  CHECK(math::asum(ctx, 3, a.data()) == doctest::Approx(6));
  CHECK(math::sumsq(ctx, 3, a.data()) == doctest::Approx(14));
}

TEST_CASE_TEMPLATE("elementwise helpers, large enough to take the parallel path", T, float, double) {
  DeviceContext<CPU> ctx;
  const std::size_t n = (1 << 16) + 3;
  auto a = rand_vec<T>(n, 7), b = rand_vec<T>(n, 8);
  for (auto& v : b) v = v + T(3);  // keep away from zero for div/log
  std::vector<T> y(n);
  math::add(ctx, n, a.data(), b.data(), y.data());
  CHECK(y[n - 1] == a[n - 1] + b[n - 1]);
  math::sub(ctx, n, a.data(), b.data(), y.data());
  CHECK(y[10] == a[10] - b[10]);
  math::mul(ctx, n, a.data(), b.data(), y.data());
  CHECK(y[20] == a[20] * b[20]);
  math::div(ctx, n, a.data(), b.data(), y.data());
  CHECK(y[30] == a[30] / b[30]);
  math::sqr(ctx, n, a.data(), y.data());
  CHECK(y[40] == a[40] * a[40]);
  math::log(ctx, n, b.data(), y.data());
  CHECK(double(y[50]) == doctest::Approx(std::log(double(b[50]))).epsilon(1e-6));
  math::exp(ctx, n, a.data(), y.data());
  CHECK(double(y[60]) == doctest::Approx(std::exp(double(a[60]))).epsilon(1e-6));
  math::powx(ctx, n, b.data(), T(1.5), y.data());
  CHECK(double(y[70]) == doctest::Approx(std::pow(double(b[70]), 1.5)).epsilon(1e-6));
  math::abs(ctx, n, a.data(), y.data());
  CHECK(y[80] == std::abs(a[80]));
  math::sign(ctx, n, a.data(), y.data());
  CHECK(y[90] == (a[90] > 0 ? T(1) : T(-1)));
  math::set(ctx, n, T(0), y.data());
  CHECK(y[n - 1] == T(0));
  math::set(ctx, n, T(2.5), y.data());
  math::add_scalar(ctx, n, T(1), y.data());
  CHECK(y[n / 2] == T(3.5));
  math::scale(ctx, n, T(2), y.data(), y.data());  // in place
  CHECK(y[0] == T(7));
  math::copy(ctx, n, a.data(), y.data());
  CHECK(y == a);
}
