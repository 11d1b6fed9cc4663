// Rendezvous and control channel: rank 0 admits every rank (after an HMAC proof of the job token
// when one is set) and hands out the roster of hosts and fabric addresses; the connections then
// stay open, so that a rank that dies or aborts is known to all within moments.
#pragma once

#include <poseidon/comm/auth.hpp>
#include <poseidon/comm/cluster.hpp>
#include <poseidon/comm/detail/log.hpp>
#include <poseidon/comm/detail/socket.hpp>
#include <poseidon/comm/detail/wire.hpp>
#include <poseidon/comm/frame.hpp>
#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>

#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct PeerInfo {
  int rank = 0;
  std::string host;
  std::vector<std::byte> address;  // the transport's endpoint name (opaque bytes)
};

/// Why the job is going down: the rank that died or gave up, and what was seen.
struct JobFailure {
  int rank = -1;
  std::string reason;
};

namespace detail {

struct RendezvousTestHook;  // defined only by tests: simulates a crash without a goodbye

inline constexpr std::size_t max_control_payload = 1u << 20;
inline constexpr std::size_t max_host_len = 255;
inline constexpr std::size_t max_address_len = 1024;
inline constexpr std::size_t max_reason_len = 4096;
inline constexpr auto handshake_timeout = std::chrono::seconds(5);

inline std::string local_hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown-host";
  return buf;
}

// Payloads of the control frames. Parsers return nullopt on anything malformed; they are fuzzed.
struct Hello {
  std::uint32_t world = 0;
  Nonce client_nonce{};
  std::vector<std::byte> proof;  // empty in an unauthenticated job
  std::string host;
  std::vector<std::byte> address;
};

inline std::vector<std::byte> encode_hello(const Hello& h) {
  WireWriter w;
  w.u32(h.world);
  w.raw(h.client_nonce);
  w.bytes(h.proof);
  w.str(h.host);
  w.bytes(h.address);
  return w.take();
}

inline std::optional<Hello> parse_hello(std::span<const std::byte> in) {
  WireReader r(in);
  Hello h;
  h.world = r.u32();
  auto n = r.raw(h.client_nonce.size());
  if (r.ok()) std::copy(n.begin(), n.end(), h.client_nonce.begin());
  h.proof = r.bytes(32);
  h.host = r.str(max_host_len);
  h.address = r.bytes(max_address_len);
  if (!r.ok_and_done()) return std::nullopt;
  return h;
}

struct Challenge {
  Nonce server_nonce{};
  bool auth_required = false;
};

inline std::vector<std::byte> encode_challenge(const Challenge& c) {
  WireWriter w;
  w.raw(c.server_nonce);
  w.u32(c.auth_required ? 1 : 0);
  return w.take();
}

inline std::optional<Challenge> parse_challenge(std::span<const std::byte> in) {
  WireReader r(in);
  Challenge c;
  auto n = r.raw(c.server_nonce.size());
  if (r.ok()) std::copy(n.begin(), n.end(), c.server_nonce.begin());
  const auto flag = r.u32();
  if (!r.ok_and_done() || flag > 1) return std::nullopt;
  c.auth_required = flag == 1;
  return c;
}

struct Roster {
  std::vector<std::byte> proof;  // rank 0's proof of the token, empty when unauthenticated
  std::vector<PeerInfo> peers;
};

inline std::vector<std::byte> encode_roster(const Roster& ro) {
  WireWriter w;
  w.bytes(ro.proof);
  w.u32(static_cast<std::uint32_t>(ro.peers.size()));
  for (const auto& p : ro.peers) {
    w.str(p.host);
    w.bytes(p.address);
  }
  return w.take();
}

/// A roster must list exactly `world` ranks, in rank order.
inline std::optional<Roster> parse_roster(std::span<const std::byte> in, std::uint32_t world) {
  WireReader r(in);
  Roster ro;
  ro.proof = r.bytes(32);
  const auto n = r.u32();
  if (!r.ok() || n != world) return std::nullopt;
  for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
    PeerInfo p;
    p.rank = static_cast<int>(i);
    p.host = r.str(max_host_len);
    p.address = r.bytes(max_address_len);
    ro.peers.push_back(std::move(p));
  }
  if (!r.ok_and_done()) return std::nullopt;
  return ro;
}

inline std::vector<std::byte> encode_abort(const JobFailure& f) {
  WireWriter w;
  w.u32(static_cast<std::uint32_t>(f.rank));
  w.str(f.reason.substr(0, max_reason_len));
  return w.take();
}

inline std::optional<JobFailure> parse_abort(std::span<const std::byte> in, std::uint32_t world) {
  WireReader r(in);
  JobFailure f;
  const auto rank = r.u32();
  f.reason = r.str(max_reason_len);
  if (!r.ok_and_done() || rank >= world) return std::nullopt;
  f.rank = static_cast<int>(rank);
  return f;
}

}  // namespace detail

/// The rendezvous of one job and, afterwards, its control channel. Construction blocks until
/// every rank has joined (or the rendezvous deadline passes, naming the missing ranks).
class Rendezvous {
 public:
  Rendezvous(const Cluster& cluster, std::span<const std::byte> local_address)
      : cluster_(cluster), rank_(cluster.rank), size_(cluster.world_size) {
    POSEIDON_CHECK(size_ >= 1 && rank_ >= 0 && rank_ < size_, "invalid cluster: rank ", rank_, " of ", size_);
    POSEIDON_CHECK(local_address.size() <= detail::max_address_len, "rank ", rank_, ": endpoint address of ",
                   local_address.size(), " bytes is too long");
    peers_.resize(static_cast<std::size_t>(size_));
    for (int r = 0; r < size_; ++r) peers_[static_cast<std::size_t>(r)].rank = r;
    auto& me = peers_[static_cast<std::size_t>(rank_)];
    me.host = detail::local_hostname();
    me.address.assign(local_address.begin(), local_address.end());
    if (size_ == 1) return;
    int fds[2];
    POSEIDON_CHECK(::pipe2(fds, O_CLOEXEC) == 0, "rank ", rank_, ": pipe2: ", detail::errno_text(errno));
    wake_read_ = detail::Fd(fds[0]);
    wake_write_ = detail::Fd(fds[1]);
    if (rank_ == 0) host();
    else join();
    conn_bye_.assign(static_cast<std::size_t>(size_), false);
    monitor_ = std::thread([this] { monitor(); });
  }

  Rendezvous(const Rendezvous&) = delete;
  Rendezvous& operator=(const Rendezvous&) = delete;

  ~Rendezvous() {
    if (size_ > 1) {
      try {
        if (std::uncaught_exceptions() > 0 && !failed()) abort("exited with an error");
        else if (!finished_) finish(cluster_.deadlines.message);
      } catch (...) {  // a destructor reports, it does not throw
      }
      stop_monitor();
    }
  }

  [[nodiscard]] int rank() const noexcept { return rank_; }
  [[nodiscard]] int size() const noexcept { return size_; }
  [[nodiscard]] const std::vector<PeerInfo>& peers() const noexcept { return peers_; }
  [[nodiscard]] const Cluster& cluster() const noexcept { return cluster_; }

  [[nodiscard]] bool failed() const noexcept { return failed_.load(std::memory_order_acquire); }
  [[nodiscard]] JobFailure failure() const {
    std::lock_guard lock(mutex_);
    return failure_;
  }
  /// "rank 2 died (control connection closed ...)" or "rank 1 aborted (...)"; empty while healthy.
  [[nodiscard]] std::string failure_text() const {
    if (!failed()) return {};
    auto f = failure();
    if (f.rank == rank_) return detail::concat("this rank aborted (", f.reason, ")");
    return detail::concat("rank ", f.rank, " ", f.reason);
  }

  /// Called (from the monitor thread) when the job fails, so waiters can wake at once.
  void on_failure(std::function<void()> fn) {
    std::lock_guard lock(mutex_);
    on_failure_ = std::move(fn);
  }

  /// Gives up on the job: every rank learns that this rank aborted, and why.
  void abort(const std::string& reason) {
    if (size_ == 1) return;
    const JobFailure f{rank_, detail::concat("aborted: ", reason)};
    record_failure(f);
    const auto payload = detail::encode_abort(f);
    const auto deadline = detail::Clock::now() + std::chrono::seconds(2);
    std::lock_guard lock(write_mutex_);
    if (rank_ == 0) {
      for (int r = 1; r < size_; ++r) send_locked(r, FrameKind::abort, payload, deadline);
    } else {
      send_locked(0, FrameKind::abort, payload, deadline);
    }
  }

  /// Clean shutdown, collective: returns once every rank has called it (or the job failed, or
  /// `timeout` passed), so no rank closes its endpoint while a peer may still talk to it.
  void finish(std::chrono::milliseconds timeout) {
    if (size_ == 1 || finished_) return;
    finished_ = true;
    const auto deadline = detail::Clock::now() + timeout;
    std::unique_lock lock(mutex_);
    if (rank_ == 0) {
      cv_.wait_until(lock, deadline, [&] { return failed() || byes_ == size_ - 1; });
      if (failed()) return;
      if (byes_ != size_ - 1)
        detail::comm_log(rank_, "shutdown: not every rank said goodbye within ", detail::format_ms(timeout));
      lock.unlock();
      std::lock_guard wl(write_mutex_);
      for (int r = 1; r < size_; ++r) send_locked(r, FrameKind::fin, {}, detail::Clock::now() + std::chrono::seconds(2));
    } else {
      lock.unlock();
      {
        std::lock_guard wl(write_mutex_);
        send_locked(0, FrameKind::bye, {}, deadline);
      }
      lock.lock();
      cv_.wait_until(lock, deadline, [&] { return failed() || fin_; });
    }
  }

 private:
  friend struct detail::RendezvousTestHook;

  // --- rank 0 -----------------------------------------------------------------
  void host() {
    const auto deadline = detail::Clock::now() + cluster_.deadlines.rendezvous;
    auto [listener, port] = detail::listen_tcp(cluster_.master_host, cluster_.master_port);
    (void)port;
    conns_.resize(static_cast<std::size_t>(size_));
    std::vector<detail::Nonce> client_nonces(static_cast<std::size_t>(size_));
    std::vector<detail::Nonce> server_nonces(static_cast<std::size_t>(size_));
    int joined = 0;
    while (joined < size_ - 1) {
      sockaddr_in from{};
      auto conn = detail::accept_until(listener.get(), deadline, &from);
      if (!conn) {
        std::string missing;
        for (int r = 1; r < size_; ++r)
          if (!conns_[static_cast<std::size_t>(r)]) missing += detail::concat(missing.empty() ? "" : ", ", r);
        detail::raise("rank 0: rendezvous timed out after ", detail::format_ms(cluster_.deadlines.rendezvous), " on ",
                      cluster_.master_host, ":", cluster_.master_port, ": rank(s) ", missing, " never joined");
      }
      const auto who = detail::to_string(from);
      const auto snonce = detail::random_nonce();
      const auto hs_deadline = std::min(deadline, detail::Clock::now() + detail::handshake_timeout);
      const detail::Challenge ch{snonce, !cluster_.job_token.empty()};
      if (detail::send_frame(conn.get(), FrameKind::challenge, 0, 0, detail::encode_challenge(ch), hs_deadline) !=
          detail::IoStatus::ok)
        continue;
      auto f = detail::recv_frame(conn.get(), {detail::max_control_payload, static_cast<std::uint32_t>(size_)},
                                  hs_deadline);
      auto refuse = [&](const std::string& why, const std::string& tell) {
        detail::comm_log(0, "refused a join from ", who, ": ", why);
        detail::send_frame(conn.get(), FrameKind::refuse, 0, 0,
                           std::as_bytes(std::span(tell.data(), tell.size())), hs_deadline);
      };
      if (f.status != detail::IoStatus::ok) {
        detail::comm_log(0, "refused a join from ", who, ": ", detail::to_string(f.status), " during the handshake");
        continue;
      }
      if (f.error != FrameError::none || f.header.kind != FrameKind::hello) {
        refuse(detail::concat("malformed hello (",
                              f.error != FrameError::none ? to_string(f.error) : "unexpected frame kind", ")"),
               "malformed hello");
        continue;
      }
      const int claimed = static_cast<int>(f.header.source);
      auto hello = detail::parse_hello(f.payload);
      if (!hello) {
        refuse(detail::concat("claims rank ", claimed, ": malformed hello payload"), "malformed hello");
        continue;
      }
      if (hello->world != static_cast<std::uint32_t>(size_)) {
        refuse(detail::concat("claims rank ", claimed, " of a world of ", hello->world, ", this job has ", size_),
               detail::concat("world size mismatch: rank 0 has ", size_));
        continue;
      }
      if (claimed == 0 || conns_[static_cast<std::size_t>(claimed)]) {
        refuse(detail::concat("claims rank ", claimed, ", which is ", claimed == 0 ? "rank 0 itself" : "already joined"),
               detail::concat("rank ", claimed, " is taken"));
        continue;
      }
      if (!cluster_.job_token.empty()) {
        const auto want = detail::auth_proof(cluster_.job_token, detail::auth_join, snonce, hello->client_nonce,
                                             static_cast<std::uint32_t>(claimed), static_cast<std::uint32_t>(size_));
        if (hello->proof.empty() || !detail::digest_equal(hello->proof, want)) {
          refuse(detail::concat("claims rank ", claimed, ": ",
                                hello->proof.empty() ? "no job token proof" : "wrong job token proof"),
                 "authentication failed");
          continue;
        }
      }
      auto& p = peers_[static_cast<std::size_t>(claimed)];
      p.host = hello->host;
      p.address = hello->address;
      conns_[static_cast<std::size_t>(claimed)] = std::move(conn);
      client_nonces[static_cast<std::size_t>(claimed)] = hello->client_nonce;
      server_nonces[static_cast<std::size_t>(claimed)] = snonce;
      ++joined;
    }
    for (int r = 1; r < size_; ++r) {
      detail::Roster ro;
      if (!cluster_.job_token.empty()) {
        const auto d = detail::auth_proof(cluster_.job_token, detail::auth_roster, server_nonces[static_cast<std::size_t>(r)],
                                          client_nonces[static_cast<std::size_t>(r)], static_cast<std::uint32_t>(r),
                                          static_cast<std::uint32_t>(size_));
        ro.proof.assign(d.begin(), d.end());
      }
      ro.peers = peers_;
      const auto st = detail::send_frame(conns_[static_cast<std::size_t>(r)].get(), FrameKind::roster, 0, 0,
                                         detail::encode_roster(ro), deadline);
      POSEIDON_CHECK(st == detail::IoStatus::ok, "rank 0: could not send the roster to rank ", r, " (",
                     detail::to_string(st), ")");
    }
  }

  // --- ranks 1.. ----------------------------------------------------------------
  void join() {
    const auto deadline = detail::Clock::now() + cluster_.deadlines.rendezvous;
    const auto where = detail::concat(cluster_.master_host, ":", cluster_.master_port);
    const auto who = detail::concat("rank ", rank_);
    const FrameLimits limits{detail::max_control_payload, static_cast<std::uint32_t>(size_)};
    // Rank 0 may still be busy with another joiner; a refused or reset connection before the
    // challenge is a reason to try again, a refusal after our hello is final.
    for (;;) {
      auto conn = detail::connect_until(cluster_.master_host, cluster_.master_port, deadline, who);
      auto f = detail::recv_frame(conn.get(), limits, deadline);
      if (f.status == detail::IoStatus::closed && detail::Clock::now() < deadline) continue;
      POSEIDON_CHECK(f.status == detail::IoStatus::ok, who, ": no challenge from the rendezvous at ", where, " (",
                     detail::to_string(f.status), ")");
      POSEIDON_CHECK(f.error == FrameError::none && f.header.kind == FrameKind::challenge, who,
                     ": rejected a malformed challenge from ", where, " (", to_string(f.error), ")");
      auto ch = detail::parse_challenge(f.payload);
      POSEIDON_CHECK(ch.has_value(), who, ": rejected a malformed challenge payload from ", where);
      const bool have_token = !cluster_.job_token.empty();
      POSEIDON_CHECK(!ch->auth_required || have_token, who, ": rank 0 at ", where,
                     " requires a job token and POSEIDON_JOB_TOKEN is not set here");
      POSEIDON_CHECK(ch->auth_required || !have_token, who, ": POSEIDON_JOB_TOKEN is set but rank 0 at ", where,
                     " does not ask for it; refusing to join an unauthenticated job");
      detail::Hello h;
      h.world = static_cast<std::uint32_t>(size_);
      h.client_nonce = detail::random_nonce();
      if (have_token) {
        const auto d = detail::auth_proof(cluster_.job_token, detail::auth_join, ch->server_nonce, h.client_nonce,
                                          static_cast<std::uint32_t>(rank_), static_cast<std::uint32_t>(size_));
        h.proof.assign(d.begin(), d.end());
      }
      const auto& me = peers_[static_cast<std::size_t>(rank_)];
      h.host = me.host.substr(0, detail::max_host_len);
      h.address = me.address;
      auto st = detail::send_frame(conn.get(), FrameKind::hello, static_cast<std::uint32_t>(rank_), 0,
                                   detail::encode_hello(h), deadline);
      POSEIDON_CHECK(st == detail::IoStatus::ok, who, ": could not send hello to ", where, " (", detail::to_string(st), ")");
      auto g = detail::recv_frame(conn.get(), limits, deadline);
      POSEIDON_CHECK(g.status == detail::IoStatus::ok, who, ": no roster from the rendezvous at ", where, " (",
                     detail::to_string(g.status), " after ", detail::format_ms(cluster_.deadlines.rendezvous), ")");
      POSEIDON_CHECK(g.error == FrameError::none, who, ": rejected a malformed frame from ", where, " (",
                     to_string(g.error), ")");
      if (g.header.kind == FrameKind::refuse) {
        const std::string why(reinterpret_cast<const char*>(g.payload.data()),
                              std::min<std::size_t>(g.payload.size(), detail::max_reason_len));
        detail::raise(who, ": rank 0 at ", where, " refused this rank: ", why);
      }
      POSEIDON_CHECK(g.header.kind == FrameKind::roster, who, ": expected the roster from ", where);
      auto ro = detail::parse_roster(g.payload, static_cast<std::uint32_t>(size_));
      POSEIDON_CHECK(ro.has_value(), who, ": rejected a malformed roster from ", where);
      if (have_token) {
        const auto want = detail::auth_proof(cluster_.job_token, detail::auth_roster, ch->server_nonce, h.client_nonce,
                                             static_cast<std::uint32_t>(rank_), static_cast<std::uint32_t>(size_));
        POSEIDON_CHECK(detail::digest_equal(ro->proof, want), who, ": rank 0 at ", where,
                       " could not prove it knows the job token; refusing its roster");
      }
      peers_ = std::move(ro->peers);
      conns_.resize(1);
      conns_[0] = std::move(conn);
      return;
    }
  }

  // --- control channel ----------------------------------------------------------
  detail::IoStatus send_locked(int peer, FrameKind kind, std::span<const std::byte> payload,
                               detail::Clock::time_point deadline) {
    auto& c = conns_[static_cast<std::size_t>(peer)];
    if (!c) return detail::IoStatus::closed;
    return detail::send_frame(c.get(), kind, static_cast<std::uint32_t>(rank_), 0, payload, deadline);
  }

  void record_failure(const JobFailure& f) {
    std::function<void()> cb;
    {
      std::lock_guard lock(mutex_);
      if (failed()) return;
      failure_ = f;
      failed_.store(true, std::memory_order_release);
      cb = on_failure_;
    }
    cv_.notify_all();
    if (cb) cb();
  }

  // Rank 0 tells everyone else; every rank then fails its waits with this.
  void peer_failed(const JobFailure& f) {
    const bool first = !failed();
    record_failure(f);
    if (!first || rank_ != 0) return;
    detail::comm_log(0, "rank ", f.rank, " ", f.reason, "; telling the other ranks to stop");
    const auto payload = detail::encode_abort(f);
    std::lock_guard wl(write_mutex_);
    for (int r = 1; r < size_; ++r)
      if (r != f.rank) send_locked(r, FrameKind::abort, payload, detail::Clock::now() + std::chrono::seconds(2));
  }

  void monitor() {
    const FrameLimits limits{detail::max_control_payload, static_cast<std::uint32_t>(size_)};
    std::vector<pollfd> fds;
    std::vector<int> ranks;
    for (;;) {
      fds.clear();
      ranks.clear();
      fds.push_back({wake_read_.get(), POLLIN, 0});
      ranks.push_back(-1);
      for (std::size_t i = 0; i < conns_.size(); ++i) {
        if (!conns_[i]) continue;
        fds.push_back({conns_[i].get(), POLLIN, 0});
        ranks.push_back(rank_ == 0 ? static_cast<int>(i) : 0);
      }
      if (fds.size() == 1) return;
      const int rc = ::poll(fds.data(), fds.size(), -1);
      if (rc < 0 && errno == EINTR) continue;
      if (fds[0].revents) return;
      for (std::size_t i = 1; i < fds.size(); ++i) {
        if (!fds[i].revents) continue;
        const int from = ranks[i];
        auto& conn = conns_[rank_ == 0 ? static_cast<std::size_t>(from) : 0];
        auto f = detail::recv_frame(conn.get(), limits, detail::Clock::now() + detail::handshake_timeout);
        if (f.status != detail::IoStatus::ok || f.error != FrameError::none) {
          if (f.status == detail::IoStatus::ok)
            detail::comm_log(rank_, "rejected a control frame from rank ", from, ": ", to_string(f.error));
          bool expected_close;
          {
            std::lock_guard lock(mutex_);
            expected_close = rank_ == 0 ? conn_bye_[static_cast<std::size_t>(from)] : fin_;
          }
          {
            std::lock_guard wl(write_mutex_);
            conn.reset();
          }
          if (!expected_close && !failed()) {
            if (rank_ == 0)
              peer_failed({from, detail::concat("died (its control connection closed without a goodbye: ",
                                                f.status == detail::IoStatus::ok ? std::string(to_string(f.error))
                                                                                 : std::string(detail::to_string(f.status)),
                                                ")")});
            else
              peer_failed({0, "died (the control connection to rank 0 closed: rank 0 exited or was killed)"});
          }
          continue;
        }
        handle_control(from, f);
      }
    }
  }

  void handle_control(int from, const detail::ReceivedFrame& f) {
    switch (f.header.kind) {
      case FrameKind::abort: {
        auto a = detail::parse_abort(f.payload, static_cast<std::uint32_t>(size_));
        if (!a) {
          detail::comm_log(rank_, "rejected a malformed abort frame from rank ", from);
          a = JobFailure{from, "aborted (malformed abort frame)"};
        }
        if (rank_ == 0 && a->rank != from) a->rank = from;  // a rank can only abort for itself
        peer_failed(*a);
        break;
      }
      case FrameKind::bye:
        if (rank_ == 0) {
          std::lock_guard lock(mutex_);
          if (!conn_bye_[static_cast<std::size_t>(from)]) {
            conn_bye_[static_cast<std::size_t>(from)] = true;
            ++byes_;
          }
        }
        cv_.notify_all();
        break;
      case FrameKind::fin:
        if (rank_ != 0) {
          std::lock_guard lock(mutex_);
          fin_ = true;
        }
        cv_.notify_all();
        break;
      default:
        detail::comm_log(rank_, "ignored an unexpected control frame (kind ", static_cast<int>(f.header.kind),
                         ") from rank ", from);
    }
  }

  void stop_monitor() {
    if (monitor_.joinable()) {
      const char c = 1;
      [[maybe_unused]] auto n = ::write(wake_write_.get(), &c, 1);
      monitor_.join();
    }
    std::lock_guard wl(write_mutex_);
    conns_.clear();
  }

  Cluster cluster_;
  int rank_;
  int size_;
  std::vector<PeerInfo> peers_;
  std::vector<detail::Fd> conns_;  // rank 0: one per rank (index 0 unused); others: [0] to rank 0
  detail::Fd wake_read_, wake_write_;
  std::thread monitor_;

  mutable std::mutex mutex_;  // failure_, byes_, fin_, conn_bye_, on_failure_
  std::mutex write_mutex_;    // writes to conns_ and closing them
  std::condition_variable cv_;
  std::atomic<bool> failed_{false};
  JobFailure failure_;
  std::function<void()> on_failure_;
  std::vector<bool> conn_bye_;
  int byes_ = 0;
  bool fin_ = false;
  bool finished_ = false;
};

POSEIDON_NAMESPACE_END
