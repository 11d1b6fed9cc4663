// Bounds-checked little-endian writer and reader for the payloads of control frames (hello,
// roster, abort): the reader never reads past its input and reports any overrun once, at the end.
#pragma once

#include <poseidon/core/config.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

POSEIDON_NAMESPACE_BEGIN
namespace detail {

class WireWriter {
 public:
  void u32(std::uint32_t v) { put(v, 4); }
  void u64(std::uint64_t v) { put(v, 8); }
  void bytes(std::span<const std::byte> b) {
    u32(static_cast<std::uint32_t>(b.size()));
    out_.insert(out_.end(), b.begin(), b.end());
  }
  void str(std::string_view s) { bytes(std::as_bytes(std::span(s.data(), s.size()))); }
  void raw(std::span<const std::byte> b) { out_.insert(out_.end(), b.begin(), b.end()); }
  [[nodiscard]] const std::vector<std::byte>& data() const noexcept { return out_; }
  std::vector<std::byte> take() noexcept { return std::move(out_); }

 private:
  void put(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFFu));
  }
  std::vector<std::byte> out_;
};

class WireReader {
 public:
  explicit WireReader(std::span<const std::byte> in) noexcept : in_(in) {}
  std::uint32_t u32() noexcept { return static_cast<std::uint32_t>(get(4)); }
  std::uint64_t u64() noexcept { return get(8); }
  // Variable-length fields carry their own bound so a hostile length cannot make us allocate.
  std::vector<std::byte> bytes(std::size_t max_len) {
    const std::size_t n = u32();
    if (!ok_ || n > max_len || n > in_.size() - pos_) {
      ok_ = false;
      return {};
    }
    std::vector<std::byte> v(in_.begin() + static_cast<std::ptrdiff_t>(pos_),
                             in_.begin() + static_cast<std::ptrdiff_t>(pos_ + n));
    pos_ += n;
    return v;
  }
  std::string str(std::size_t max_len) {
    auto b = bytes(max_len);
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
  }
  std::span<const std::byte> raw(std::size_t n) noexcept {
    if (!ok_ || n > in_.size() - pos_) {
      ok_ = false;
      return {};
    }
    auto s = in_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  /// True when every read stayed in bounds and the input was consumed exactly.
  [[nodiscard]] bool ok_and_done() const noexcept { return ok_ && pos_ == in_.size(); }
  [[nodiscard]] bool ok() const noexcept { return ok_; }

 private:
  std::uint64_t get(int n) noexcept {
    if (!ok_ || in_.size() - pos_ < static_cast<std::size_t>(n)) {
      ok_ = false;
      return 0;
    }
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= std::uint64_t(std::to_integer<std::uint8_t>(in_[pos_ + i])) << (8 * i);
    pos_ += static_cast<std::size_t>(n);
    return v;
  }
  std::span<const std::byte> in_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace detail
POSEIDON_NAMESPACE_END
