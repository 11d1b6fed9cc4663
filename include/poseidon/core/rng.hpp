// Rng: the seeded random source of fillers, dropout and data shuffling.
// A fixed seed gives bit-identical streams; the state can be saved and restored for snapshots.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>

#include <cstdint>
#include <random>
#include <sstream>
#include <string>

POSEIDON_NAMESPACE_BEGIN

class Rng {
 public:
  using engine_type = std::mt19937;
  static constexpr std::uint32_t default_seed = 1701;  // Caffe's default random_seed is -1 (time); ours is fixed

  explicit Rng(std::uint64_t seed = default_seed) { this->seed(seed); }

  void seed(std::uint64_t s) {
    // Mix both halves so that seeds differing only above bit 32 give different streams.
    std::seed_seq seq{static_cast<std::uint32_t>(s), static_cast<std::uint32_t>(s >> 32)};
    engine_.seed(seq);
  }
  engine_type& engine() { return engine_; }

  template <class T>
  T uniform(T lo, T hi) {
    return std::uniform_real_distribution<T>(lo, hi)(engine_);
  }
  template <class T>
  T gaussian(T mean, T stddev) {
    return std::normal_distribution<T>(mean, stddev)(engine_);
  }
  bool bernoulli(double p) { return std::bernoulli_distribution(p)(engine_); }
  std::uint32_t next_u32() { return static_cast<std::uint32_t>(engine_()); }
  std::uint64_t uniform_index(std::uint64_t n) {
    return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(engine_);
  }

  /// The full engine state as text (for snapshots).
  [[nodiscard]] std::string state() const {
    std::ostringstream os;
    os << engine_;
    return os.str();
  }
  void set_state(const std::string& s) {
    std::istringstream is(s);
    engine_type e;
    is >> e;
    POSEIDON_CHECK(!is.fail(), "Rng: corrupt random-number state (", s.size(), " bytes)");
    engine_ = e;
  }

 private:
  engine_type engine_;
};

POSEIDON_NAMESPACE_END
