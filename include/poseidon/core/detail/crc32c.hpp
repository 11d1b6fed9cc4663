// CRC-32C (Castagnoli), the checksum of wire frames and snapshots: SSE4.2 instruction on three
// interleaved streams when the CPU has it (chosen once at run time), portable slicing-by-8 otherwise.
#pragma once
// Why three streams: the crc32 instruction has a latency of 3 cycles but issues every cycle, so
// one dependent chain uses a third of it. Three independent lanes over adjacent blocks keep it
// busy; their states are joined with a precomputed "append N zero bytes" operator (a 32x32 matrix
// over GF(2), turned into four byte tables) because CRC(A||B) = shift_|B|(CRC(A)) xor CRC_0(B).

#include <poseidon/core/config.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define POSEIDON_CRC32C_X86 1
#endif

POSEIDON_NAMESPACE_BEGIN
namespace detail {

inline constexpr std::uint32_t crc32c_poly = 0x82F63B78u;  // reflected Castagnoli polynomial

struct Crc32cTables {
  std::array<std::array<std::uint32_t, 256>, 8> t{};
  constexpr Crc32cTables() {
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ crc32c_poly : c >> 1;
      t[0][i] = c;
    }
    for (std::size_t s = 1; s < 8; ++s)
      for (std::size_t i = 0; i < 256; ++i) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFFu];
  }
};

inline constexpr Crc32cTables crc32c_tables{};

// A linear map on the 32-bit CRC state, stored by columns: column i is the image of bit i.
using Gf2Matrix = std::array<std::uint32_t, 32>;

constexpr std::uint32_t gf2_apply(const Gf2Matrix& m, std::uint32_t v) noexcept {
  std::uint32_t r = 0;
  for (int i = 0; v != 0; ++i, v >>= 1)
    if (v & 1u) r ^= m[static_cast<std::size_t>(i)];
  return r;
}

// a after b (apply b first).
constexpr Gf2Matrix gf2_compose(const Gf2Matrix& a, const Gf2Matrix& b) noexcept {
  Gf2Matrix r{};
  for (std::size_t i = 0; i < 32; ++i) r[i] = gf2_apply(a, b[i]);
  return r;
}

// The operator that feeds `n` zero bytes through the CRC register, by squaring: O(log n) steps.
constexpr Gf2Matrix crc32c_zeros_operator(std::uint64_t n) noexcept {
  Gf2Matrix bit{};  // one zero bit: shift right, fold the polynomial back in when bit 0 was set
  bit[0] = crc32c_poly;
  for (std::size_t i = 1; i < 32; ++i) bit[i] = std::uint32_t{1} << (i - 1);
  Gf2Matrix step = bit;
  for (int k = 0; k < 3; ++k) step = gf2_compose(step, step);  // one byte = eight bits
  Gf2Matrix r{};
  for (std::size_t i = 0; i < 32; ++i) r[i] = std::uint32_t{1} << i;
  for (; n != 0; n >>= 1) {
    if (n & 1u) r = gf2_compose(step, r);
    step = gf2_compose(step, step);
  }
  return r;
}

// The same operator as four byte-indexed tables: four loads instead of 32 conditional xors.
struct Crc32cShift {
  std::array<std::array<std::uint32_t, 256>, 4> t{};
  constexpr explicit Crc32cShift(std::uint64_t n) {
    const Gf2Matrix m = crc32c_zeros_operator(n);
    for (std::size_t k = 0; k < 4; ++k)
      for (std::uint32_t b = 0; b < 256; ++b) t[k][b] = gf2_apply(m, b << (8 * k));
  }
  [[nodiscard]] constexpr std::uint32_t operator()(std::uint32_t crc) const noexcept {
    return t[0][crc & 0xFFu] ^ t[1][(crc >> 8) & 0xFFu] ^ t[2][(crc >> 16) & 0xFFu] ^ t[3][crc >> 24];
  }
};

// Lane lengths of the interleaved loop: the long one amortises the join (3 x 8 KiB stays in L1),
// the short one lets messages from under a kilobyte up use all three lanes too.
inline constexpr std::size_t crc32c_long_lane = 8192;
inline constexpr std::size_t crc32c_short_lane = 256;
inline constexpr Crc32cShift crc32c_long_shift{crc32c_long_lane};
inline constexpr Crc32cShift crc32c_short_shift{crc32c_short_lane};

/// The raw CRC state after `n` more zero bytes (for joining CRCs of pieces computed apart).
inline std::uint32_t crc32c_shift(std::uint32_t state, std::uint64_t n) noexcept {
  return gf2_apply(crc32c_zeros_operator(n), state);
}

// `crc` is the running, already inverted state; callers go through crc32c().
inline std::uint32_t crc32c_portable(std::uint32_t crc, const unsigned char* p, std::size_t n) noexcept {
  const auto& t = crc32c_tables.t;
  while (n >= 8) {
    std::uint32_t lo;
    std::uint32_t hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    lo ^= crc;  // the table walk assumes little-endian words, as on every target we build for
    crc = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
          t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xFFu];
  return crc;
}

#if defined(POSEIDON_CRC32C_X86)
__attribute__((target("sse4.2"))) inline std::uint64_t crc32c_sse42_word(std::uint64_t c, const unsigned char* p) noexcept {
  std::uint64_t w;
  std::memcpy(&w, p, 8);
  return _mm_crc32_u64(c, w);
}

// Three lanes of `lane` bytes each per round, joined with `shift` (which must be for `lane`).
__attribute__((target("sse4.2"))) inline std::uint64_t crc32c_sse42_lanes(std::uint64_t c, const unsigned char*& p,
                                                                          std::size_t& n, std::size_t lane,
                                                                          const Crc32cShift& shift) noexcept {
  while (n >= 3 * lane) {
    std::uint64_t c1 = 0;
    std::uint64_t c2 = 0;
    const unsigned char* const end = p + lane;
    for (; p != end; p += 8) {
      c = crc32c_sse42_word(c, p);
      c1 = crc32c_sse42_word(c1, p + lane);
      c2 = crc32c_sse42_word(c2, p + 2 * lane);
    }
    c = shift(static_cast<std::uint32_t>(c)) ^ c1;
    c = shift(static_cast<std::uint32_t>(c)) ^ c2;
    p += 2 * lane;
    n -= 3 * lane;
  }
  return c;
}

__attribute__((target("sse4.2"))) inline std::uint32_t crc32c_sse42(std::uint32_t crc, const unsigned char* p,
                                                                    std::size_t n) noexcept {
  std::uint64_t c = crc;
  while (n && (reinterpret_cast<std::uintptr_t>(p) & 7u)) {
    c = _mm_crc32_u8(static_cast<std::uint32_t>(c), *p++);
    --n;
  }
  c = crc32c_sse42_lanes(c, p, n, crc32c_long_lane, crc32c_long_shift);
  c = crc32c_sse42_lanes(c, p, n, crc32c_short_lane, crc32c_short_shift);
  for (; n >= 8; p += 8, n -= 8) c = crc32c_sse42_word(c, p);
  while (n--) c = _mm_crc32_u8(static_cast<std::uint32_t>(c), *p++);
  return static_cast<std::uint32_t>(c);
}

inline bool cpu_has_sse42() noexcept {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}
#endif

}  // namespace detail

/// CRC-32C of `bytes`, continuing from `crc` (the value a previous call returned; 0 to start).
inline std::uint32_t crc32c(std::span<const std::byte> bytes, std::uint32_t crc = 0) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  std::uint32_t state = ~crc;
#if defined(POSEIDON_CRC32C_X86)
  if (detail::cpu_has_sse42()) return ~detail::crc32c_sse42(state, p, bytes.size());
#endif
  return ~detail::crc32c_portable(state, p, bytes.size());
}

/// CRC-32C of A||B from crc32c(A), crc32c(B) and B's length: pieces checksummed apart (in
/// parallel, or as they arrive out of order) join without another pass over the data.
inline std::uint32_t crc32c_combine(std::uint32_t crc_a, std::uint32_t crc_b, std::uint64_t len_b) noexcept {
  // The pre- and post-inversions cancel because the shift is linear: shift(~a) ^ shift(~0) = shift(a).
  return detail::crc32c_shift(crc_a, len_b) ^ crc_b;
}

POSEIDON_NAMESPACE_END
