// The logic of poseidon-run, the local launcher: start N ranks with POSEIDON_* set, prefix each
// output line with its rank, forward Ctrl-C, and when one rank fails stop the rest and report it.
#pragma once

#include <poseidon/comm/detail/socket.hpp>
#include <poseidon/comm/transport.hpp>
#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <charconv>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct LaunchOptions {
  int ranks = 1;
  std::vector<std::string> command;  // program and its arguments
  std::string master;                // host:port for the rendezvous; empty: 127.0.0.1 and a free port
  bool prefix = true;                // "[rank] " before every output line
  // After the first failure the others get this long to notice (through the control channel)
  // and exit with their own error, before they are sent SIGTERM (then SIGKILL 2 s later).
  std::chrono::milliseconds grace{10'000};
  std::chrono::milliseconds timeout{0};  // whole job; 0: none
};

inline constexpr std::string_view launcher_usage =
    "usage: poseidon-run -n N [--master HOST:PORT] [--grace SECONDS] [--timeout SECONDS] [--no-prefix]\n"
    "                    [--] PROGRAM [ARGS...]\n"
    "Starts N ranks of PROGRAM on this host with POSEIDON_RANK, POSEIDON_WORLD_SIZE, POSEIDON_LOCAL_RANK\n"
    "and POSEIDON_MASTER set; prefixes their output with [rank]; forwards Ctrl-C; if a rank fails, stops\n"
    "the others and exits with the failing rank's status (128+N for signal N).\n";

namespace detail {

inline std::chrono::milliseconds parse_seconds_arg(std::string_view flag, std::string_view v) {
  double s = 0;
  const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), s);
  POSEIDON_CHECK(ec == std::errc{} && p == v.data() + v.size() && s >= 0, "poseidon-run: ", flag,
                 " expects seconds, got \"", v, "\"");
  return std::chrono::milliseconds(static_cast<long long>(s * 1000));
}

}  // namespace detail

inline LaunchOptions parse_launch_args(int argc, const char* const* argv) {
  LaunchOptions o;
  bool have_n = false;
  int i = 1;
  auto value = [&](std::string_view flag) -> std::string_view {
    POSEIDON_CHECK(i + 1 < argc, "poseidon-run: ", flag, " needs a value\n", launcher_usage);
    return argv[++i];
  };
  for (; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a == "-n" || a == "--np" || a == "-np") {
      const auto v = value(a);
      int n = 0;
      const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
      POSEIDON_CHECK(ec == std::errc{} && p == v.data() + v.size() && n >= 1 && n <= 4096,
                     "poseidon-run: -n expects a rank count in [1, 4096], got \"", v, "\"");
      o.ranks = n;
      have_n = true;
    } else if (a == "--master") {
      o.master = value(a);
    } else if (a == "--grace") {
      o.grace = detail::parse_seconds_arg(a, value(a));
    } else if (a == "--timeout") {
      o.timeout = detail::parse_seconds_arg(a, value(a));
    } else if (a == "--no-prefix") {
      o.prefix = false;
    } else if (a == "-h" || a == "--help") {
      detail::raise(launcher_usage);
    } else if (!a.empty() && a[0] == '-') {
      detail::raise("poseidon-run: unknown option ", a, "\n", launcher_usage);
    } else {
      break;
    }
  }
  for (; i < argc; ++i) o.command.emplace_back(argv[i]);
  POSEIDON_CHECK(have_n, "poseidon-run: -n N is required\n", launcher_usage);
  POSEIDON_CHECK(!o.command.empty(), "poseidon-run: no program given\n", launcher_usage);
  return o;
}

namespace detail {

inline int& launcher_signal_pipe() {
  static int fd = -1;
  return fd;
}

extern "C" inline void launcher_on_signal(int sig) {
  const int saved = errno;
  const unsigned char c = static_cast<unsigned char>(sig);
  if (launcher_signal_pipe() >= 0) [[maybe_unused]] auto n = ::write(launcher_signal_pipe(), &c, 1);
  errno = saved;
}

inline void write_fd(int fd, std::string_view s) {
  while (!s.empty()) {
    const ssize_t n = ::write(fd, s.data(), s.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    s.remove_prefix(static_cast<std::size_t>(n));
  }
}

inline std::string signal_name(int sig) {
  const char* d = ::sigdescr_np(sig);
  return detail::concat("signal ", sig, d ? detail::concat(" (", d, ")") : std::string());
}

struct RankProc {
  pid_t pid = -1;
  int out = -1;
  int err = -1;
  std::string out_buf, err_buf;
  bool running = true;
  int status = 0;  // exit code, or 128 + signal
  std::string how;
};

}  // namespace detail

/// Runs the job; returns the launcher's exit status. Writes the ranks' output to stdout/stderr.
inline int launch(const LaunchOptions& o) {
  using Clock = std::chrono::steady_clock;
  const std::string master = o.master.empty() ? detail::concat("127.0.0.1:", detail::pick_free_port()) : o.master;
  int sp[2];
  POSEIDON_CHECK(::pipe2(sp, O_CLOEXEC | O_NONBLOCK) == 0, "poseidon-run: pipe2: ", std::strerror(errno));
  detail::launcher_signal_pipe() = sp[1];
  struct sigaction sa{};
  sa.sa_handler = detail::launcher_on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) ::sigaction(sig, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  std::vector<detail::RankProc> procs(static_cast<std::size_t>(o.ranks));
  for (int r = 0; r < o.ranks; ++r) {
    int out[2], err[2];
    POSEIDON_CHECK(::pipe2(out, O_CLOEXEC) == 0 && ::pipe2(err, O_CLOEXEC) == 0, "poseidon-run: pipe2: ",
                   std::strerror(errno));
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    POSEIDON_CHECK(pid >= 0, "poseidon-run: fork: ", std::strerror(errno));
    if (pid == 0) {
      // Own process group: Ctrl-C reaches the ranks once, through us, and stopping a rank
      // stops whatever it started. Dying with the launcher keeps orphans from lingering.
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      struct sigaction dfl{};
      dfl.sa_handler = SIG_DFL;
      for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGPIPE}) ::sigaction(sig, &dfl, nullptr);
      ::dup2(out[1], 1);
      ::dup2(err[1], 2);
      ::setenv("POSEIDON_RANK", std::to_string(r).c_str(), 1);
      ::setenv("POSEIDON_WORLD_SIZE", std::to_string(o.ranks).c_str(), 1);
      ::setenv("POSEIDON_LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("POSEIDON_MASTER", master.c_str(), 1);
      std::vector<char*> args;
      for (const auto& a : o.command) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      detail::write_fd(2, detail::concat("poseidon-run: cannot run ", o.command[0], ": ", std::strerror(errno), "\n"));
      ::_exit(127);
    }
    ::setpgid(pid, pid);
    ::close(out[1]);
    ::close(err[1]);
    auto& p = procs[static_cast<std::size_t>(r)];
    p.pid = pid;
    p.out = out[0];
    p.err = err[0];
  }

  auto emit = [&](int r, std::string& buf, int to, bool flush_all) {
    std::size_t start = 0;
    for (;;) {
      const auto nl = buf.find('\n', start);
      if (nl == std::string::npos) break;
      const auto line = std::string_view(buf).substr(start, nl + 1 - start);
      detail::write_fd(to, o.prefix ? detail::concat("[", r, "] ", line) : std::string(line));
      start = nl + 1;
    }
    buf.erase(0, start);
    if (flush_all && !buf.empty()) {
      detail::write_fd(to, o.prefix ? detail::concat("[", r, "] ", buf, "\n") : buf + "\n");
      buf.clear();
    }
  };
  auto signal_all = [&](int sig) {
    for (auto& p : procs)
      if (p.running) ::kill(-p.pid, sig);
  };

  const auto started = Clock::now();
  std::optional<int> first_failure;  // rank
  constexpr auto never = Clock::time_point::max();
  Clock::time_point term_at = never, kill_at = never;
  int interrupts = 0;
  int exit_status = 0;
  bool timed_out = false;
  for (;;) {
    std::vector<pollfd> fds{{sp[0], POLLIN, 0}};
    std::vector<std::pair<int, bool>> who;  // (rank, is_err)
    for (int r = 0; r < o.ranks; ++r) {
      auto& p = procs[static_cast<std::size_t>(r)];
      if (p.out >= 0) {
        fds.push_back({p.out, POLLIN, 0});
        who.emplace_back(r, false);
      }
      if (p.err >= 0) {
        fds.push_back({p.err, POLLIN, 0});
        who.emplace_back(r, true);
      }
    }
    bool any_running = false;
    for (auto& p : procs) any_running |= p.running;
    if (!any_running && fds.size() == 1) break;
    ::poll(fds.data(), fds.size(), 100);
    if (fds[0].revents) {
      unsigned char sigs[64];
      const ssize_t n = ::read(sp[0], sigs, sizeof sigs);
      for (ssize_t k = 0; k < n; ++k) {
        const int sig = sigs[k];
        if (sig == SIGCHLD) continue;
        // Forward the first interrupt as is; a second one means "now".
        signal_all(++interrupts > 1 ? SIGKILL : sig);
        if (!first_failure) exit_status = 128 + sig;
      }
    }
    for (std::size_t k = 1; k < fds.size(); ++k) {
      if (!fds[k].revents) continue;
      const auto [r, is_err] = who[k - 1];
      auto& p = procs[static_cast<std::size_t>(r)];
      int& fd = is_err ? p.err : p.out;
      auto& buf = is_err ? p.err_buf : p.out_buf;
      char chunk[65536];
      const ssize_t n = ::read(fd, chunk, sizeof chunk);
      if (n > 0) {
        buf.append(chunk, static_cast<std::size_t>(n));
        emit(r, buf, is_err ? 2 : 1, false);
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        emit(r, buf, is_err ? 2 : 1, true);
        ::close(fd);
        fd = -1;
      }
    }
    int wstatus = 0;
    pid_t pid;
    while ((pid = ::waitpid(-1, &wstatus, WNOHANG)) > 0) {
      for (int r = 0; r < o.ranks; ++r) {
        auto& p = procs[static_cast<std::size_t>(r)];
        if (p.pid != pid || !p.running) continue;
        p.running = false;
        if (WIFEXITED(wstatus)) {
          p.status = WEXITSTATUS(wstatus);
          p.how = detail::concat("exited with status ", p.status);
        } else {
          p.status = 128 + WTERMSIG(wstatus);
          p.how = detail::concat("was killed by ", detail::signal_name(WTERMSIG(wstatus)));
        }
        if (p.status != 0 && !first_failure && !timed_out) {
          first_failure = r;
          exit_status = p.status;
          detail::write_fd(2, detail::concat("poseidon-run: rank ", r, " ", p.how, "; stopping the other ranks\n"));
          term_at = Clock::now() + o.grace;
          kill_at = term_at + std::chrono::seconds(2);
        }
      }
    }
    const auto now = Clock::now();
    if (o.timeout.count() > 0 && !timed_out && now - started > o.timeout) {
      timed_out = true;
      detail::write_fd(2, detail::concat("poseidon-run: timed out after ", detail::format_ms(o.timeout), "; killing all ranks\n"));
      signal_all(SIGKILL);
    }
    if (now >= term_at) {
      signal_all(SIGTERM);
      term_at = never;
    }
    if (now >= kill_at) {
      signal_all(SIGKILL);
      kill_at = never;
    }
  }
  if (first_failure || timed_out) {
    for (int r = 0; r < o.ranks; ++r)
      detail::write_fd(2, detail::concat("poseidon-run: rank ", r, " ", procs[static_cast<std::size_t>(r)].how, "\n"));
  }
  ::close(sp[0]);
  ::close(sp[1]);
  detail::launcher_signal_pipe() = -1;
  return timed_out ? 124 : exit_status;
}

/// main() of poseidon-run.
inline int launcher_main(int argc, const char* const* argv) {
  try {
    return launch(parse_launch_args(argc, argv));
  } catch (const Error& e) {
    detail::write_fd(2, detail::concat(e.what(), "\n"));
    return 2;
  }
}

POSEIDON_NAMESPACE_END
