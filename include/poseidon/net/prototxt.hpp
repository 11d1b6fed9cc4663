// Caffe's protobuf text format ("prototxt"): a reader that turns text into Message trees with
// file:line:col in every error, and a printer that writes a Message back as text.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/message.hpp>

#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

/// Bounds on what the reader accepts, so that a hostile or accidental input (a binary
/// file, a generated monster) fails with an Error instead of exhausting stack or memory.
/// Real Caffe files are far below both: ResNet-152 is ~10 levels deep and under 1 MiB.
struct PrototxtLimits {
  std::size_t max_depth = 100;             ///< nested messages below the top level
  std::uintmax_t max_bytes = 64u << 20;    ///< size of the text (or of the file read)
};

namespace detail {

inline constexpr bool proto_ident_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
inline constexpr bool proto_ident_char(char c) { return proto_ident_start(c) || (c >= '0' && c <= '9'); }
inline constexpr bool proto_digit(char c) { return c >= '0' && c <= '9'; }
inline constexpr bool proto_hex_digit(char c) {
  return proto_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
inline constexpr int proto_hex_value(char c) {
  return proto_digit(c) ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : c - 'A' + 10;
}

inline bool proto_is_identifier(std::string_view s) {
  if (s.empty() || !proto_ident_start(s.front())) return false;
  for (char c : s)
    if (!proto_ident_char(c)) return false;
  return true;
}

/// inf, infinity and nan (any case) are float values in protobuf's text format, so the
/// reader stores them as numbers: Message::get<float> and enum lookups both still work.
inline bool proto_is_float_word(std::string_view w) {
  auto eq = [](std::string_view a, std::string_view lower) {
    if (a.size() != lower.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      char c = a[i];
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      if (c != lower[i]) return false;
    }
    return true;
  };
  return eq(w, "inf") || eq(w, "infinity") || eq(w, "nan");
}

/// Result of scanning one number token: where it ends, and why it is invalid (or null).
struct ProtoNumberScan {
  std::size_t end = 0;
  const char* error = nullptr;
};

/// Scans a number starting at p: -?(0x hex+ | digits[.digits][e[+-]digits][f] | .digits... |
/// inf/infinity/nan after '-'). Shared by the reader and the printer so they agree exactly.
inline ProtoNumberScan proto_scan_number(std::string_view s, std::size_t p) {
  const std::size_t n = s.size();
  std::size_t i = p;
  if (i < n && s[i] == '-') {
    ++i;
    if (i < n && proto_ident_start(s[i])) {
      std::size_t j = i;
      while (j < n && proto_ident_char(s[j])) ++j;
      if (proto_is_float_word(s.substr(i, j - i))) return {j, nullptr};
      return {j, "expected a number after '-'"};
    }
    if (i >= n || !(proto_digit(s[i]) || s[i] == '.')) return {i, "expected a number after '-'"};
  }
  if (i + 1 < n && s[i] == '0' && (s[i + 1] == 'x' || s[i + 1] == 'X')) {
    i += 2;
    const std::size_t first = i;
    while (i < n && proto_hex_digit(s[i])) ++i;
    if (i == first) return {i, "hexadecimal number without digits"};
  } else {
    const std::size_t int_begin = i;
    while (i < n && proto_digit(s[i])) ++i;
    const std::size_t int_digits = i - int_begin;
    std::size_t frac_digits = 0;
    bool is_float = false;
    if (i < n && s[i] == '.') {
      is_float = true;
      const std::size_t frac_begin = ++i;
      while (i < n && proto_digit(s[i])) ++i;
      frac_digits = i - frac_begin;
    }
    if (int_digits == 0 && frac_digits == 0) return {i, "a number needs digits"};
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
      is_float = true;
      ++i;
      if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
      const std::size_t exp_begin = i;
      while (i < n && proto_digit(s[i])) ++i;
      if (i == exp_begin) return {i, "exponent without digits"};
    }
    // protobuf reads 017 as octal 15; silently reading 17 would be worse than refusing.
    if (!is_float && int_digits > 1 && s[int_begin] == '0')
      return {i, "leading zeros are not allowed (octal numbers are not supported)"};
    if (i < n && (s[i] == 'f' || s[i] == 'F')) ++i;
  }
  if (i < n && (proto_ident_char(s[i]) || s[i] == '.')) return {i, "unexpected character in number"};
  return {i, nullptr};
}

/// True when text, written as is, reads back as the same number token.
inline bool proto_is_number_text(std::string_view t) {
  if (t.empty()) return false;
  if (proto_is_float_word(t)) return true;
  if (!(t.front() == '-' || t.front() == '.' || proto_digit(t.front()))) return false;
  const ProtoNumberScan r = proto_scan_number(t, 0);
  return r.error == nullptr && r.end == t.size();
}

inline std::string proto_describe_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (c == '\n') return "end of line";
  if (u >= 0x20 && u < 0x7f) return std::string("'") + c + "'";
  static constexpr char hex[] = "0123456789ABCDEF";
  return std::string("byte 0x") + hex[u >> 4] + hex[u & 15];
}

/// A name as it appears inside an error message, cut short so that a megabyte-long
/// identifier cannot make a megabyte-long error.
inline std::string proto_quote_name(std::string_view name) {
  constexpr std::size_t max_len = 64;
  if (name.size() <= max_len) return detail::concat("'", name, "'");
  return detail::concat("'", name.substr(0, max_len), "...'");
}

/// Appends s as the inside of a double-quoted literal; control bytes become octal escapes
/// so that the output is one line per field and safe to paste. UTF-8 passes through.
inline void proto_append_escaped(std::string& out, std::string_view s) {
  for (char c : s) {
    switch (c) {
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '"': out += "\\\""; break;
      case '\'': out += "\\'"; break;
      case '\\': out += "\\\\"; break;
      default: {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) {
          out += '\\';
          out += static_cast<char>('0' + (u >> 6));
          out += static_cast<char>('0' + ((u >> 3) & 7));
          out += static_cast<char>('0' + (u & 7));
        } else {
          out += c;
        }
      }
    }
  }
}

inline void proto_append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

/// The reader. It keeps its own stack of open messages instead of recursing, so depth is
/// bounded by PrototxtLimits::max_depth and never by the thread's stack; every byte is
/// looked at a bounded number of times, so parsing is linear in the input.
class PrototxtParser {
 public:
  PrototxtParser(std::string_view text, std::string_view file, const PrototxtLimits& limits)
      : s_(text), file_(file.empty() ? std::string_view("<text>") : file), limits_(limits) {}

  Message parse() {
    if (s_.size() > limits_.max_bytes)
      detail::raise(file_, ": input of ", s_.size(), " bytes is larger than the limit of ", limits_.max_bytes,
            " bytes (PrototxtLimits::max_bytes)");
    // A UTF-8 byte order mark, as some Windows editors write, is not part of the text.
    if (s_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = line_start_ = 3;

    std::vector<Frame> stack;
    stack.emplace_back();
    stack.back().msg = Message(SourceLoc{file_, 1, 1});
    for (;;) {
      skip_space();
      Frame& f = stack.back();
      if (f.list != ListState::none) {
        step_list(stack);
        continue;
      }
      if (at_end()) {
        if (stack.size() == 1) break;
        fail(f.open, "message ", proto_quote_name(f.name), " is never closed: expected '", f.close,
             "', found end of input");
      }
      const char c = s_[pos_];
      if (c == '}' || c == '>') {
        close_message(stack);
        continue;
      }
      if (!proto_ident_start(c)) fail(here(), "expected a field name, found ", describe(pos_));
      const Pos name_pos = here();
      std::string name = read_identifier();
      SourceLoc loc = make_loc(name_pos);
      skip_space();
      if (!at_end() && s_[pos_] == ':') {
        ++pos_;
        skip_space();
        if (!at_end() && s_[pos_] == '[') {
          f.list = ListState::first;
          f.list_open = here();
          f.list_name = std::move(name);
          f.list_loc = std::move(loc);
          ++pos_;
          continue;
        }
        read_value(stack, name, std::move(loc), false);
      } else if (!at_end() && (s_[pos_] == '{' || s_[pos_] == '<')) {
        open_message(stack, std::move(name), std::move(loc));
      } else {
        fail(here(), "expected ':' or '{' after field name ", proto_quote_name(name), ", found ",
             describe(pos_));
      }
    }
    return std::move(stack.front().msg);
  }

 private:
  struct Pos {
    std::size_t offset = 0;
    int line = 0;
    int column = 0;
  };
  enum class ListState { none, first, element, next };
  /// One open message: the message being filled, how it is named in its parent, and the
  /// state of a `name: [ ... ]` list being read inside it.
  struct Frame {
    Message msg;
    std::string name;
    SourceLoc loc;
    Pos open;
    char close = 0;
    ListState list = ListState::none;
    std::string list_name;
    SourceLoc list_loc;
    Pos list_open;
  };

  [[nodiscard]] bool at_end() const { return pos_ >= s_.size(); }

  [[nodiscard]] Pos here() const {
    // Saturate rather than overflow when a caller raised max_bytes beyond 2 GiB.
    const std::size_t col = pos_ - line_start_ + 1;
    return {pos_, line_, col > static_cast<std::size_t>(INT_MAX) ? INT_MAX : static_cast<int>(col)};
  }
  [[nodiscard]] SourceLoc make_loc(const Pos& p) const { return SourceLoc{file_, p.line, p.column}; }

  template <class... Parts>
  [[noreturn]] void fail(const Pos& p, Parts&&... parts) const {
    detail::raise(file_, ":", p.line, ":", p.column, ": ", std::forward<Parts>(parts)...);
  }

  /// What the reader saw at p, for "found ..." in errors: a word, a character or a byte.
  [[nodiscard]] std::string describe(std::size_t p) const {
    if (p >= s_.size()) return "end of input";
    const char c = s_[p];
    if (c == '"' || c == '\'') return "a string";
    if (proto_ident_char(c) || c == '-' || c == '.') {
      constexpr std::size_t max_len = 40;
      std::size_t e = p + 1;
      while (e < s_.size() && e - p < max_len &&
             (proto_ident_char(s_[e]) || s_[e] == '.' || s_[e] == '+' || s_[e] == '-'))
        ++e;
      const bool cut = e < s_.size() && proto_ident_char(s_[e]);
      return detail::concat("'", s_.substr(p, e - p), cut ? "...'" : "'");
    }
    return proto_describe_char(c);
  }

  void skip_space() {
    const std::size_t n = s_.size();
    while (pos_ < n) {
      const char c = s_[pos_];
      if (c == '\n') {
        ++pos_;
        if (line_ < INT_MAX) ++line_;
        line_start_ = pos_;
      } else if (c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f') {
        ++pos_;
      } else if (c == '#') {
        const std::size_t nl = s_.find('\n', pos_);
        pos_ = nl == std::string_view::npos ? n : nl;
      } else {
        break;
      }
    }
  }

  /// Fields may be followed by one ',' or ';' (protobuf accepts both).
  void skip_separator() {
    skip_space();
    if (!at_end() && (s_[pos_] == ',' || s_[pos_] == ';')) ++pos_;
  }

  std::string read_identifier() {
    const std::size_t b = pos_;
    while (pos_ < s_.size() && proto_ident_char(s_[pos_])) ++pos_;
    return std::string(s_.substr(b, pos_ - b));
  }

  void open_message(std::vector<Frame>& stack, std::string name, SourceLoc loc) {
    const Pos open = here();
    if (stack.size() > limits_.max_depth)
      fail(open, "messages nested deeper than ", limits_.max_depth,
           " levels (PrototxtLimits::max_depth) at field ", proto_quote_name(name));
    const char close = s_[pos_] == '{' ? '}' : '>';
    ++pos_;
    Frame child;
    child.msg = Message(loc);
    child.name = std::move(name);
    child.loc = std::move(loc);
    child.open = open;
    child.close = close;
    stack.push_back(std::move(child));
  }

  void close_message(std::vector<Frame>& stack) {
    const Pos p = here();
    const char c = s_[pos_];
    if (stack.size() == 1) fail(p, "unexpected '", c, "': no message is open here");
    Frame& f = stack.back();
    if (c != f.close)
      fail(p, "expected '", f.close, "' to close ", proto_quote_name(f.name), " (opened at line ",
           f.open.line, ", column ", f.open.column, "), found '", c, "'");
    ++pos_;
    Frame done = std::move(f);
    stack.pop_back();
    Frame& parent = stack.back();
    parent.msg.add(std::move(done.name), std::move(done.msg), std::move(done.loc));
    if (parent.list == ListState::none) skip_separator();
  }

  /// A value after `name:` or inside a list: a message (pushed on the stack) or a scalar.
  void read_value(std::vector<Frame>& stack, const std::string& name, SourceLoc loc, bool in_list) {
    if (at_end())
      fail(here(), "expected a value for field ", proto_quote_name(name), ", found end of input");
    const char c = s_[pos_];
    if (c == '{' || c == '<') {
      open_message(stack, name, std::move(loc));
      return;
    }
    Scalar value = read_scalar(name);
    stack.back().msg.add(name, std::move(value), std::move(loc));
    if (!in_list) skip_separator();
  }

  void step_list(std::vector<Frame>& stack) {
    Frame& f = stack.back();
    if (at_end())
      fail(f.list_open, "list of ", proto_quote_name(f.list_name),
           " is never closed: expected ']', found end of input");
    const char c = s_[pos_];
    if (f.list == ListState::next) {
      if (c == ',') {
        ++pos_;
        f.list = ListState::element;
      } else if (c == ']') {
        ++pos_;
        f.list = ListState::none;
        skip_separator();
      } else {
        fail(here(), "expected ',' or ']' in the list of ", proto_quote_name(f.list_name), ", found ",
             describe(pos_));
      }
      return;
    }
    if (f.list == ListState::first && c == ']') {
      ++pos_;
      f.list = ListState::none;
      skip_separator();
      return;
    }
    if (c == '[' || c == ']' || c == ',')
      fail(here(), "expected a value in the list of ", proto_quote_name(f.list_name), ", found ",
           describe(pos_));
    // Set before read_value: pushing a child message may move this frame.
    f.list = ListState::next;
    const std::string name = f.list_name;
    read_value(stack, name, f.list_loc, true);
  }

  Scalar read_scalar(const std::string& field) {
    const char c = s_[pos_];
    if (c == '"' || c == '\'') {
      std::string text = read_string_literal();
      // Adjacent literals concatenate, as in C: "a" "b" is "ab".
      for (;;) {
        skip_space();
        if (at_end() || (s_[pos_] != '"' && s_[pos_] != '\'')) break;
        text += read_string_literal();
      }
      return Scalar{std::move(text), Scalar::Kind::string};
    }
    if (c == '-' || c == '.' || proto_digit(c)) {
      const Pos start = here();
      const ProtoNumberScan r = proto_scan_number(s_, pos_);
      if (r.error) {
        if (c == '-' && (r.end == pos_ + 1 || proto_ident_start(s_[pos_ + 1])))
          fail(start, "expected a number after '-' for field ", proto_quote_name(field), ", found ",
               describe(pos_ + 1));
        fail(start, "invalid number ", describe(pos_), " for field ", proto_quote_name(field), ": ",
             r.error);
      }
      std::string text(s_.substr(pos_, r.end - pos_));
      pos_ = r.end;
      return Scalar{std::move(text), Scalar::Kind::number};
    }
    if (proto_ident_start(c)) {
      std::string word = read_identifier();
      const auto kind = proto_is_float_word(word) ? Scalar::Kind::number : Scalar::Kind::identifier;
      return Scalar{std::move(word), kind};
    }
    fail(here(), "expected a value for field ", proto_quote_name(field), ", found ", describe(pos_));
  }

  /// One quoted literal with C escapes. Literals may not span lines (as in protobuf), which
  /// also keeps line counting in skip_space alone.
  std::string read_string_literal() {
    const Pos start = here();
    const char quote = s_[pos_++];
    const std::size_t n = s_.size();
    auto unterminated = [&](std::size_t at) {
      fail(start, "unterminated string: expected closing ", quote, " before end of ",
           at >= n ? "input" : "line");
    };
    std::string out;
    for (;;) {
      std::size_t i = pos_;
      while (i < n && s_[i] != quote && s_[i] != '\\' && s_[i] != '\n') ++i;
      out.append(s_.data() + pos_, i - pos_);
      pos_ = i;
      if (i >= n || s_[i] == '\n') unterminated(i);
      if (s_[i] == quote) {
        ++pos_;
        return out;
      }
      const Pos esc = here();
      ++pos_;
      if (pos_ >= n || s_[pos_] == '\n') unterminated(pos_);
      const char e = s_[pos_++];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case '\\': out += '\\'; break;
        case '"': out += '"'; break;
        case '\'': out += '\''; break;
        case '?': out += '?'; break;
        case 'x':
        case 'X': {
          int v = 0;
          int digits = 0;
          while (digits < 2 && pos_ < n && proto_hex_digit(s_[pos_])) {
            v = v * 16 + proto_hex_value(s_[pos_++]);
            ++digits;
          }
          if (digits == 0) fail(esc, "escape '\\", e, "' must be followed by hex digits");
          out += static_cast<char>(v);
          break;
        }
        case 'u':
        case 'U': {
          const int want = e == 'u' ? 4 : 8;
          std::uint32_t cp = 0;
          for (int k = 0; k < want; ++k) {
            if (pos_ >= n || !proto_hex_digit(s_[pos_]))
              fail(esc, "escape '\\", e, "' must be followed by ", want, " hex digits");
            cp = cp * 16 + static_cast<std::uint32_t>(proto_hex_value(s_[pos_++]));
          }
          if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            fail(esc, "escape '\\", e, "' names no Unicode character");
          proto_append_utf8(out, cp);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            int v = e - '0';
            for (int k = 0; k < 2 && pos_ < n && s_[pos_] >= '0' && s_[pos_] <= '7'; ++k)
              v = v * 8 + (s_[pos_++] - '0');
            if (v > 255)
              fail(esc, "octal escape '\\", s_.substr(esc.offset + 1, pos_ - esc.offset - 1),
                   "' is out of range (largest is \\377)");
            out += static_cast<char>(v);
          } else {
            const auto u = static_cast<unsigned char>(e);
            if (u > 0x20 && u < 0x7f) fail(esc, "invalid escape sequence '\\", e, "' in string");
            fail(esc, "invalid escape sequence: '\\' followed by ", proto_describe_char(e), " in string");
          }
      }
    }
  }

  std::string_view s_;
  std::string file_;
  PrototxtLimits limits_;
  std::size_t pos_ = 0;
  int line_ = 1;
  std::size_t line_start_ = 0;
};

}  // namespace detail

/// Parses a whole protobuf text-format message body (a Caffe net, solver or any prototxt).
/// Errors throw poseidon::Error starting with "filename:line:col: ".
[[nodiscard]] inline Message parse_prototxt(std::string_view text, std::string_view filename = "<text>",
                                            const PrototxtLimits& limits = {}) {
  return detail::PrototxtParser(text, filename, limits).parse();
}

/// Reads and parses a prototxt file; the path is the file name of every location and error.
[[nodiscard]] inline Message read_prototxt(const std::filesystem::path& file,
                                           const PrototxtLimits& limits = {}) {
  namespace fs = std::filesystem;
  const std::string name = file.string();
  std::error_code ec;
  const fs::file_status st = fs::status(file, ec);
  if (!fs::exists(st))
    detail::raise("cannot read prototxt file '", name, "': ",
                  ec ? ec.message() : std::string("no such file or directory"));
  if (fs::is_directory(st)) detail::raise("cannot read prototxt file '", name, "': it is a directory");
  std::string text;
  if (fs::is_regular_file(st)) {
    const std::uintmax_t size = fs::file_size(file, ec);
    if (!ec && size > limits.max_bytes)
      detail::raise("cannot read prototxt file '", name, "': its ", size,
                    " bytes exceed the limit of ", limits.max_bytes, " bytes (PrototxtLimits::max_bytes)");
    if (!ec) text.reserve(static_cast<std::size_t>(size));
  }
  errno = 0;
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    const int err = errno;
    detail::raise("cannot read prototxt file '", name, "': ",
                  err ? std::error_code(err, std::generic_category()).message()
                      : std::string("cannot open it for reading"));
  }
  // Read in chunks with the limit checked as we go: a pipe or a growing file has no size.
  char buf[1 << 16];
  for (;;) {
    in.read(buf, sizeof buf);
    const std::streamsize got = in.gcount();
    if (got > 0) text.append(buf, static_cast<std::size_t>(got));
    if (text.size() > limits.max_bytes)
      detail::raise("cannot read prototxt file '", name, "': it is larger than the limit of ",
                    limits.max_bytes, " bytes (PrototxtLimits::max_bytes)");
    if (!in) break;
  }
  if (in.bad()) detail::raise("cannot read prototxt file '", name, "': read error");
  return parse_prototxt(text, name, limits);
}

/// Writes a message in text format: one field per line, nested messages indented by two
/// spaces, strings escaped. parse_prototxt(to_prototxt(m)) has the same fields as m.
/// Numbers and identifiers that would not read back as such (possible only for messages
/// built in C++) are written as quoted strings; a field name that is no identifier throws.
[[nodiscard]] inline std::string to_prototxt(const Message& m) {
  static const Message empty_message;
  struct Item {
    const Message* msg;
    std::size_t next;
  };
  std::string out;
  std::vector<Item> stack{{&m, 0}};
  auto indent = [&out](std::size_t depth) { out.append(2 * depth, ' '); };
  while (!stack.empty()) {
    const std::size_t depth = stack.size() - 1;
    Item& it = stack.back();
    if (it.next == it.msg->fields().size()) {
      stack.pop_back();
      if (depth > 0) {
        indent(depth - 1);
        out += "}\n";
      }
      continue;
    }
    const Field& f = it.msg->fields()[it.next++];
    if (!detail::proto_is_identifier(f.name))
      detail::raise(f.loc.str(), ": cannot write field name ", detail::proto_quote_name(f.name),
                    " in text format: it is not an identifier");
    indent(depth);
    out += f.name;
    if (f.is_message) {
      out += " {\n";
      stack.push_back({f.message ? f.message.get() : &empty_message, 0});
      continue;
    }
    out += ": ";
    const Scalar& v = f.scalar;
    const bool bare = (v.kind == Scalar::Kind::number && detail::proto_is_number_text(v.text)) ||
                      (v.kind == Scalar::Kind::identifier && detail::proto_is_identifier(v.text));
    if (bare) {
      out += v.text;
    } else {
      out += '"';
      detail::proto_append_escaped(out, v.text);
      out += '"';
    }
    out += '\n';
  }
  return out;
}

/// True when two messages have the same fields in the same order with the same names,
/// kinds and texts, recursively; source locations are ignored.
[[nodiscard]] inline bool same_content(const Message& a, const Message& b) {
  static const Message empty_message;
  auto msg = [](const Field& f) -> const Message* { return f.message ? f.message.get() : &empty_message; };
  std::vector<std::pair<const Message*, const Message*>> todo{{&a, &b}};
  while (!todo.empty()) {
    const auto [x, y] = todo.back();
    todo.pop_back();
    const auto& fx = x->fields();
    const auto& fy = y->fields();
    if (fx.size() != fy.size()) return false;
    for (std::size_t i = 0; i < fx.size(); ++i) {
      if (fx[i].name != fy[i].name || fx[i].is_message != fy[i].is_message) return false;
      if (fx[i].is_message) {
        todo.emplace_back(msg(fx[i]), msg(fy[i]));
      } else if (fx[i].scalar.kind != fy[i].scalar.kind || fx[i].scalar.text != fy[i].scalar.text) {
        return false;
      }
    }
  }
  return true;
}

POSEIDON_NAMESPACE_END
