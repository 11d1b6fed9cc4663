// Message: a protobuf text-format message as a plain tree (fields in order, scalars kept as
// their source text), with typed accessors whose errors name the field and where it was written.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>

#include <charconv>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

/// Where a field was written: "file:line:col", or "<builder>" for messages made in C++.
struct SourceLoc {
  std::string file;
  int line = 0;
  int column = 0;

  [[nodiscard]] std::string str() const {
    if (line == 0) return file.empty() ? std::string("<builder>") : file;
    return detail::concat(file.empty() ? "<text>" : file, ":", line, ":", column);
  }
};

/// A scalar exactly as written: `3`, `-1e-4`, `inf`, `MAX`, `true`, `"conv1"` (unescaped).
struct Scalar {
  enum class Kind { number, identifier, string };
  std::string text;
  Kind kind = Kind::number;
};

class Message;

/// One `name: value` or `name { ... }` occurrence.
struct Field {
  std::string name;
  SourceLoc loc;
  bool is_message = false;
  Scalar scalar;                     // when !is_message
  std::shared_ptr<Message> message;  // when is_message (shared: Messages copy cheaply)
};

class Message {
 public:
  Message() = default;
  explicit Message(SourceLoc loc) : loc_(std::move(loc)) {}

  // ---- building (the parser and C++ users) ---------------------------------
  /// Appends a field as it stands (name, location and value), e.g. one taken from another
  /// message; child messages are immutable once added, so they are shared, not copied.
  Message& add(Field f) {
    fields_.push_back(std::move(f));
    return *this;
  }
  Message& add(std::string name, Scalar value, SourceLoc loc = {}) {
    Field f;
    f.name = std::move(name);
    f.loc = std::move(loc);
    f.scalar = std::move(value);
    fields_.push_back(std::move(f));
    return *this;
  }
  /// Adds a number, bool, enum identifier (pass Scalar) or string field.
  template <class V>
    requires(std::is_arithmetic_v<V> || std::is_convertible_v<V, std::string_view>)
  Message& set(std::string name, const V& value) {
    if constexpr (std::is_same_v<V, bool>) {
      return add(std::move(name), Scalar{value ? "true" : "false", Scalar::Kind::identifier});
    } else if constexpr (std::is_arithmetic_v<V>) {
      return add(std::move(name), Scalar{detail::concat(+value), Scalar::Kind::number});
    } else {
      return add(std::move(name), Scalar{std::string(std::string_view(value)), Scalar::Kind::string});
    }
  }
  /// Adds an enum value (an identifier such as MAX or TRAIN).
  Message& set_enum(std::string name, std::string identifier) {
    return add(std::move(name), Scalar{std::move(identifier), Scalar::Kind::identifier});
  }
  Message& add(std::string name, Message child, SourceLoc loc = {}) {
    Field f;
    f.name = std::move(name);
    f.loc = loc.line ? std::move(loc) : child.loc_;
    f.is_message = true;
    f.message = std::make_shared<Message>(std::move(child));
    fields_.push_back(std::move(f));
    return *this;
  }

  // ---- reading -------------------------------------------------------------
  [[nodiscard]] const std::vector<Field>& fields() const { return fields_; }
  [[nodiscard]] const SourceLoc& loc() const { return loc_; }
  [[nodiscard]] bool empty() const { return fields_.empty(); }

  [[nodiscard]] std::size_t count(std::string_view name) const {
    std::size_t n = 0;
    for (const auto& f : fields_) n += (f.name == name);
    return n;
  }
  [[nodiscard]] bool has(std::string_view name) const { return find(name) != nullptr; }

  /// The last occurrence of a field (protobuf semantics for a repeated singular field).
  [[nodiscard]] const Field* find(std::string_view name) const {
    for (auto it = fields_.rbegin(); it != fields_.rend(); ++it)
      if (it->name == name) return &*it;
    return nullptr;
  }

  /// A sub-message; an empty message when absent (protobuf default semantics).
  [[nodiscard]] const Message& child(std::string_view name) const {
    static const Message empty_message;
    const Field* f = find(name);
    if (!f) return empty_message;
    require_message(*f);
    return *f->message;
  }
  /// Every occurrence of a repeated sub-message, in order.
  [[nodiscard]] std::vector<const Message*> children(std::string_view name) const {
    std::vector<const Message*> out;
    for (const auto& f : fields_)
      if (f.name == name) {
        require_message(f);
        out.push_back(f.message.get());
      }
    return out;
  }

  /// A scalar field converted to V (integers, floating point, bool, std::string),
  /// or `fallback` when absent. Wrong types and out-of-range values throw Error.
  template <class V>
  [[nodiscard]] V get(std::string_view name, V fallback) const {
    const Field* f = find(name);
    return f ? convert<V>(*f) : fallback;
  }
  [[nodiscard]] std::string get(std::string_view name, const char* fallback) const {
    return get<std::string>(name, std::string(fallback));
  }
  /// A scalar field that must be present.
  template <class V>
  [[nodiscard]] V required(std::string_view name, std::string_view context = {}) const {
    const Field* f = find(name);
    if (!f)
      detail::raise(context.empty() ? std::string_view("message") : context, " at ", loc_.str(),
                    ": missing required field '", name, "'");
    return convert<V>(*f);
  }
  /// Every occurrence of a repeated scalar field, in order.
  template <class V>
  [[nodiscard]] std::vector<V> get_all(std::string_view name) const {
    std::vector<V> out;
    for (const auto& f : fields_)
      if (f.name == name) out.push_back(convert<V>(f));
    return out;
  }
  /// An enum field whose value must be one of `allowed`; returns its index in `allowed`.
  /// Integers are accepted too (Caffe's V1 files and some tools write enum numbers).
  [[nodiscard]] int get_enum(std::string_view name, std::initializer_list<std::string_view> allowed,
                             int fallback) const {
    const Field* f = find(name);
    return f ? enum_index(*f, allowed) : fallback;
  }
  [[nodiscard]] int enum_index(const Field& f, std::initializer_list<std::string_view> allowed) const {
    require_scalar(f);
    int i = 0;
    for (auto a : allowed) {
      if (f.scalar.text == a) return i;
      ++i;
    }
    if (f.scalar.kind == Scalar::Kind::number) {
      const int v = convert<int>(f);
      if (v >= 0 && v < static_cast<int>(allowed.size())) return v;
    }
    std::string list;
    for (auto a : allowed) list += detail::concat(list.empty() ? "" : ", ", a);
    detail::raise(f.loc.str(), ": field '", f.name, "' has value '", f.scalar.text,
                  "'; expected one of: ", list);
  }

  /// Throws, naming the field and its location, when a field is not in `known`.
  /// `context` names the enclosing thing (e.g. "layer 'conv1' convolution_param").
  void check_fields(std::initializer_list<std::string_view> known, std::string_view context) const {
    for (const auto& f : fields_) {
      bool ok = false;
      for (auto k : known) ok = ok || (f.name == k);
      if (!ok) detail::raise(f.loc.str(), ": unknown field '", f.name, "' in ", context);
    }
  }

  /// Converts one field's scalar to V; errors name the field and location.
  template <class V>
  [[nodiscard]] static V convert(const Field& f) {
    require_scalar(f);
    const std::string& t = f.scalar.text;
    if constexpr (std::is_same_v<V, std::string>) {
      return t;
    } else if constexpr (std::is_same_v<V, bool>) {
      if (t == "true" || t == "True" || t == "t" || t == "1") return true;
      if (t == "false" || t == "False" || t == "f" || t == "0") return false;
      detail::raise(f.loc.str(), ": field '", f.name, "' expects true or false, got '", t, "'");
    } else if constexpr (std::is_integral_v<V>) {
      if (f.scalar.kind == Scalar::Kind::number) {
        V v{};
        const char* b = t.data();
        const char* e = t.data() + t.size();
        int base = 10;
        const bool neg = (b != e && *b == '-');
        const char* digits = neg ? b + 1 : b;
        if (e - digits > 2 && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X')) base = 16;
        if (base == 16) {
          // from_chars takes no 0x prefix nor sign before it: parse the magnitude, then negate.
          std::make_unsigned_t<V> mag{};
          auto r = std::from_chars(digits + 2, e, mag, 16);
          if (r.ec == std::errc() && r.ptr == e) {
            if (!neg && mag <= static_cast<std::make_unsigned_t<V>>(std::numeric_limits<V>::max()))
              return static_cast<V>(mag);
            if (neg && std::is_signed_v<V> &&
                mag <= static_cast<std::make_unsigned_t<V>>(std::numeric_limits<V>::max()))
              return static_cast<V>(-static_cast<V>(mag));
          }
        } else {
          auto r = std::from_chars(b, e, v, 10);
          if (r.ec == std::errc() && r.ptr == e) return v;
          if (r.ec == std::errc::result_out_of_range)
            detail::raise(f.loc.str(), ": field '", f.name, "' value ", t, " is out of range");
        }
      }
      detail::raise(f.loc.str(), ": field '", f.name, "' expects an integer, got '", t, "'");
    } else if constexpr (std::is_floating_point_v<V>) {
      if (f.scalar.kind == Scalar::Kind::number || f.scalar.kind == Scalar::Kind::identifier) {
        std::string_view s = t;
        bool neg = false;
        if (!s.empty() && (s.front() == '-' || s.front() == '+')) {
          neg = s.front() == '-';
          s.remove_prefix(1);
        }
        // protobuf's text format takes these words in any case ("Inf", "NAN").
        auto word = [&s](std::string_view w) {
          if (s.size() != w.size()) return false;
          for (std::size_t i = 0; i < s.size(); ++i)
            if ((s[i] | 0x20) != w[i]) return false;
          return true;
        };
        if (word("inf") || word("infinity"))
          return neg ? -std::numeric_limits<V>::infinity() : std::numeric_limits<V>::infinity();
        if (word("nan")) return std::numeric_limits<V>::quiet_NaN();
        if (!s.empty() && (s.back() == 'f' || s.back() == 'F')) s.remove_suffix(1);  // 1.0f
        double v = 0;
        auto r = std::from_chars(s.data(), s.data() + s.size(), v);
        if (r.ec == std::errc() && r.ptr == s.data() + s.size() && !s.empty())
          return static_cast<V>(neg ? -v : v);
        if (r.ec == std::errc::result_out_of_range)
          detail::raise(f.loc.str(), ": field '", f.name, "' value ", t, " is out of range");
      }
      detail::raise(f.loc.str(), ": field '", f.name, "' expects a number, got '", t, "'");
    } else {
      static_assert(sizeof(V) == 0, "Message::get supports integers, floating point, bool and std::string");
    }
  }

 private:
  static void require_scalar(const Field& f) {
    if (f.is_message)
      detail::raise(f.loc.str(), ": field '", f.name, "' is a message; expected a value ('", f.name,
                    ": ...')");
  }
  static void require_message(const Field& f) {
    if (!f.is_message)
      detail::raise(f.loc.str(), ": field '", f.name, "' is a value; expected a message ('", f.name,
                    " { ... }')");
  }

  SourceLoc loc_;
  std::vector<Field> fields_;
};

POSEIDON_NAMESPACE_END
