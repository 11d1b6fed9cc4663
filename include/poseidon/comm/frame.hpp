// The wire format: a fixed 40-byte little-endian header (magic, version, kind, source rank, tag,
// length, checksums) in front of every message, and the validation every received byte passes.
#pragma once
// A payload is checked either as a whole (flag_payload_crc: payload_crc covers all of it) or in
// pieces (flag_piece_crc: payload_crc covers the first `piece` bytes and every later piece
// carries its own CRC-32C in 4 trailing bytes), so that a large message is checksummed piece by
// piece while the previous piece is on the wire and verified while the next one arrives, each
// piece still in cache. Pieced frames exist only between FabricTransports (FrameLimits::pieces).
// A later piece's CRC starts from its place in its message (piece_crc_seed: the first piece's
// CRC and the piece's index), so a piece that lands in the wrong message or the wrong place
// fails its check instead of passing on its own CRC (wire version 2; version 1 checked each
// piece alone).

#include <poseidon/core/detail/crc32c_fold.hpp>
#include <poseidon/core/config.hpp>
#include <poseidon/core/detail/crc32c.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

POSEIDON_NAMESPACE_BEGIN

enum class FrameKind : std::uint8_t {
  data = 1,       // a tagged user or collective message
  challenge = 2,  // rendezvous: rank 0 -> joiner, nonce
  hello = 3,      // rendezvous: joiner -> rank 0, rank, world, proof, host, fabric address
  refuse = 4,     // rendezvous: rank 0 -> joiner, why it was turned away
  roster = 5,     // rendezvous: rank 0 -> everyone, all hosts and addresses
  abort = 6,      // control: a rank died or gave up (names which)
  bye = 7,        // control: a rank finished cleanly
  fin = 8,        // control: rank 0 saw every bye; endpoints may close
};
inline constexpr std::uint8_t max_frame_kind = 8;

enum class FrameError : std::uint8_t {
  none,
  short_input,
  bad_magic,
  bad_version,
  bad_kind,
  bad_flags,
  bad_reserved,
  bad_header_checksum,
  unknown_source,
  oversized,
  length_mismatch,
  bad_payload_checksum,
};

inline std::string_view to_string(FrameError e) noexcept {
  switch (e) {
    case FrameError::none: return "ok";
    case FrameError::short_input: return "truncated header";
    case FrameError::bad_magic: return "bad magic (not a Poseidon frame)";
    case FrameError::bad_version: return "unsupported wire version";
    case FrameError::bad_kind: return "unknown frame kind";
    case FrameError::bad_flags: return "unknown flag bits";
    case FrameError::bad_reserved: return "non-zero reserved field";
    case FrameError::bad_header_checksum: return "header checksum mismatch";
    case FrameError::unknown_source: return "source rank outside the world";
    case FrameError::oversized: return "payload larger than allowed";
    case FrameError::length_mismatch: return "payload length differs from the header";
    case FrameError::bad_payload_checksum: return "payload checksum mismatch";
  }
  return "unknown frame error";
}

struct FrameHeader {
  static constexpr std::uint32_t magic = 0x4E445350u;  // "PSDN" in memory order
  static constexpr std::uint8_t version = 2;
  static constexpr std::size_t size = 40;
  static constexpr std::uint16_t flag_payload_crc = 1;  // payload_crc covers the whole payload
  static constexpr std::uint16_t flag_piece_crc = 2;    // payload_crc covers piece 0; trailers the rest
  static constexpr std::uint32_t min_piece = 4096;      // bounds the number of pieces a frame implies
  static constexpr std::size_t piece_trailer = 4;       // the CRC-32C after every piece but the first

  FrameKind kind = FrameKind::data;
  std::uint16_t flags = 0;
  std::uint32_t source = 0;
  std::uint64_t tag = 0;
  std::uint64_t length = 0;
  std::uint32_t payload_crc = 0;
  std::uint32_t piece = 0;  // flag_piece_crc: bytes per piece (the last may be shorter); else 0

  [[nodiscard]] bool pieced() const noexcept { return (flags & flag_piece_crc) != 0; }
  /// flag_piece_crc: how many pieces the payload travels in (at least one).
  [[nodiscard]] std::uint64_t piece_count() const noexcept {
    return pieced() && length > piece ? (length + piece - 1) / piece : 1;
  }
};

/// What a receiver accepts: payloads up to `max_payload` bytes from ranks below `world_size`.
struct FrameLimits {
  std::uint64_t max_payload = 0;
  std::uint32_t world_size = 0;
  bool pieces = false;  // accept flag_piece_crc (only a receiver that reads the trailers may)
};

struct DecodedHeader {
  FrameHeader header;
  FrameError error = FrameError::none;
  explicit operator bool() const noexcept { return error == FrameError::none; }
};

namespace detail {

inline void put_le(std::byte* p, std::uint64_t v, int n) noexcept {
  for (int i = 0; i < n; ++i) p[i] = static_cast<std::byte>((v >> (8 * i)) & 0xFFu);
}
inline std::uint64_t get_le(const std::byte* p, int n) noexcept {
  std::uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= std::uint64_t(std::to_integer<std::uint8_t>(p[i])) << (8 * i);
  return v;
}

// The header checksum covers every header byte except its own four (offset 12).
inline std::uint32_t header_crc(std::span<const std::byte, FrameHeader::size> b) noexcept {
  return crc32c(b.subspan(16, 24), crc32c(b.subspan(0, 12)));
}

}  // namespace detail

/// Writes `h` into `out`; the header checksum is computed here.
inline void encode_header(const FrameHeader& h, std::span<std::byte, FrameHeader::size> out) noexcept {
  using detail::put_le;
  std::byte* p = out.data();
  put_le(p + 0, FrameHeader::magic, 4);
  put_le(p + 4, FrameHeader::version, 1);
  put_le(p + 5, static_cast<std::uint8_t>(h.kind), 1);
  put_le(p + 6, h.flags, 2);
  put_le(p + 8, h.source, 4);
  put_le(p + 12, 0, 4);
  put_le(p + 16, h.tag, 8);
  put_le(p + 24, h.length, 8);
  put_le(p + 32, h.payload_crc, 4);
  put_le(p + 36, h.piece, 4);
  put_le(p + 12, detail::header_crc(out), 4);
}

/// A header for `payload`, with its checksum when `checksum_payload` is set.
inline FrameHeader make_header(FrameKind kind, std::uint32_t source, std::uint64_t tag,
                               std::span<const std::byte> payload, bool checksum_payload = true) noexcept {
  FrameHeader h;
  h.kind = kind;
  h.source = source;
  h.tag = tag;
  h.length = payload.size();
  if (checksum_payload) {
    h.flags = FrameHeader::flag_payload_crc;
    h.payload_crc = detail::crc32c_payload(payload);
  }
  return h;
}

/// Decodes and validates a header from untrusted bytes: nothing in it is used unless this
/// returns without error. Checks run cheapest first and never read past `in`.
inline DecodedHeader decode_header(std::span<const std::byte> in, const FrameLimits& limits) noexcept {
  using detail::get_le;
  DecodedHeader d;
  if (in.size() < FrameHeader::size) {
    d.error = FrameError::short_input;
    return d;
  }
  const std::byte* p = in.data();
  if (get_le(p, 4) != FrameHeader::magic) d.error = FrameError::bad_magic;
  else if (get_le(p + 4, 1) != FrameHeader::version) d.error = FrameError::bad_version;
  else if (get_le(p + 12, 4) != detail::header_crc(in.first<FrameHeader::size>())) d.error = FrameError::bad_header_checksum;
  if (d.error != FrameError::none) return d;

  const auto kind = static_cast<std::uint8_t>(get_le(p + 5, 1));
  auto& h = d.header;
  h.flags = static_cast<std::uint16_t>(get_le(p + 6, 2));
  h.source = static_cast<std::uint32_t>(get_le(p + 8, 4));
  h.tag = get_le(p + 16, 8);
  h.length = get_le(p + 24, 8);
  h.payload_crc = static_cast<std::uint32_t>(get_le(p + 32, 4));
  h.piece = static_cast<std::uint32_t>(get_le(p + 36, 4));
  const std::uint16_t known = limits.pieces ? FrameHeader::flag_payload_crc | FrameHeader::flag_piece_crc
                                            : FrameHeader::flag_payload_crc;
  const auto checked = h.flags & (FrameHeader::flag_payload_crc | FrameHeader::flag_piece_crc);
  if (kind == 0 || kind > max_frame_kind) d.error = FrameError::bad_kind;
  else if ((h.flags & ~known) != 0 || checked == (FrameHeader::flag_payload_crc | FrameHeader::flag_piece_crc))
    d.error = FrameError::bad_flags;
  else if (h.pieced() ? h.piece < FrameHeader::min_piece : h.piece != 0) d.error = FrameError::bad_reserved;
  else if (h.source >= limits.world_size) d.error = FrameError::unknown_source;
  else if (h.length > limits.max_payload) d.error = FrameError::oversized;
  else if (checked == 0 && h.payload_crc != 0) d.error = FrameError::bad_reserved;
  h.kind = static_cast<FrameKind>(kind);
  return d;
}

/// Checks a payload against its (already validated) header. A pieced payload is not one span
/// (trailers sit between its pieces): its receiver checks each piece with check_piece.
inline FrameError check_payload(const FrameHeader& h, std::span<const std::byte> payload) noexcept {
  if (h.pieced()) return FrameError::bad_flags;
  if (payload.size() != h.length) return FrameError::length_mismatch;
  if ((h.flags & FrameHeader::flag_payload_crc) && detail::crc32c_payload(payload) != h.payload_crc)
    return FrameError::bad_payload_checksum;
  return FrameError::none;
}

/// The CRC state a later piece's checksum starts from: the CRC-32C of the first piece's CRC and
/// the piece's index (little-endian), which ties the piece to its message and its place in it.
inline std::uint32_t piece_crc_seed(std::uint32_t first_piece_crc, std::uint64_t index) noexcept {
  std::array<std::byte, 12> b{};
  detail::put_le(b.data(), first_piece_crc, 4);
  detail::put_le(b.data() + 4, index, 8);
  return crc32c(b);
}

/// The trailer CRC of piece `index` >= 1 of a message whose first piece has CRC `first_piece_crc`.
inline std::uint32_t piece_crc(std::uint32_t first_piece_crc, std::uint64_t index, std::span<const std::byte> piece) noexcept {
  return detail::crc32c_payload(piece, piece_crc_seed(first_piece_crc, index));
}

/// Checks one piece of a pieced payload: `index` 0 against the header, later ones against the
/// trailer that came with them (little-endian, as sent; see piece_crc).
inline FrameError check_piece(const FrameHeader& h, std::uint64_t index, std::span<const std::byte> piece,
                              std::span<const std::byte, FrameHeader::piece_trailer> trailer) noexcept {
  if (!h.pieced() || index >= h.piece_count()) return FrameError::length_mismatch;
  const std::uint64_t begin = index * h.piece;
  if (piece.size() != std::min<std::uint64_t>(h.piece, h.length - begin)) return FrameError::length_mismatch;
  if (index == 0) return detail::crc32c_payload(piece) == h.payload_crc ? FrameError::none : FrameError::bad_payload_checksum;
  const auto want = static_cast<std::uint32_t>(detail::get_le(trailer.data(), 4));
  return piece_crc(h.payload_crc, index, piece) == want ? FrameError::none : FrameError::bad_payload_checksum;
}

/// Decodes a whole frame (header + payload) held in one buffer; on success `payload` views
/// the payload inside `in`. Pieced frames never come in one buffer and are refused here.
inline FrameError decode_frame(std::span<const std::byte> in, FrameLimits limits, FrameHeader& header,
                               std::span<const std::byte>& payload) noexcept {
  limits.pieces = false;
  auto d = decode_header(in, limits);
  if (!d) return d.error;
  if (in.size() - FrameHeader::size != d.header.length) return FrameError::length_mismatch;
  payload = in.subspan(FrameHeader::size);
  if (auto e = check_payload(d.header, payload); e != FrameError::none) return e;
  header = d.header;
  return FrameError::none;
}

POSEIDON_NAMESPACE_END
