// Rendezvous and control channel over loopback TCP, ranks as threads: roster exchange, token
// authentication (refused intruders do not disturb the job), deadlines, and death notices.
#include <doctest/doctest.h>
#include <poseidon/comm/rendezvous.hpp>

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace pd = poseidon;
using namespace std::chrono_literals;

struct poseidon::detail::RendezvousTestHook {
  // What the kernel does for a process killed by SIGKILL: the sockets close, nothing is said.
  static void crash(pd::Rendezvous& r) {
    r.finished_ = true;
    std::lock_guard wl(r.write_mutex_);
    for (auto& c : r.conns_)
      if (c) ::shutdown(c.get(), SHUT_RDWR);
  }
};

namespace {

pd::Cluster cluster(int rank, int size, std::uint16_t port, std::string token = {}) {
  pd::Cluster c;
  c.rank = rank;
  c.world_size = size;
  c.master_host = "127.0.0.1";
  c.master_port = port;
  c.job_token = std::move(token);
  c.deadlines = {5000ms, 5000ms};
  return c;
}

std::vector<std::byte> addr_of(int rank) {
  const std::string s = "fabric-address-of-" + std::to_string(rank);
  std::vector<std::byte> v(s.size());
  std::memcpy(v.data(), s.data(), s.size());
  return v;
}

// Collects the comm log for the duration of a test.
struct LogCapture {
  std::mutex m;
  std::vector<std::string> lines;
  LogCapture() {
    pd::set_comm_log_sink([this](std::string_view l) {
      std::lock_guard lock(m);
      lines.emplace_back(l);
    });
  }
  ~LogCapture() { pd::set_comm_log_sink({}); }
  bool contains(std::string_view needle) {
    std::lock_guard lock(m);
    for (auto& l : lines)
      if (l.find(needle) != std::string::npos) return true;
    return false;
  }
};

std::string error_of(auto&& fn) {
  try {
    fn();
  } catch (const pd::Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("rendezvous: every rank learns every rank's host and address, then shuts down cleanly") {
  const auto port = pd::detail::pick_free_port();
  constexpr int n = 4;
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      pd::Rendezvous rv(cluster(r, n, port), addr_of(r));
      bool all = rv.peers().size() == n;
      for (int p = 0; p < n && all; ++p) {
        const auto& peer = rv.peers()[static_cast<std::size_t>(p)];
        all = peer.rank == p && peer.address == addr_of(p) && peer.host == pd::detail::local_hostname();
      }
      rv.finish(5000ms);
      if (all && !rv.failed()) ++good;
    });
  }
  for (auto& t : threads) t.join();
  CHECK(good == n);
}

TEST_CASE("rendezvous: a wrong or missing token is refused and logged by rank 0; the job goes on") {
  LogCapture log;
  const auto port = pd::detail::pick_free_port();
  auto rank0 = std::async(std::launch::async, [&] {
    pd::Rendezvous rv(cluster(0, 2, port, "right"), addr_of(0));
    const bool ok = rv.peers()[1].address == addr_of(1);
    rv.finish(5000ms);
    return ok && !rv.failed();
  });
  const auto wrong = error_of([&] { pd::Rendezvous rv(cluster(1, 2, port, "wrong"), addr_of(9)); });
  CHECK(wrong.find("rank 1: rank 0 at 127.0.0.1:") != std::string::npos);
  CHECK(wrong.find("refused this rank: authentication failed") != std::string::npos);
  const auto missing = error_of([&] { pd::Rendezvous rv(cluster(1, 2, port), addr_of(9)); });
  CHECK(missing.find("requires a job token") != std::string::npos);
  // The real rank 1 still gets in, and rank 0 hands out its real address.
  bool rank1_ok = false;
  {
    pd::Rendezvous rv(cluster(1, 2, port, "right"), addr_of(1));
    rank1_ok = rv.peers()[0].address == addr_of(0);
    rv.finish(5000ms);
  }
  CHECK(rank1_ok);
  CHECK(rank0.get());
  CHECK(log.contains("poseidon[rank 0]: refused a join from 127.0.0.1:"));
  CHECK(log.contains("claims rank 1: wrong job token proof"));
}

TEST_CASE("rendezvous: a joiner with a token will not join a job that does not ask for it") {
  const auto port = pd::detail::pick_free_port();
  auto rank0 = std::async(std::launch::async, [&] {
    auto c = cluster(0, 2, port);
    c.deadlines.rendezvous = 1500ms;
    return error_of([&] { pd::Rendezvous rv(c, addr_of(0)); });
  });
  const auto msg = error_of([&] { pd::Rendezvous rv(cluster(1, 2, port, "tok"), addr_of(1)); });
  CHECK(msg.find("refusing to join an unauthenticated job") != std::string::npos);
  CHECK(rank0.get().find("rank(s) 1 never joined") != std::string::npos);
}

TEST_CASE("rendezvous: malformed and duplicate joins are refused without disturbing the job") {
  LogCapture log;
  const auto port = pd::detail::pick_free_port();
  auto rank0 = std::async(std::launch::async, [&] {
    pd::Rendezvous rv(cluster(0, 3, port), addr_of(0));
    rv.finish(5000ms);
    return !rv.failed();
  });
  {  // garbage instead of a hello
    auto fd = pd::detail::connect_until("127.0.0.1", port, pd::detail::Clock::now() + 5s, "test");
    const char junk[64] = "GET / HTTP/1.1\r\nHost: poseidon\r\n\r\n";
    CHECK(pd::detail::write_all(fd.get(), std::as_bytes(std::span(junk)), pd::detail::Clock::now() + 2s) ==
          pd::detail::IoStatus::ok);
    std::array<std::byte, 1> b{};
    // Rank 0 answers with a challenge, then drops us; read until it does.
    while (pd::detail::read_exact(fd.get(), b, pd::detail::Clock::now() + 5s) == pd::detail::IoStatus::ok) {
    }
  }
  std::thread r1([&] {
    pd::Rendezvous rv(cluster(1, 3, port), addr_of(1));
    rv.finish(5000ms);
  });
  // Wait until rank 1 is in, then claim rank 1 again.
  for (int i = 0; i < 200 && !log.contains("malformed hello"); ++i) std::this_thread::sleep_for(10ms);
  std::this_thread::sleep_for(200ms);
  const auto dup = error_of([&] { pd::Rendezvous rv(cluster(1, 3, port), addr_of(7)); });
  CHECK(dup.find("rank 1 is taken") != std::string::npos);
  std::thread r2([&] {
    pd::Rendezvous rv(cluster(2, 3, port), addr_of(2));
    rv.finish(5000ms);
  });
  r1.join();
  r2.join();
  CHECK(rank0.get());
  CHECK(log.contains("malformed hello (bad magic"));
  CHECK(log.contains("claims rank 1, which is already joined"));
}

TEST_CASE("rendezvous: the deadline names the ranks that never came") {
  const auto port = pd::detail::pick_free_port();
  auto c = cluster(0, 3, port);
  c.deadlines.rendezvous = 300ms;
  const auto msg = error_of([&] { pd::Rendezvous rv(c, addr_of(0)); });
  CHECK(msg.find("rank 0: rendezvous timed out after 300 ms") != std::string::npos);
  CHECK(msg.find("rank(s) 1, 2 never joined") != std::string::npos);
}

TEST_CASE("control channel: a rank that vanishes without a goodbye is named to every other rank") {
  LogCapture log;
  const auto port = pd::detail::pick_free_port();
  constexpr int n = 3;
  std::vector<std::string> seen(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      pd::Rendezvous rv(cluster(r, n, port), addr_of(r));
      if (r == 2) {
        pd::detail::RendezvousTestHook::crash(rv);
        return;
      }
      for (int i = 0; i < 500 && !rv.failed(); ++i) std::this_thread::sleep_for(10ms);
      seen[static_cast<std::size_t>(r)] = rv.failure_text();
    });
  }
  for (auto& t : threads) t.join();
  CHECK(seen[0].find("rank 2 died") != std::string::npos);
  CHECK(seen[1].find("rank 2 died") != std::string::npos);
  CHECK(log.contains("rank 2 died"));
}

TEST_CASE("control channel: abort() reaches every rank with its reason") {
  const auto port = pd::detail::pick_free_port();
  constexpr int n = 3;
  std::vector<std::string> seen(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      pd::Rendezvous rv(cluster(r, n, port), addr_of(r));
      if (r == 1) rv.abort("loss is NaN at iteration 7");
      for (int i = 0; i < 500 && !rv.failed(); ++i) std::this_thread::sleep_for(10ms);
      seen[static_cast<std::size_t>(r)] = rv.failure_text();
    });
  }
  for (auto& t : threads) t.join();
  CHECK(seen[0] == "rank 1 aborted: loss is NaN at iteration 7");
  CHECK(seen[2] == "rank 1 aborted: loss is NaN at iteration 7");
  CHECK(seen[1] == "this rank aborted (aborted: loss is NaN at iteration 7)");
}

TEST_CASE("control frame parsers reject truncated and oversized payloads") {
  pd::detail::Hello h;
  h.world = 4;
  h.host = "node";
  h.address = addr_of(1);
  auto enc = pd::detail::encode_hello(h);
  REQUIRE(pd::detail::parse_hello(enc).has_value());
  CHECK(pd::detail::parse_hello(std::span<const std::byte>(enc).first(enc.size() - 1)) == std::nullopt);
  enc.push_back(std::byte{0});
  CHECK(pd::detail::parse_hello(enc) == std::nullopt);

  pd::detail::Roster ro;
  ro.peers = {{0, "a", addr_of(0)}, {1, "b", addr_of(1)}};
  const auto renc = pd::detail::encode_roster(ro);
  CHECK(pd::detail::parse_roster(renc, 2).has_value());
  CHECK(pd::detail::parse_roster(renc, 3) == std::nullopt);  // a roster for another world size
  CHECK(pd::detail::parse_abort(pd::detail::encode_abort({5, "x"}), 4) == std::nullopt);
}
