// Cluster: who this process is in the job (rank, world size, rendezvous address, provider,
// deadlines, job token, payload checksums), read from the environment that poseidon-run,
// torchrun, mpirun or srun set.
#pragma once

#include <poseidon/comm/transport.hpp>
#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

POSEIDON_NAMESPACE_BEGIN

struct Cluster {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_host = "127.0.0.1";  // rank 0's rendezvous address
  std::uint16_t master_port = 29500;
  std::string provider = "tcp";  // libfabric provider: tcp, verbs, shm, sockets
  std::string iface;             // network interface whose address the fabric binds (POSEIDON_IFACE)
  std::string address;           // or an explicit local address (POSEIDON_ADDRESS)
  std::string job_token;         // shared secret; empty: an unauthenticated job
  Deadlines deadlines;
  /// POSEIDON_PAYLOAD_CHECKSUM: whether this rank's sends carry a CRC-32C of their payload;
  /// unset leaves it to the transport's options (off unless they say otherwise).
  std::optional<bool> payload_checksum;
  std::string source = "default";  // which convention supplied rank and size

  [[nodiscard]] int size() const noexcept { return world_size; }

  using Getenv = std::function<const char*(const char*)>;

  /// Reads, first match wins: POSEIDON_RANK/POSEIDON_WORLD_SIZE (+ POSEIDON_MASTER=host:port);
  /// torchrun's RANK/WORLD_SIZE (+ MASTER_ADDR/MASTER_PORT); mpirun's OMPI_COMM_WORLD_RANK/SIZE
  /// or PMI_RANK/PMI_SIZE; srun's SLURM_PROCID/SLURM_NTASKS. Nothing set: a world of one.
  /// Also POSEIDON_PROVIDER, POSEIDON_IFACE, POSEIDON_ADDRESS, POSEIDON_JOB_TOKEN and the
  /// deadlines POSEIDON_RENDEZVOUS_TIMEOUT / POSEIDON_MESSAGE_TIMEOUT (seconds, may be fractional)
  /// and POSEIDON_PAYLOAD_CHECKSUM (1/0, on/off, true/false, yes/no).
  static Cluster from_env() {
    return from_env([](const char* name) -> const char* { return std::getenv(name); });
  }
  static Cluster from_env(const Getenv& getenv);
};

namespace detail {

inline long long parse_env_int(const char* name, std::string_view v, long long lo, long long hi) {
  long long x = 0;
  const auto* end = v.data() + v.size();
  const auto [p, ec] = std::from_chars(v.data(), end, x);
  POSEIDON_CHECK(ec == std::errc{} && p == end && !v.empty(), "environment variable ", name, "=\"", v,
                 "\" is not an integer");
  POSEIDON_CHECK(x >= lo && x <= hi, "environment variable ", name, "=", x, " is outside [", lo, ", ", hi, "]");
  return x;
}

inline std::chrono::milliseconds parse_env_seconds(const char* name, std::string_view v) {
  double s = 0;
  const auto* end = v.data() + v.size();
  const auto [p, ec] = std::from_chars(v.data(), end, s);
  POSEIDON_CHECK(ec == std::errc{} && p == end && !v.empty() && s > 0 && s < 1e7, "environment variable ", name,
                 "=\"", v, "\" is not a positive number of seconds");
  return std::chrono::milliseconds(static_cast<long long>(s * 1000.0 + 0.5));
}

inline bool parse_env_bool(const char* name, std::string_view v) {
  for (std::string_view t : {"1", "on", "true", "yes"})
    if (v == t) return true;
  for (std::string_view f : {"0", "off", "false", "no"})
    if (v == f) return false;
  detail::raise("environment variable ", name, "=\"", v, "\" is not one of 1/0, on/off, true/false, yes/no");
}

/// Splits "host:port" (the host may be a name, an IPv4 address or [IPv6]).
inline void parse_master(const char* name, std::string_view v, std::string& host, std::uint16_t& port) {
  const auto colon = v.rfind(':');
  POSEIDON_CHECK(colon != std::string_view::npos && colon > 0, "environment variable ", name, "=\"", v,
                 "\" must be host:port");
  host = std::string(v.substr(0, colon));
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  port = static_cast<std::uint16_t>(parse_env_int(name, v.substr(colon + 1), 1, 65535));
}

}  // namespace detail

inline Cluster Cluster::from_env(const Getenv& getenv) {
  auto get = [&](const char* n) -> const char* {
    const char* v = getenv(n);
    return v && *v ? v : nullptr;
  };
  Cluster c;
  constexpr long long max_world = 1 << 20;  // the fabric tag holds 20 bits of source rank
  struct Convention {
    const char* rank;
    const char* size;
    const char* name;
  };
  constexpr Convention conventions[] = {
      {"POSEIDON_RANK", "POSEIDON_WORLD_SIZE", "POSEIDON_*"},
      {"RANK", "WORLD_SIZE", "torchrun"},
      {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "mpirun (Open MPI)"},
      {"PMI_RANK", "PMI_SIZE", "mpirun (PMI)"},
      {"SLURM_PROCID", "SLURM_NTASKS", "srun"},
  };
  for (const auto& conv : conventions) {
    const char* r = get(conv.rank);
    const char* s = get(conv.size);
    if (!r && !s) continue;
    POSEIDON_CHECK(r && s, conv.name, " environment is incomplete: ", r ? conv.size : conv.rank,
                   " is not set while ", r ? conv.rank : conv.size, " is");
    c.world_size = static_cast<int>(detail::parse_env_int(conv.size, s, 1, max_world));
    c.rank = static_cast<int>(detail::parse_env_int(conv.rank, r, 0, c.world_size - 1));
    c.source = conv.name;
    break;
  }
  for (const char* n : {"POSEIDON_LOCAL_RANK", "LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"}) {
    if (const char* v = get(n)) {
      c.local_rank = static_cast<int>(detail::parse_env_int(n, v, 0, max_world));
      break;
    }
  }

  bool have_master = false;
  if (const char* m = get("POSEIDON_MASTER")) {
    detail::parse_master("POSEIDON_MASTER", m, c.master_host, c.master_port);
    have_master = true;
  } else if (const char* a = get("MASTER_ADDR")) {
    c.master_host = a;
    if (const char* p = get("MASTER_PORT"))
      c.master_port = static_cast<std::uint16_t>(detail::parse_env_int("MASTER_PORT", p, 1, 65535));
    have_master = true;
  }
  // mpirun and srun say who we are but not where rank 0 listens; guessing a host would make a
  // job that hangs on some clusters, so ask for it instead.
  POSEIDON_CHECK(have_master || c.world_size == 1, "rank ", c.rank, " of ", c.world_size, " (from ", c.source,
                 "): no rendezvous address; set POSEIDON_MASTER=host:port (or MASTER_ADDR and MASTER_PORT) "
                 "to rank 0's host and a free port");

  if (const char* v = get("POSEIDON_PROVIDER")) c.provider = v;
  if (const char* v = get("POSEIDON_IFACE")) c.iface = v;
  if (const char* v = get("POSEIDON_ADDRESS")) c.address = v;
  if (const char* v = get("POSEIDON_JOB_TOKEN")) c.job_token = v;
  if (const char* v = get("POSEIDON_RENDEZVOUS_TIMEOUT"))
    c.deadlines.rendezvous = detail::parse_env_seconds("POSEIDON_RENDEZVOUS_TIMEOUT", v);
  if (const char* v = get("POSEIDON_MESSAGE_TIMEOUT"))
    c.deadlines.message = detail::parse_env_seconds("POSEIDON_MESSAGE_TIMEOUT", v);
  if (const char* v = get("POSEIDON_PAYLOAD_CHECKSUM"))
    c.payload_checksum = detail::parse_env_bool("POSEIDON_PAYLOAD_CHECKSUM", v);
  return c;
}

POSEIDON_NAMESPACE_END
