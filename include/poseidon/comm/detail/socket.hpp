// Plain TCP sockets for the rendezvous and control channel: every read, write and connect
// takes a deadline (a dead or silent peer can never block us), and frames are validated on read.
#pragma once

#include <poseidon/comm/frame.hpp>
#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

POSEIDON_NAMESPACE_BEGIN
namespace detail {

using Clock = std::chrono::steady_clock;

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  [[nodiscard]] int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

inline std::string errno_text(int err) { return std::strerror(err); }

inline int ms_left(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1'000'000));
}

inline sockaddr_in resolve_ipv4(const std::string& host, std::uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &sa.sin_addr) == 1) return sa;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
  POSEIDON_CHECK(rc == 0 && res, "cannot resolve host \"", host, "\": ", ::gai_strerror(rc));
  sa.sin_addr = reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr;
  ::freeaddrinfo(res);
  return sa;
}

inline std::string to_string(const sockaddr_in& sa) {
  char buf[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &sa.sin_addr, buf, sizeof buf);
  return concat(buf, ":", ntohs(sa.sin_port));
}

inline void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/// Listens on host:port (port 0: any free port); returns the socket and the port it got.
inline std::pair<Fd, std::uint16_t> listen_tcp(const std::string& host, std::uint16_t port, int backlog = 128) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  POSEIDON_CHECK(fd, "socket(): ", errno_text(errno));
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  auto sa = resolve_ipv4(host, port);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    const int err = errno;
    // A master given by name or by a routed address may not be bindable as written on this
    // host; listening on every interface still reaches it.
    if (err != EADDRNOTAVAIL) detail::raise("cannot listen on ", host, ":", port, ": ", errno_text(err));
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    POSEIDON_CHECK(::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0, "cannot listen on ", host, ":",
                   port, ": ", errno_text(errno));
  }
  POSEIDON_CHECK(::listen(fd.get(), backlog) == 0, "listen(", host, ":", port, "): ", errno_text(errno));
  socklen_t len = sizeof sa;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sa), &len);
  return {std::move(fd), ntohs(sa.sin_port)};
}

/// A port that was free a moment ago on 127.0.0.1 (for launchers and tests; a small race remains).
inline std::uint16_t pick_free_port() {
  auto [fd, port] = listen_tcp("127.0.0.1", 0, 1);
  return port;
}

/// Accepts one connection, or returns an empty Fd when the deadline passes first.
inline Fd accept_until(int listen_fd, Clock::time_point deadline, sockaddr_in* peer = nullptr) {
  for (;;) {
    pollfd p{listen_fd, POLLIN, 0};
    const int rc = ::poll(&p, 1, ms_left(deadline));
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) return Fd{};
    sockaddr_in sa{};
    socklen_t len = sizeof sa;
    Fd c(::accept4(listen_fd, reinterpret_cast<sockaddr*>(&sa), &len, SOCK_CLOEXEC));
    if (!c) continue;
    set_nodelay(c.get());
    if (peer) *peer = sa;
    return c;
  }
}

/// Connects to host:port, retrying until the deadline (the listener may start later than us).
inline Fd connect_until(const std::string& host, std::uint16_t port, Clock::time_point deadline,
                        const std::string& who) {
  const auto sa = resolve_ipv4(host, port);
  int last_err = 0;
  do {
    Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    POSEIDON_CHECK(fd, who, ": socket(): ", errno_text(errno));
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&sa), sizeof sa) == 0) {
      set_nodelay(fd.get());
      return fd;
    }
    last_err = errno;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } while (Clock::now() < deadline);
  detail::raise(who, ": could not connect to the rendezvous at ", host, ":", port, " before the deadline (",
                errno_text(last_err), ")");
}

enum class IoStatus { ok, closed, timeout, error };

inline IoStatus write_all(int fd, std::span<const std::byte> data, Clock::time_point deadline) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      const int rc = ::poll(&p, 1, ms_left(deadline));
      if (rc == 0) return IoStatus::timeout;
      continue;
    }
    return errno == EPIPE || errno == ECONNRESET ? IoStatus::closed : IoStatus::error;
  }
  return IoStatus::ok;
}

inline IoStatus read_exact(int fd, std::span<std::byte> out, Clock::time_point deadline) {
  std::size_t done = 0;
  while (done < out.size()) {
    pollfd p{fd, POLLIN, 0};
    const int rc = ::poll(&p, 1, ms_left(deadline));
    if (rc < 0 && errno == EINTR) continue;
    if (rc == 0) return IoStatus::timeout;
    const ssize_t n = ::recv(fd, out.data() + done, out.size() - done, MSG_DONTWAIT);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0) return IoStatus::closed;
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
    return errno == ECONNRESET ? IoStatus::closed : IoStatus::error;
  }
  return IoStatus::ok;
}

inline IoStatus send_frame(int fd, FrameKind kind, std::uint32_t source, std::uint64_t tag,
                           std::span<const std::byte> payload, Clock::time_point deadline) {
  std::vector<std::byte> buf(FrameHeader::size + payload.size());
  encode_header(make_header(kind, source, tag, payload),
                std::span<std::byte, FrameHeader::size>(buf.data(), FrameHeader::size));
  if (!payload.empty()) std::memcpy(buf.data() + FrameHeader::size, payload.data(), payload.size());
  return write_all(fd, buf, deadline);
}

struct ReceivedFrame {
  IoStatus status = IoStatus::ok;
  FrameError error = FrameError::none;  // set when status is ok but the bytes were not a valid frame
  FrameHeader header;
  std::vector<std::byte> payload;
  [[nodiscard]] bool good() const noexcept { return status == IoStatus::ok && error == FrameError::none; }
};

/// Reads one frame; the payload is read only after the header passed validation, so a hostile
/// length can never make us allocate more than `limits.max_payload`.
inline ReceivedFrame recv_frame(int fd, const FrameLimits& limits, Clock::time_point deadline) {
  ReceivedFrame f;
  std::array<std::byte, FrameHeader::size> hdr{};
  f.status = read_exact(fd, hdr, deadline);
  if (f.status != IoStatus::ok) return f;
  auto d = decode_header(hdr, limits);
  if (!d) {
    f.error = d.error;
    return f;
  }
  f.header = d.header;
  f.payload.resize(d.header.length);
  f.status = read_exact(fd, f.payload, deadline);
  if (f.status == IoStatus::ok) f.error = check_payload(f.header, f.payload);
  return f;
}

inline std::string_view to_string(IoStatus s) noexcept {
  switch (s) {
    case IoStatus::ok: return "ok";
    case IoStatus::closed: return "connection closed";
    case IoStatus::timeout: return "timed out";
    case IoStatus::error: return "socket error";
  }
  return "?";
}

}  // namespace detail
POSEIDON_NAMESPACE_END
