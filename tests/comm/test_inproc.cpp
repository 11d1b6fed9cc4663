// InprocTransport: tag matching in send order, deadlines that name rank and tag, dead ranks,
// oversized messages, and the collectives over it (reproducible fixed-order reduce).
#include <doctest/doctest.h>
#include <poseidon/comm/collectives.hpp>
#include <poseidon/comm/inproc_transport.hpp>

#include <atomic>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

namespace pd = poseidon;
using namespace std::chrono_literals;

namespace {
std::span<const std::byte> cbytes(const std::vector<int>& v) { return std::as_bytes(std::span(v)); }
std::span<std::byte> wbytes(std::vector<int>& v) { return std::as_writable_bytes(std::span(v)); }

std::string error_of(auto&& fn) {
  try {
    fn();
  } catch (const pd::Error& e) {
    return e.what();
  }
  return "no error";
}

constexpr pd::Deadlines short_deadlines{2000ms, 2000ms};
}  // namespace

TEST_CASE("inproc: messages with one tag from one sender arrive in send order") {
  pd::InprocWorld::run(2, [](pd::InprocTransport& t) {
    constexpr int n = 50;
    if (t.rank() == 0) {
      std::vector<std::vector<int>> msgs;
      for (int i = 0; i < n; ++i) msgs.push_back({i, i * i});
      std::vector<pd::InprocTransport::Request> reqs;
      for (auto& m : msgs) reqs.push_back(t.isend(1, 5, cbytes(m)));
      for (auto& q : reqs) CHECK(t.wait(q) == 2 * sizeof(int));
    } else {
      for (int i = 0; i < n; ++i) {
        std::vector<int> got(2);
        auto q = t.irecv(0, 5, wbytes(got));
        CHECK(t.wait(q) == 2 * sizeof(int));
        CHECK(got[0] == i);
        CHECK(got[1] == i * i);
      }
    }
  });
}

TEST_CASE("inproc: receives match by tag, not by arrival order") {
  pd::InprocWorld::run(2, [](pd::InprocTransport& t) {
    if (t.rank() == 0) {
      std::vector<int> a{1}, b{2};
      auto s1 = t.isend(1, 10, cbytes(a));
      auto s2 = t.isend(1, 20, cbytes(b));
      t.wait(s1);
      t.wait(s2);
    } else {
      std::vector<int> x(1), y(1);
      auto r20 = t.irecv(0, 20, wbytes(y));
      auto r10 = t.irecv(0, 10, wbytes(x));
      t.wait(r10);
      t.wait(r20);
      CHECK(x[0] == 1);
      CHECK(y[0] == 2);
    }
  });
}

TEST_CASE("inproc: test() polls without blocking") {
  pd::InprocWorld world(2, short_deadlines);
  auto t0 = world.transport(0);
  auto t1 = world.transport(1);
  std::vector<int> buf(1), v{42};
  auto r = t1.irecv(0, 1, wbytes(buf));
  CHECK_FALSE(t1.test(r));
  auto s = t0.isend(1, 1, cbytes(v));
  CHECK(t1.test(r));
  CHECK(t0.test(s));
  CHECK(buf[0] == 42);
}

TEST_CASE("inproc: a wait past its deadline names the rank, the peer and the tag") {
  pd::InprocWorld world(3, short_deadlines);
  auto t2 = world.transport(2);
  std::vector<int> buf(1);
  auto r = t2.irecv(1, 77, wbytes(buf));
  const auto msg = error_of([&] { t2.wait(r, 30ms); });
  CHECK(msg.find("rank 2") != std::string::npos);
  CHECK(msg.find("timed out after 30 ms") != std::string::npos);
  CHECK(msg.find("receive from rank 1 (tag 77)") != std::string::npos);
}

TEST_CASE("inproc: a collective that times out names the collective") {
  pd::InprocWorld world(2, pd::Deadlines{50ms, 50ms});
  auto t1 = world.transport(1);
  const auto msg = error_of([&] { pd::barrier(t1); });  // rank 0 never arrives
  CHECK(msg.find("rank 1") != std::string::npos);
  CHECK(msg.find("barrier (release)") != std::string::npos);
}

TEST_CASE("inproc: a message larger than the receive buffer fails, naming both sizes") {
  pd::InprocWorld world(2, short_deadlines);
  auto t0 = world.transport(0);
  auto t1 = world.transport(1);
  std::vector<int> big(10, 1), small(2);
  auto s = t0.isend(1, 3, cbytes(big));
  auto r = t1.irecv(0, 3, wbytes(small));
  const auto msg = error_of([&] { t1.wait(r); });
  CHECK(msg.find("rank 1: receive from rank 0 (tag 3) failed") != std::string::npos);
  CHECK(msg.find("40 bytes") != std::string::npos);
  CHECK(msg.find("8-byte") != std::string::npos);
}

TEST_CASE("inproc: peers and tags outside the world are refused") {
  pd::InprocWorld world(2, short_deadlines);
  auto t0 = world.transport(0);
  std::vector<int> v(1);
  CHECK(error_of([&] { t0.isend(2, 0, cbytes(v)); }).find("outside the world of 2") != std::string::npos);
  CHECK(error_of([&] { t0.irecv(-1, 0, wbytes(v)); }).find("outside the world") != std::string::npos);
  CHECK(error_of([&] { t0.isend(1, pd::max_tag + 1, cbytes(v)); }).find("largest tag") != std::string::npos);
}

TEST_CASE("inproc: when a rank dies, every other rank's wait fails naming it") {
  std::atomic<int> named_dead{0};
  const auto msg = error_of([&] {
    pd::InprocWorld::run(
        4,
        [&](pd::InprocTransport& t) {
          std::vector<int> buf(1);
          if (t.rank() == 2) throw pd::Error("rank 2: simulated crash");
          try {
            auto r = t.irecv((t.rank() + 1) % 4, 9, wbytes(buf));  // nobody sends: only the death ends it
            t.wait(r);
          } catch (const pd::Error& e) {
            if (std::string(e.what()).find("rank 2 died (rank 2: simulated crash)") != std::string::npos) ++named_dead;
            throw;
          }
        },
        pd::Deadlines{60'000ms, 60'000ms});  // far off: the death, not a deadline, must end the waits
  });
  CHECK(msg == "rank 2: simulated crash");  // run() rethrows the cause, not the echoes
  CHECK(named_dead == 3);
}

TEST_CASE("collectives over inproc, for 1 to 5 ranks") {
  for (int n = 1; n <= 5; ++n) {
    CAPTURE(n);
    pd::InprocWorld::run(n, [n](pd::InprocTransport& t) {
      const int me = t.rank();
      pd::barrier(t);
      for (int root = 0; root < n; ++root) {
        std::vector<int> v(3, me == root ? 100 + root : -1);
        pd::broadcast(t, std::span(v), root);
        CHECK(v == std::vector<int>(3, 100 + root));
      }
      std::vector<int> mine{me, me * 10};
      std::vector<int> all(2 * static_cast<std::size_t>(n));
      pd::allgather(t, std::span<const int>(mine), std::span(all));
      for (int r = 0; r < n; ++r) {
        CHECK(all[2 * static_cast<std::size_t>(r)] == r);
        CHECK(all[2 * static_cast<std::size_t>(r) + 1] == r * 10);
      }
      std::vector<int> x{me + 1, 2};
      pd::allreduce(t, std::span(x));
      CHECK(x[0] == n * (n + 1) / 2);
      CHECK(x[1] == 2 * n);
      pd::barrier(t);
    });
  }
}

TEST_CASE("reduce adds in rank order whatever the arrival order, so float sums are reproducible") {
  // Values whose float sum depends on the order: (1e8 + 1 - 1e8) differs from (1e8 - 1e8 + 1).
  const std::vector<float> contrib{1e8f, 1.0f, -1e8f, 1.0f, 0.5f};
  float expected = contrib[0];
  for (std::size_t i = 1; i < contrib.size(); ++i) expected += contrib[i];
  for (int trial = 0; trial < 10; ++trial) {
    for (int root : {0, 3}) {
      pd::InprocWorld::run(5, [&](pd::InprocTransport& t) {
        std::vector<float> x{contrib[static_cast<std::size_t>(t.rank())]};
        if (t.rank() != root && (t.rank() + trial) % 2 == 0) std::this_thread::yield();
        pd::reduce(t, std::span(x), root);
        if (t.rank() == root) CHECK(std::memcmp(&x[0], &expected, sizeof(float)) == 0);
        else CHECK(x[0] == contrib[static_cast<std::size_t>(t.rank())]);
      });
    }
  }
}
