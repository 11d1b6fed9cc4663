// Net weight snapshots in Poseidon's own checksummed binary format (docs/snapshot-format.md),
// and the framing, bounded reader and tensor records that solver-state files reuse.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/detail/crc32c_fold.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/shape.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/net/net.hpp>

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

/// Implemented by layers whose output depends on more than their parameters and the context's RNG
/// (a data cursor, a shuffled order), so that a restored solver continues bit-identically. The
/// solver stores save_state() for every such layer in its state file and hands it back on restore.
class ResumableLayer {
 public:
  virtual ~ResumableLayer() = default;
  [[nodiscard]] virtual std::string save_state() const = 0;
  /// Throws Error when the bytes do not fit this layer (another data set, another batch size).
  virtual void load_state(std::string_view bytes) = 0;
};

namespace detail {

// The snapshot checksum: CRC-32C, the same function that guards wire frames.
inline std::uint32_t snapshot_crc32c(const void* data, std::size_t n, std::uint32_t crc = 0) {
  return crc32c_payload(std::span<const std::byte>(static_cast<const std::byte*>(data), n), crc);
}

/// Element types of tensor records.
enum class SnapshotDType : std::uint8_t { f32 = 1, f64 = 2 };

template <class T>
constexpr SnapshotDType snapshot_dtype() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "snapshots hold float or double tensors");
  return std::is_same_v<T, float> ? SnapshotDType::f32 : SnapshotDType::f64;
}

inline constexpr std::size_t snapshot_header_size = 32;
inline constexpr std::uint32_t snapshot_endian_marker = 0x01020304u;
inline constexpr std::size_t snapshot_max_name = 4096;

/// Little-endian writer of a payload (explicit byte order: files move between machines).
class ByteWriter {
 public:
  void u8(std::uint8_t v) { bytes_.push_back(static_cast<char>(v)); }
  void u16(std::uint16_t v) { put_le(v); }
  void u32(std::uint32_t v) { put_le(v); }
  void u64(std::uint64_t v) { put_le(v); }
  void f64(double v) { put_le(std::bit_cast<std::uint64_t>(v)); }
  void str(std::string_view s) {
    u32(static_cast<std::uint32_t>(s.size()));
    bytes_.append(s.data(), s.size());
  }
  void raw(const void* p, std::size_t n) { bytes_.append(static_cast<const char*>(p), n); }

  /// One tensor record: name, index, dtype, shape, count, then the values.
  template <class T>
  void tensor(std::string_view name, std::uint32_t index, const Shape& shape, const std::vector<T>& values) {
    POSEIDON_CHECK(name.size() <= snapshot_max_name, "snapshot: name of ", name.size(), " bytes is too long");
    str(name);
    u32(index);
    u8(static_cast<std::uint8_t>(snapshot_dtype<T>()));
    u8(static_cast<std::uint8_t>(shape.num_axes()));
    u16(0);
    for (int a = 0; a < shape.num_axes(); ++a) u32(static_cast<std::uint32_t>(shape[a]));
    u64(values.size());
    if constexpr (std::endian::native == std::endian::little) {
      raw(values.data(), values.size() * sizeof(T));
    } else {
      for (T v : values) {
        if constexpr (sizeof(T) == 4) u32(std::bit_cast<std::uint32_t>(v));
        else u64(std::bit_cast<std::uint64_t>(v));
      }
    }
  }

  [[nodiscard]] const std::string& bytes() const { return bytes_; }

 private:
  template <class U>
  void put_le(U v) {
    for (std::size_t i = 0; i < sizeof(U); ++i) bytes_.push_back(static_cast<char>((v >> (8 * i)) & 0xFFu));
  }
  std::string bytes_;
};

/// A tensor record as read: values converted to the caller's type on load.
struct TensorRecord {
  std::string name;
  std::uint32_t index = 0;
  SnapshotDType dtype = SnapshotDType::f32;
  Shape shape;
  std::string_view raw;  // count * element size bytes, little-endian

  [[nodiscard]] std::size_t count() const { return shape.count(); }
  [[nodiscard]] const char* dtype_name() const { return dtype == SnapshotDType::f32 ? "f32" : "f64"; }

  /// The values as T (f32 <-> f64 converted).
  template <class T>
  [[nodiscard]] std::vector<T> values() const {
    std::vector<T> out(count());
    const auto* p = reinterpret_cast<const unsigned char*>(raw.data());
    for (std::size_t i = 0; i < out.size(); ++i) {
      if (dtype == SnapshotDType::f32) {
        std::uint32_t u = 0;
        for (std::size_t b = 0; b < 4; ++b) u |= static_cast<std::uint32_t>(p[i * 4 + b]) << (8 * b);
        out[i] = static_cast<T>(std::bit_cast<float>(u));
      } else {
        std::uint64_t u = 0;
        for (std::size_t b = 0; b < 8; ++b) u |= static_cast<std::uint64_t>(p[i * 8 + b]) << (8 * b);
        out[i] = static_cast<T>(std::bit_cast<double>(u));
      }
    }
    return out;
  }
};

/// Bounded little-endian reader over a verified payload: every length is checked against the
/// bytes that remain, so a bad length gives an Error naming the file, never a huge allocation.
class ByteReader {
 public:
  ByteReader(std::string_view bytes, std::string file) : bytes_(bytes), file_(std::move(file)) {}

  std::uint8_t u8(std::string_view what) { return static_cast<std::uint8_t>(get_le<std::uint8_t>(what)); }
  std::uint16_t u16(std::string_view what) { return get_le<std::uint16_t>(what); }
  std::uint32_t u32(std::string_view what) { return get_le<std::uint32_t>(what); }
  std::uint64_t u64(std::string_view what) { return get_le<std::uint64_t>(what); }
  double f64(std::string_view what) { return std::bit_cast<double>(get_le<std::uint64_t>(what)); }
  std::string_view bytes(std::size_t n, std::string_view what) {
    need(n, what);
    std::string_view s = bytes_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  std::string str(std::string_view what, std::size_t max = std::numeric_limits<std::size_t>::max()) {
    const std::uint32_t n = u32(what);
    if (n > max) fail(what, " has length ", n, ", more than the limit ", max);
    return std::string(bytes(n, what));
  }
  /// A count of items each at least `min_item_bytes` long: bounded by what remains.
  std::uint32_t count(std::string_view what, std::size_t min_item_bytes) {
    const std::uint32_t n = u32(what);
    if (min_item_bytes && n > remaining() / min_item_bytes)
      fail(what, " is ", n, " but only ", remaining(), " bytes remain");
    return n;
  }

  TensorRecord tensor(std::string_view what) {
    TensorRecord r;
    r.name = str(what, snapshot_max_name);
    r.index = u32(what);
    const std::uint8_t dt = u8(what);
    if (dt != 1 && dt != 2) fail(what, " '", r.name, "' has unknown element type ", int(dt));
    r.dtype = static_cast<SnapshotDType>(dt);
    const std::uint8_t axes = u8(what);
    if (axes > Shape::max_axes) fail(what, " '", r.name, "' has ", int(axes), " axes; at most ", Shape::max_axes);
    (void)u16(what);
    std::vector<int> dims;
    std::uint64_t count = 1;
    const std::size_t esize = r.dtype == SnapshotDType::f32 ? 4 : 8;
    for (int a = 0; a < axes; ++a) {
      const std::uint32_t d = u32(what);
      if (d > static_cast<std::uint32_t>(std::numeric_limits<int>::max())) fail(what, " '", r.name, "' has dim ", d);
      dims.push_back(static_cast<int>(d));
      // Saturates instead of wrapping: a shape beyond 2^64 elements then fails the count check below.
      if (d && count > std::numeric_limits<std::uint64_t>::max() / d) count = std::numeric_limits<std::uint64_t>::max();
      else count *= d;
    }
    const std::uint64_t n = u64(what);
    if (n != count) fail(what, " '", r.name, "' holds ", n, " values but its shape has ", count);
    if (n > remaining() / esize) fail(what, " '", r.name, "' needs ", n, " values but only ", remaining(), " bytes remain");
    r.shape = Shape(std::move(dims));
    r.raw = bytes(static_cast<std::size_t>(n) * esize, what);
    return r;
  }

  [[nodiscard]] std::size_t remaining() const { return bytes_.size() - pos_; }
  void expect_end(std::string_view what) const {
    if (remaining()) fail(remaining(), " unexpected bytes after the ", what);
  }
  template <class... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    detail::raise(file_, ": corrupt snapshot at payload byte ", pos_, ": ", std::forward<Parts>(parts)...);
  }

 private:
  void need(std::size_t n, std::string_view what) const {
    if (n > remaining()) fail("truncated while reading ", what, " (", n, " bytes needed, ", remaining(), " left)");
  }
  template <class U>
  U get_le(std::string_view what) {
    need(sizeof(U), what);
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < sizeof(U); ++i)
      v |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes_[pos_ + i])) << (8 * i);
    pos_ += sizeof(U);
    return static_cast<U>(v);
  }

  std::string_view bytes_;
  std::string file_;
  std::size_t pos_ = 0;
};

/// Magic numbers: 0x89 (not ASCII, catches text-mode mangling), "PSDN", a kind byte, CR, LF.
inline constexpr std::array<char, 8> weights_magic{'\x89', 'P', 'S', 'D', 'N', 'W', '\r', '\n'};
inline constexpr std::array<char, 8> solver_state_magic{'\x89', 'P', 'S', 'D', 'N', 'S', '\r', '\n'};

/// Writes header + payload to `file` through a temporary and a rename, so a crash never leaves a
/// half-written snapshot under the real name.
inline void write_snapshot_file(const std::filesystem::path& file, const std::array<char, 8>& magic,
                                std::uint32_t version, const std::string& payload) {
  ByteWriter h;
  h.raw(magic.data(), magic.size());
  h.u32(version);
  h.u32(snapshot_endian_marker);
  h.u64(payload.size());
  h.u32(snapshot_crc32c(payload.data(), payload.size()));
  h.u32(snapshot_crc32c(h.bytes().data(), h.bytes().size()));
  std::filesystem::path tmp = file;
  tmp += ".tmp";
  {
    std::ofstream os(tmp, std::ios::binary | std::ios::trunc);
    POSEIDON_CHECK(os, file.string(), ": cannot open ", tmp.string(), " for writing");
    os.write(h.bytes().data(), static_cast<std::streamsize>(h.bytes().size()));
    os.write(payload.data(), static_cast<std::streamsize>(payload.size()));
    os.flush();
    POSEIDON_CHECK(os, file.string(), ": write failed (disk full?)");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, file, ec);
  POSEIDON_CHECK(!ec, file.string(), ": cannot rename ", tmp.string(), " into place: ", ec.message());
}

/// Reads and verifies a snapshot file; returns its payload. `kind` names the file type in errors.
inline std::string read_snapshot_file(const std::filesystem::path& file, const std::array<char, 8>& magic,
                                      std::uint32_t max_version, std::string_view kind, std::uint32_t* version_out = nullptr) {
  const std::string name = file.string();
  std::error_code ec;
  const auto size = std::filesystem::file_size(file, ec);
  POSEIDON_CHECK(!ec, name, ": cannot read ", kind, " file: ", ec.message());
  std::ifstream is(file, std::ios::binary);
  POSEIDON_CHECK(is, name, ": cannot open ", kind, " file");
  // The allocation is the file's real size, never a size read from inside it.
  std::string bytes(static_cast<std::size_t>(size), '\0');
  is.read(bytes.data(), static_cast<std::streamsize>(size));
  POSEIDON_CHECK(static_cast<std::uintmax_t>(is.gcount()) == size, name, ": short read of ", kind, " file");

  POSEIDON_CHECK(bytes.size() >= snapshot_header_size, name, ": not a Poseidon ", kind, " file: ", bytes.size(),
                 " bytes, shorter than the ", snapshot_header_size, "-byte header (truncated?)");
  if (std::memcmp(bytes.data(), magic.data(), 8) != 0) {
    const bool other = std::memcmp(bytes.data(), (magic == weights_magic ? solver_state_magic : weights_magic).data(), 8) == 0;
    detail::raise(name, ": not a Poseidon ", kind, " file (wrong magic number",
                  other ? (magic == weights_magic ? "; it is a solver state file" : "; it is a weights file") : "", ")");
  }
  ByteReader h(std::string_view(bytes).substr(0, snapshot_header_size), name);
  (void)h.bytes(8, "magic");
  const std::uint32_t version = h.u32("version");
  const std::uint32_t marker = h.u32("endianness marker");
  const std::uint64_t payload_size = h.u64("payload size");
  const std::uint32_t payload_crc = h.u32("payload checksum");
  const std::uint32_t header_crc = h.u32("header checksum");
  POSEIDON_CHECK(snapshot_crc32c(bytes.data(), snapshot_header_size - 4) == header_crc, name, ": corrupt ", kind,
                 " file: header checksum mismatch");
  POSEIDON_CHECK(marker == snapshot_endian_marker, name, ": ", kind, " file has endianness marker 0x", std::hex, marker,
                 ", expected 0x", snapshot_endian_marker);
  POSEIDON_CHECK(version >= 1 && version <= max_version, name, ": unsupported ", kind, " format version ", version,
                 " (this build reads versions 1 to ", max_version, ")");
  const std::uint64_t have = bytes.size() - snapshot_header_size;
  POSEIDON_CHECK(payload_size <= have, name, ": truncated ", kind, " file: header announces ", payload_size,
                 " payload bytes, file has ", have);
  POSEIDON_CHECK(payload_size == have, name, ": ", kind, " file has ", have - payload_size,
                 " trailing bytes after the payload");
  bytes.erase(0, snapshot_header_size);
  POSEIDON_CHECK(snapshot_crc32c(bytes.data(), bytes.size()) == payload_crc, name, ": corrupt ", kind,
                 " file: payload checksum mismatch (the file was damaged after it was written)");
  if (version_out) *version_out = version;
  return bytes;
}

}  // namespace detail

inline constexpr std::uint32_t weights_format_version = 1;

/// Writes every layer's blobs (learned parameters and state blobs such as BatchNorm statistics),
/// keyed by layer name and blob index, in the net's element type.
template <class D, class T>
void save_weights(const Net<D, T>& net, const std::filesystem::path& file) {
  detail::ByteWriter w;
  std::uint32_t records = 0;
  for (int i = 0; i < net.num_layers(); ++i) records += static_cast<std::uint32_t>(net.layer(i).blobs().size());
  w.u32(records);
  for (int i = 0; i < net.num_layers(); ++i) {
    const auto& blobs = net.layer(i).blobs();
    for (std::size_t k = 0; k < blobs.size(); ++k)
      w.tensor(net.layer(i).name(), static_cast<std::uint32_t>(k), blobs[k]->shape(), blobs[k]->data_to_host());
  }
  detail::write_snapshot_file(file, detail::weights_magic, weights_format_version, w.bytes());
}

struct WeightsLoadReport {
  std::size_t loaded = 0;                    // tensors copied into the net
  std::vector<std::string> ignored_layers;   // layers in the file the net does not have (Caffe ignores them too)
};

/// Loads weights by layer name and blob index (f32 and f64 files load into either net type).
/// Layers of the file missing from the net are ignored; layers of the net missing from the file
/// keep their values (Caffe's CopyTrainedLayersFrom). Shape and blob-count mismatches throw.
template <class D, class T>
WeightsLoadReport load_weights(Net<D, T>& net, const std::filesystem::path& file) {
  const std::string payload = detail::read_snapshot_file(file, detail::weights_magic, weights_format_version, "weights");
  detail::ByteReader r(payload, file.string());
  const std::uint32_t n = r.count("record count", 16);
  // Parse everything before touching the net, so a bad file leaves it unchanged.
  std::vector<detail::TensorRecord> recs;
  recs.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i) recs.push_back(r.tensor("tensor record"));
  r.expect_end("last tensor record");
  WeightsLoadReport rep;
  for (const auto& rec : recs) {
    const int li = net.layer_index(rec.name);
    if (li < 0) {
      if (rep.ignored_layers.empty() || rep.ignored_layers.back() != rec.name) rep.ignored_layers.push_back(rec.name);
      continue;
    }
    auto& blobs = net.layer(li).blobs();
    POSEIDON_CHECK(rec.index < blobs.size(), file.string(), ": layer '", rec.name, "' has blob ", rec.index,
                   " in the file but only ", blobs.size(), " blobs in net '", net.name(), "'");
    auto& t = *blobs[rec.index];
    POSEIDON_CHECK(t.shape() == rec.shape, file.string(), ": layer '", rec.name, "' blob ", rec.index,
                   ": the file has shape ", rec.shape.str(), " but the net has ", t.shape().str());
  }
  for (const auto& rec : recs) {
    const int li = net.layer_index(rec.name);
    if (li < 0) continue;
    net.layer(li).blobs()[rec.index]->copy_data_from_host(rec.values<T>());
    ++rep.loaded;
  }
  return rep;
}

POSEIDON_NAMESPACE_END
