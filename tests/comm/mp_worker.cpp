// One rank of the multi-process transport tests, started by poseidon-run: exchanges messages and
// runs the collectives over FabricTransport, or dies by SIGKILL mid-exchange, or plays intruder.
#include <poseidon/comm/collectives.hpp>
#include <poseidon/comm/fabric_transport.hpp>

#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace pd = poseidon;

namespace {

void expect(bool ok, const std::string& what) {
  if (!ok) throw pd::Error(what);
}

void exchange(pd::FabricTransport& t, int rounds, int victim) {
  const int n = t.size();
  const int me = t.rank();
  const int right = (me + 1) % n;
  const int left = (me - 1 + n) % n;
  std::vector<std::uint64_t> out(4096), in(4096);
  for (int round = 0; round < rounds; ++round) {
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = (std::uint64_t(me) << 32) | (std::uint64_t(round) << 16) | i;
    auto r = t.irecv(left, 100, std::as_writable_bytes(std::span(in)));
    auto s = t.isend(right, 100, std::as_bytes(std::span(out)));
    if (me == victim && round == 25) {
      std::fprintf(stderr, "rank %d: killing myself with SIGKILL mid-exchange\n", me);
      ::raise(SIGKILL);
    }
    t.wait(s);
    t.wait(r);
    for (std::size_t i = 0; i < in.size(); i += 511)
      expect(in[i] == ((std::uint64_t(left) << 32) | (std::uint64_t(round) << 16) | i),
             "ring exchange delivered wrong bytes");
    if (round % 10 == 0) pd::barrier(t);
  }
}

void collectives(pd::FabricTransport& t) {
  const int n = t.size();
  for (int root = 0; root < n; ++root) {
    std::vector<int> v(10000, t.rank() == root ? root + 1 : 0);
    pd::broadcast(t, std::span(v), root);
    expect(v.front() == root + 1 && v.back() == root + 1, "broadcast delivered wrong values");
  }
  std::vector<float> mine(50000, static_cast<float>(t.rank()));
  std::vector<float> all(mine.size() * static_cast<std::size_t>(n));
  pd::allgather(t, std::span<const float>(mine), std::span(all));
  for (int r = 0; r < n; ++r)
    expect(all[static_cast<std::size_t>(r) * mine.size() + 7] == static_cast<float>(r), "allgather misplaced a block");
  std::vector<double> x(1000, 0.1 * (t.rank() + 1));
  pd::allreduce(t, std::span(x));
  double want = 0.1;
  for (int r = 1; r < n; ++r) want += 0.1 * (r + 1);
  expect(x[999] == want, "allreduce differs from the rank-order sum");
  pd::barrier(t);
}

void large(pd::FabricTransport& t, std::size_t bytes) {
  std::vector<std::byte> buf(bytes);
  if (t.rank() == 0) {
    for (std::size_t i = 0; i < bytes; i += 4096) buf[i] = static_cast<std::byte>((i / 4096) & 0xFF);
    buf[bytes - 1] = std::byte{0x5A};
    auto s = t.isend(1, 7, buf);
    t.wait(s);
  } else if (t.rank() == 1) {
    auto r = t.irecv(0, 7, buf);
    expect(t.wait(r) == bytes, "large message has the wrong length");
    for (std::size_t i = 0; i < bytes; i += 4096)
      expect(buf[i] == static_cast<std::byte>((i / 4096) & 0xFF), "large message corrupted");
    expect(buf[bytes - 1] == std::byte{0x5A}, "large message lost its last byte");
  }
  pd::barrier(t);
}

void intruders(const pd::Cluster& real) {
  auto attempt = [&](const std::string& token) -> std::string {
    auto c = real;
    c.job_token = token;
    try {
      pd::Rendezvous rv(c, std::as_bytes(std::span("intruder", 8)));
    } catch (const pd::Error& e) {
      return e.what();
    }
    return "joined";
  };
  const auto wrong = attempt("not-the-token");
  expect(wrong.find("refused this rank: authentication failed") != std::string::npos, "wrong token: " + wrong);
  const auto none = attempt("");
  expect(none.find("requires a job token") != std::string::npos, "missing token: " + none);
  std::printf("rank %d: intruders refused\n", real.rank);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "exchange";
  int rank = -1;
  try {
    auto cluster = pd::Cluster::from_env();
    rank = cluster.rank;
    if (mode == "auth" && cluster.rank == 1) intruders(cluster);
    pd::FabricTransport t(cluster);
    if (mode == "exchange") {
      exchange(t, 40, -1);
      collectives(t);
    } else if (mode == "sigkill") {
      exchange(t, 10'000, argc > 2 ? std::atoi(argv[2]) : 1);  // the victim dies at round 25
    } else if (mode == "large") {
      large(t, argc > 2 ? std::strtoull(argv[2], nullptr, 10) : (std::size_t{1} << 31) + 13);
    } else if (mode == "auth") {
      exchange(t, 5, -1);
    } else {
      throw pd::Error("unknown mode " + mode);
    }
    std::printf("rank %d: %s ok\n", rank, mode.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: FAILED: %s\n", rank, e.what());
    return 3;
  }
}
