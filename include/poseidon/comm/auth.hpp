// Job authentication: HMAC-SHA256 challenge-response over a shared job token (OpenSSL libcrypto),
// so a rank proves it knows POSEIDON_JOB_TOKEN without the token ever crossing the wire.
#pragma once
// Users of this header (and of rendezvous.hpp, cluster-based transports) link libcrypto:
// target_link_libraries(app PRIVATE OpenSSL::Crypto). Keeping the dependency here, in headers,
// spares the library a compiled component; the header needs only <openssl/hmac.h> and friends.

#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

POSEIDON_NAMESPACE_BEGIN
namespace detail {

using Digest = std::array<std::byte, 32>;
using Nonce = std::array<std::byte, 32>;

inline Digest hmac_sha256(std::string_view key, std::span<const std::byte> msg) {
  Digest out{};
  unsigned int len = 0;
  const auto* r = ::HMAC(::EVP_sha256(), key.data(), static_cast<int>(key.size()),
                         reinterpret_cast<const unsigned char*>(msg.data()), msg.size(),
                         reinterpret_cast<unsigned char*>(out.data()), &len);
  POSEIDON_CHECK(r != nullptr && len == out.size(), "HMAC-SHA256 failed in libcrypto");
  return out;
}

inline Nonce random_nonce() {
  Nonce n{};
  POSEIDON_CHECK(::RAND_bytes(reinterpret_cast<unsigned char*>(n.data()), static_cast<int>(n.size())) == 1,
                 "libcrypto RAND_bytes failed: no entropy for the authentication nonce");
  return n;
}

/// Constant-time comparison, so a forger learns nothing from how fast a guess is rejected.
inline bool digest_equal(std::span<const std::byte> a, std::span<const std::byte> b) noexcept {
  return a.size() == b.size() && ::CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// Both nonces are in every proof, so neither side can replay a proof from another session,
// and the direction label keeps a joiner's proof from being reflected back as rank 0's.
inline Digest auth_proof(std::string_view token, std::string_view direction, const Nonce& server_nonce,
                         const Nonce& client_nonce, std::uint32_t rank, std::uint32_t world) {
  std::array<std::byte, 128> msg{};
  std::size_t n = 0;
  for (char c : direction.substr(0, 32)) msg[n++] = static_cast<std::byte>(c);
  for (auto b : server_nonce) msg[n++] = b;
  for (auto b : client_nonce) msg[n++] = b;
  for (int i = 0; i < 4; ++i) msg[n++] = static_cast<std::byte>((rank >> (8 * i)) & 0xFFu);
  for (int i = 0; i < 4; ++i) msg[n++] = static_cast<std::byte>((world >> (8 * i)) & 0xFFu);
  return hmac_sha256(token, std::span<const std::byte>(msg.data(), n));
}

inline constexpr std::string_view auth_join = "poseidon/join/v1";
inline constexpr std::string_view auth_roster = "poseidon/roster/v1";

}  // namespace detail
POSEIDON_NAMESPACE_END
