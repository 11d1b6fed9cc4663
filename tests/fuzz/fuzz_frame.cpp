// libFuzzer target for everything that parses bytes from the network: the frame header and
// payload checks, and the payloads of the control frames (challenge, hello, roster, abort).
#include <poseidon/comm/frame.hpp>
#include <poseidon/comm/rendezvous.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

namespace pd = poseidon;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // The first byte picks the limits, so small worlds and tight payload caps get explored too.
  const std::uint32_t world = 1u + (data[0] & 0x0Fu);
  const pd::FrameLimits limits{std::uint64_t{1} << (data[0] >> 4), world};
  const auto in = std::as_bytes(std::span(data + 1, size - 1));
  pd::FrameHeader h;
  std::span<const std::byte> payload;
  if (pd::decode_frame(in, limits, h, payload) == pd::FrameError::none) {
    // Whatever was accepted must honour the limits it was checked against.
    if (h.length > limits.max_payload || h.source >= world || payload.size() != h.length) std::abort();
    std::array<std::byte, pd::FrameHeader::size> again{};
    pd::encode_header(h, again);
    if (!std::equal(again.begin(), again.end(), in.begin())) std::abort();  // decode is exact
  }
  // As the fabric receiver reads it: pieced frames allowed, each piece checked on its own. The
  // bytes after the header stand in for the pieces (every one but the first with a trailer).
  const auto d = pd::decode_header(in, {~std::uint64_t{0}, 1u << 20, true});
  if (d && d.header.pieced()) {
    if (d.header.piece < pd::FrameHeader::min_piece || d.header.piece_count() == 0) std::abort();
    const auto rest = in.subspan(pd::FrameHeader::size);
    const std::uint64_t pieces = std::min<std::uint64_t>(d.header.piece_count(), 4);
    std::size_t at = 0;
    for (std::uint64_t i = 0; i < pieces && at < rest.size(); ++i) {
      const std::uint64_t want = std::min<std::uint64_t>(d.header.piece, d.header.length - i * d.header.piece);
      const auto len = static_cast<std::size_t>(std::min<std::uint64_t>(want, rest.size() - at));
      std::array<std::byte, pd::FrameHeader::piece_trailer> trailer{};
      const auto t = rest.subspan(at + len, std::min(trailer.size(), rest.size() - at - len));
      std::copy(t.begin(), t.end(), trailer.begin());
      const auto e = pd::check_piece(d.header, i, rest.subspan(at, len), trailer);
      if (e == pd::FrameError::none && len != want) std::abort();  // a short piece never passes
      at += len + t.size();
    }
  }
  // Control payloads arrive inside frames; fuzz them bare as well, so the parsers see any bytes.
  const auto body = payload.empty() ? in : payload;
  (void)pd::detail::parse_challenge(body);
  (void)pd::detail::parse_hello(body);
  (void)pd::detail::parse_roster(body, world);
  (void)pd::detail::parse_abort(body, world);
  return 0;
}
