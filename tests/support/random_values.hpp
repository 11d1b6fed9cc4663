// n values uniform in [-1, 1) from a fixed seed, for the math kernels' tests.
#pragma once

#include <cstddef>
#include <random>
#include <vector>

namespace poseidon::testing {

template <class T>
std::vector<T> random_values(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(u(gen));
  return v;
}

}  // namespace poseidon::testing
