// CRC-32C of large payloads by carry-less multiplication (VPCLMULQDQ on 512-bit registers,
// 256 bytes per step) where the CPU has it; core crc32c everywhere else and for short inputs.
#pragma once
// Why: on 2 shared cores the transport is CPU-bound, so every cycle the payload checksum takes
// is throughput lost (snapshots use the same checksum). The crc32 instruction does 8 bytes per cycle at best (three interleaved
// streams, core/detail/crc32c.hpp); folding does 256 bytes in 8 carry-less multiplies.
//
// How: a 16-byte block A at distance d bits ahead of a later block B contributes A(x)*x^d to the
// remainder, and A(x)*x^d == A_hi(x)*(x^(d+64) mod P) + A_lo(x)*(x^d mod P) (mod P), a product
// under 128 bits that is xor-ed into B. Everything folds into one last 16-byte block whose CRC
// the crc32 instruction then takes, so no Barrett reduction is needed. In the reflected bit order
// a 64x64 carry-less product comes out one degree low, which the constants absorb (x^(e-1)).

#include <poseidon/core/detail/crc32c.hpp>
#include <poseidon/core/config.hpp>

#include <cstddef>
#include <cstdint>
#include <span>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define POSEIDON_CRC32C_FOLD 1
#endif

POSEIDON_NAMESPACE_BEGIN
namespace detail {

// x^e mod P in the reflected 32-bit form (x^0 is bit 31), placed where a 64-bit clmul operand
// in the reflected order wants it (x^e at bit 63-e).
constexpr std::uint64_t crc32c_xpow_operand(std::uint64_t e) noexcept {
  std::uint32_t v = 0x80000000u;
  for (std::uint64_t i = 0; i < e; ++i) v = (v >> 1) ^ ((v & 1u) ? crc32c_poly : 0u);
  return std::uint64_t{v} << 32;
}

// The pair of constants that folds a block d bits forward: low qword for the block's first
// 8 bytes (the high-degree half), high qword for its last 8.
struct Crc32cFold {
  std::uint64_t hi_half, lo_half;
  constexpr explicit Crc32cFold(std::uint64_t d) noexcept
      : hi_half(crc32c_xpow_operand(d + 63)), lo_half(crc32c_xpow_operand(d - 1)) {}
};

inline constexpr Crc32cFold crc32c_fold_2048{2048};  // one 256-byte step
inline constexpr Crc32cFold crc32c_fold_512{512};    // one 64-byte register onto the next
inline constexpr Crc32cFold crc32c_fold_384{384};
inline constexpr Crc32cFold crc32c_fold_256{256};
inline constexpr Crc32cFold crc32c_fold_128{128};
inline constexpr std::size_t crc32c_fold_min = 1024;  // below this the crc32 instruction wins

#if defined(POSEIDON_CRC32C_FOLD)
#define POSEIDON_CRC32C_FOLD_TARGET __attribute__((target("avx512f,avx512bw,vpclmulqdq,pclmul,sse4.2")))

// The constants in every 128-bit lane (a broadcast intrinsic trips GCC 12's -Wuninitialized).
POSEIDON_CRC32C_FOLD_TARGET inline __m512i crc32c_fold_constants512(const Crc32cFold& k) noexcept {
  const auto hi = static_cast<long long>(k.hi_half), lo = static_cast<long long>(k.lo_half);
  return _mm512_set_epi64(lo, hi, lo, hi, lo, hi, lo, hi);
}

POSEIDON_CRC32C_FOLD_TARGET inline __m512i crc32c_fold512(__m512i x, __m512i k, __m512i next) noexcept {
  const __m512i a = _mm512_clmulepi64_epi128(x, k, 0x00);
  const __m512i b = _mm512_clmulepi64_epi128(x, k, 0x11);
  return _mm512_ternarylogic_epi64(a, b, next, 0x96);  // a ^ b ^ next
}

POSEIDON_CRC32C_FOLD_TARGET inline __m128i crc32c_fold128(__m128i x, const Crc32cFold& k, __m128i next) noexcept {
  const __m128i kk = _mm_set_epi64x(static_cast<long long>(k.lo_half), static_cast<long long>(k.hi_half));
  return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, kk, 0x00), _mm_clmulepi64_si128(x, kk, 0x11)), next);
}

// The raw register update (no inversions) over n >= crc32c_fold_min bytes.
POSEIDON_CRC32C_FOLD_TARGET inline std::uint32_t crc32c_fold_update(std::uint32_t state, const unsigned char* p,
                                                                    std::size_t n) noexcept {
  const __m512i k2048 = crc32c_fold_constants512(crc32c_fold_2048);
  __m512i a0 = _mm512_loadu_si512(p);
  __m512i a1 = _mm512_loadu_si512(p + 64);
  __m512i a2 = _mm512_loadu_si512(p + 128);
  __m512i a3 = _mm512_loadu_si512(p + 192);
  // The running state enters as the first 4 bytes of data: crc(s, D) = crc(0, D ^ s).
  a0 = _mm512_xor_si512(a0, _mm512_zextsi128_si512(_mm_cvtsi32_si128(static_cast<int>(state))));
  p += 256;
  n -= 256;
  for (; n >= 256; p += 256, n -= 256) {
    a0 = crc32c_fold512(a0, k2048, _mm512_loadu_si512(p));
    a1 = crc32c_fold512(a1, k2048, _mm512_loadu_si512(p + 64));
    a2 = crc32c_fold512(a2, k2048, _mm512_loadu_si512(p + 128));
    a3 = crc32c_fold512(a3, k2048, _mm512_loadu_si512(p + 192));
  }
  const __m512i k512 = crc32c_fold_constants512(crc32c_fold_512);
  a1 = crc32c_fold512(a0, k512, a1);
  a2 = crc32c_fold512(a1, k512, a2);
  a3 = crc32c_fold512(a2, k512, a3);
  // Four consecutive 16-byte blocks left: fold the first three onto the last.
  // (Through memory: GCC 12 warns on the lane-extract intrinsics' undefined merge operand.)
  alignas(64) __m128i lane[4];
  _mm512_store_si512(lane, a3);
  __m128i v = lane[3];
  v = crc32c_fold128(lane[0], crc32c_fold_384, v);
  v = crc32c_fold128(lane[1], crc32c_fold_256, v);
  v = crc32c_fold128(lane[2], crc32c_fold_128, v);
  for (; n >= 16; p += 16, n -= 16)
    v = crc32c_fold128(v, crc32c_fold_128, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  std::uint64_t c = _mm_crc32_u64(0, static_cast<std::uint64_t>(_mm_cvtsi128_si64(v)));
  c = _mm_crc32_u64(c, static_cast<std::uint64_t>(_mm_extract_epi64(v, 1)));
  while (n--) c = _mm_crc32_u8(static_cast<std::uint32_t>(c), *p++);
  return static_cast<std::uint32_t>(c);
}
#undef POSEIDON_CRC32C_FOLD_TARGET

inline bool cpu_has_crc32c_fold() noexcept {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("sse4.2");
  return has;
}
#endif

/// crc32c() with the folding path for long inputs; the same value for every input.
inline std::uint32_t crc32c_payload(std::span<const std::byte> bytes, std::uint32_t crc = 0) noexcept {
#if defined(POSEIDON_CRC32C_FOLD)
  if (bytes.size() >= crc32c_fold_min && cpu_has_crc32c_fold())
    return ~crc32c_fold_update(~crc, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
#endif
  return crc32c(bytes, crc);
}

}  // namespace detail
POSEIDON_NAMESPACE_END
