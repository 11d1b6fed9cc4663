// poseidon::Error, the one exception type for configuration and input errors,
// and the POSEIDON_CHECK macro that builds its message from streamable parts.
#pragma once

#include <poseidon/core/config.hpp>

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

POSEIDON_NAMESPACE_BEGIN

/// Thrown for every configuration or input error: bad prototxt, shape mismatch,
/// missing file, bad flag, unreachable peer. The message names what was wrong
/// (the layer, the parameter, the file and line, or the peer).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return os.str();
}

template <class... Parts>
[[noreturn]] void raise(Parts&&... parts) {
  throw Error(concat(std::forward<Parts>(parts)...));
}

}  // namespace detail

POSEIDON_NAMESPACE_END

/// Throws poseidon::Error built from the streamable parts when cond is false.
#define POSEIDON_CHECK(cond, ...)                         \
  do {                                                    \
    if (!(cond)) ::poseidon::detail::raise(__VA_ARGS__);  \
  } while (false)
