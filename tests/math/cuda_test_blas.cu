// math:: on CUDA against the CPU implementation on the same random inputs.
#include <doctest/doctest.h>
#include <poseidon/core/rng.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/math/blas.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

using namespace poseidon;
using math::Trans;

namespace {
template <class T>
std::vector<T> rand_vec(std::size_t n, std::uint64_t seed, double lo = -1, double hi = 1) {
  Rng r(seed);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(r.uniform<double>(lo, hi));
  return v;
}
template <class T>
Tensor<CUDA, T> on_gpu(const std::vector<T>& v) {
  Tensor<CUDA, T> t{static_cast<int>(v.size())};
  t.copy_data_from_host(v);
  return t;
}
// One assertion per comparison, naming the first mismatch; eps 0 means bit-exact.
template <class T>
void check_close(const std::vector<T>& a, const std::vector<T>& b, double eps) {
  REQUIRE(a.size() == b.size());
  std::size_t bad = 0, first = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double x = a[i], y = b[i];
    const bool ok = eps == 0 ? x == y : std::abs(x - y) <= eps * std::max({1.0, std::abs(x), std::abs(y)});
    if (!ok && bad++ == 0) first = i;
  }
  INFO("first mismatch at ", first, ": ", double(a[first]), " vs ", double(b[first]), " (", bad, " in all)");
  CHECK(bad == 0);
}
}  // namespace

TEST_CASE_TEMPLATE("CUDA gemm and gemv match the CPU for every transpose", T, float, double) {
  DeviceContext<CUDA> g;
  DeviceContext<CPU> c;
  const int M = 33, N = 17, K = 65;
  const double eps = std::is_same_v<T, float> ? 1e-4 : 1e-12;
  for (Trans ta : {Trans::no, Trans::yes})
    for (Trans tb : {Trans::no, Trans::yes}) {
      auto A = rand_vec<T>(M * K, 1), B = rand_vec<T>(K * N, 2), C = rand_vec<T>(M * N, 3);
      auto dA = on_gpu(A), dB = on_gpu(B), dC = on_gpu(C);
      math::gemm(c, ta, tb, M, N, K, T(1.5), A.data(), B.data(), T(0.25), C.data());
      math::gemm(g, ta, tb, M, N, K, T(1.5), dA.data(), dB.data(), T(0.25), dC.data());
      check_close(dC.data_to_host(), C, eps);
    }
  for (Trans ta : {Trans::no, Trans::yes}) {
    auto A = rand_vec<T>(M * N, 4);
    auto x = rand_vec<T>(ta == Trans::no ? N : M, 5);
    auto y = rand_vec<T>(ta == Trans::no ? M : N, 6);
    auto dA = on_gpu(A), dx = on_gpu(x), dy = on_gpu(y);
    math::gemv(c, ta, M, N, T(2), A.data(), x.data(), T(-1), y.data());
    math::gemv(g, ta, M, N, T(2), dA.data(), dx.data(), T(-1), dy.data());
    check_close(dy.data_to_host(), y, eps);
  }
}

TEST_CASE_TEMPLATE("CUDA vector and elementwise helpers match the CPU", T, float, double) {
  DeviceContext<CUDA> g;
  DeviceContext<CPU> c;
  const std::size_t n = 100003;  // more than one grid's worth of blocks per thread
  const double eps = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  auto a = rand_vec<T>(n, 7), b = rand_vec<T>(n, 8, 0.5, 2.0);
  auto da = on_gpu(a), db = on_gpu(b);
  std::vector<T> y(n);
  Tensor<CUDA, T> dy{static_cast<int>(n)};

#define POSEIDON_SAME_BINARY(fn)                             \
  math::fn(c, n, a.data(), b.data(), y.data());              \
  math::fn(g, n, da.data(), db.data(), dy.data());           \
  check_close(dy.data_to_host(), y, eps);
  POSEIDON_SAME_BINARY(add)
  POSEIDON_SAME_BINARY(sub)
  POSEIDON_SAME_BINARY(mul)
  POSEIDON_SAME_BINARY(div)
#undef POSEIDON_SAME_BINARY
#define POSEIDON_SAME_UNARY(fn, in, din)                     \
  math::fn(c, n, in.data(), y.data());                       \
  math::fn(g, n, din.data(), dy.data());                     \
  check_close(dy.data_to_host(), y, eps);
  POSEIDON_SAME_UNARY(sqr, a, da)
  POSEIDON_SAME_UNARY(sqrt, b, db)
  POSEIDON_SAME_UNARY(exp, a, da)
  POSEIDON_SAME_UNARY(log, b, db)
  POSEIDON_SAME_UNARY(abs, a, da)
  POSEIDON_SAME_UNARY(sign, a, da)
#undef POSEIDON_SAME_UNARY
  math::powx(c, n, b.data(), T(0.75), y.data());
  math::powx(g, n, db.data(), T(0.75), dy.data());
  check_close(dy.data_to_host(), y, eps);

  CHECK(double(math::dot(g, n, da.data(), db.data())) ==
        doctest::Approx(double(math::dot(c, n, a.data(), b.data()))).epsilon(1e-4));
  CHECK(double(math::asum(g, n, da.data())) == doctest::Approx(double(math::asum(c, n, a.data()))).epsilon(1e-4));

  std::vector<T> y2 = b;
  auto dy2 = on_gpu(b);
  math::axpy(c, n, T(3), a.data(), y2.data());
  math::axpy(g, n, T(3), da.data(), dy2.data());
  check_close(dy2.data_to_host(), y2, eps);
  math::axpby(c, n, T(0.5), a.data(), T(2), y2.data());
  math::axpby(g, n, T(0.5), da.data(), T(2), dy2.data());
  check_close(dy2.data_to_host(), y2, eps);
  math::scal(c, n, T(-1.5), y2.data());
  math::scal(g, n, T(-1.5), dy2.data());
  check_close(dy2.data_to_host(), y2, eps);
  math::set(g, n, T(2), dy.data());
  math::add_scalar(g, n, T(1), dy.data());
  check_close(dy.data_to_host(), std::vector<T>(n, T(3)), 0);
  math::set(g, n, T(0), dy.data());
  check_close(dy.data_to_host(), std::vector<T>(n, T(0)), 0);
  math::copy(g, n, da.data(), dy.data());
  math::scale(g, n, T(2), dy.data(), dy.data());
  math::scale(c, n, T(2), a.data(), y.data());
  check_close(dy.data_to_host(), y, eps);
}
