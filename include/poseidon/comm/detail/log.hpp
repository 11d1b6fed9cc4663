// The comm layer's one logging call: a whole line to stderr per message (so ranks sharing a
// terminal do not interleave mid-line), with a replaceable sink so tests can see what was logged.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>

#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

POSEIDON_NAMESPACE_BEGIN
namespace detail {

struct CommLogState {
  std::mutex mutex;
  std::function<void(std::string_view)> sink;  // empty: stderr
};

inline CommLogState& comm_log_state() {
  static CommLogState state;
  return state;
}

inline void comm_log_line(std::string line) {
  auto& st = comm_log_state();
  std::lock_guard lock(st.mutex);
  if (st.sink) {
    st.sink(line);
    return;
  }
  line.push_back('\n');
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

/// Logs "poseidon[rank R]: parts..." as one line.
template <class... Parts>
void comm_log(int rank, Parts&&... parts) {
  comm_log_line(concat("poseidon[rank ", rank, "]: ", std::forward<Parts>(parts)...));
}

}  // namespace detail

/// Routes the comm layer's log lines to `sink` (tests, custom loggers); an empty function
/// restores stderr. Returns the previous sink.
inline std::function<void(std::string_view)> set_comm_log_sink(std::function<void(std::string_view)> sink) {
  auto& st = detail::comm_log_state();
  std::lock_guard lock(st.mutex);
  return std::exchange(st.sink, std::move(sink));
}

POSEIDON_NAMESPACE_END
