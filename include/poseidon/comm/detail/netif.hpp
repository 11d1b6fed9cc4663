// Which local IPv4 address a rank's endpoint binds: an explicit address, the address of a named
// interface (POSEIDON_IFACE), or the one the kernel would route to rank 0 by; never a guess.
#pragma once

#include <poseidon/comm/cluster.hpp>
#include <poseidon/comm/detail/socket.hpp>
#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>

#include <string>

POSEIDON_NAMESPACE_BEGIN
namespace detail {

inline std::string interface_address(const std::string& iface, int rank) {
  ifaddrs* list = nullptr;
  POSEIDON_CHECK(::getifaddrs(&list) == 0, "rank ", rank, ": getifaddrs: ", errno_text(errno));
  std::string found, names;
  for (auto* a = list; a; a = a->ifa_next) {
    if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET) continue;
    if (names.find(a->ifa_name) == std::string::npos) names += concat(names.empty() ? "" : ", ", a->ifa_name);
    if (found.empty() && iface == a->ifa_name) {
      char buf[INET_ADDRSTRLEN] = {};
      ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, buf, sizeof buf);
      found = buf;
    }
  }
  ::freeifaddrs(list);
  POSEIDON_CHECK(!found.empty(), "rank ", rank, ": POSEIDON_IFACE=", iface,
                 " has no IPv4 address (interfaces with one: ", names, ")");
  return found;
}

/// The address the kernel would send from to reach host:port (a UDP connect sends nothing).
inline std::string route_source_address(const std::string& host, std::uint16_t port, int rank) {
  auto sa = resolve_ipv4(host, port);
  Fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  POSEIDON_CHECK(fd, "rank ", rank, ": socket(): ", errno_text(errno));
  POSEIDON_CHECK(::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0, "rank ", rank,
                 ": no route to the rendezvous host ", host, ": ", errno_text(errno));
  sockaddr_in local{};
  socklen_t len = sizeof local;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &len);
  char buf[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &local.sin_addr, buf, sizeof buf);
  return buf;
}

inline std::string choose_local_address(const Cluster& c) {
  if (!c.address.empty()) return c.address;
  if (!c.iface.empty()) return interface_address(c.iface, c.rank);
  return route_source_address(c.master_host, c.master_port, c.rank);
}

}  // namespace detail
POSEIDON_NAMESPACE_END
