// Transport throughput and latency, 8 B to 64 MiB between two processes, side by side with a
// plain TCP socket pair moving the same bytes; prints the FabricTransport/socket ratio per size.
//
// Local run (default): forks the peer process on 127.0.0.1 (POSEIDON_PROVIDER picks the provider,
// tcp by default). Across hosts or namespaces (benchmarks/netns/run.sh): start the peer with
// POSEIDON_BENCH_ROLE=peer POSEIDON_RANK=1 and this side with POSEIDON_BENCH_ROLE=host
// POSEIDON_RANK=0, both with POSEIDON_WORLD_SIZE=2 and POSEIDON_MASTER=host:port (the socket pair
// uses port+1).
#include <benchmark/benchmark.h>
#include <poseidon/comm/detail/socket.hpp>
#include <poseidon/comm/fabric_transport.hpp>

#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace pd = poseidon;
using namespace std::chrono_literals;

namespace {

struct Command {
  std::uint64_t op = 0;  // 0 quit, 1 throughput, 2 ping-pong
  std::uint64_t size = 0;
  std::uint64_t count = 0;
  std::uint64_t checksum = 1;
};

constexpr pd::Tag cmd_tag = 1, data_tag = 2, ack_tag = 3;
constexpr int window = 4;  // sends in flight per direction

// CPU time of this whole process (all threads, user + kernel): on shared cores wall-clock
// throughput follows the load, CPU seconds per byte much less so.
std::uint64_t process_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

// Context switches of this whole process (voluntary + involuntary, all threads): every wake-up
// of a sleeping thread costs one, and on shared cores they are much of what a message costs.
std::uint64_t process_switches() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<std::uint64_t>(ru.ru_nvcsw + ru.ru_nivcsw);
}

// The throughput acknowledgement: messages received, and the CPU and context switches the peer
// spent on them.
struct Ack {
  std::uint64_t count = 0;
  std::uint64_t cpu_ns = 0;
  std::uint64_t switches = 0;
};

std::uint64_t count_for(std::int64_t size) {
  return static_cast<std::uint64_t>(std::clamp<std::int64_t>((256 << 20) / size, 1, 2000));
}

// --- the peer -----------------------------------------------------------------------

void fabric_peer(pd::FabricTransport& t) {
  std::vector<std::vector<std::byte>> bufs;
  for (;;) {
    Command c;
    auto q = t.irecv(0, cmd_tag, std::as_writable_bytes(std::span(&c, 1)));
    t.wait(q, 3600s);
    if (c.op == 0) return;
    t.set_checksum_payload(c.checksum != 0);
    bufs.resize(window);
    for (auto& b : bufs) b.resize(c.size);
    if (c.op == 1) {
      const auto cpu0 = process_cpu_ns();
      const auto cs0 = process_switches();
      std::vector<pd::FabricTransport::Request> reqs(window);
      for (std::uint64_t i = 0; i < c.count; ++i) {
        auto& r = reqs[i % window];
        if (r.valid()) t.wait(r);
        r = t.irecv(0, data_tag, bufs[i % window]);
      }
      for (auto& r : reqs)
        if (r.valid()) t.wait(r);
      Ack ack{c.count, process_cpu_ns() - cpu0, process_switches() - cs0};
      auto s = t.isend(0, ack_tag, std::as_bytes(std::span(&ack, 1)));
      t.wait(s);
    } else {
      for (std::uint64_t i = 0; i < c.count; ++i) {
        auto r = t.irecv(0, data_tag, bufs[0]);
        t.wait(r);
        auto s = t.isend(0, data_tag, bufs[0]);
        t.wait(s);
      }
    }
  }
}

bool read_all(int fd, void* p, std::size_t n) {
  return pd::detail::read_exact(fd, std::span(static_cast<std::byte*>(p), n), pd::detail::Clock::now() + 3600s) ==
         pd::detail::IoStatus::ok;
}
bool write_all(int fd, const void* p, std::size_t n) {
  return pd::detail::write_all(fd, std::span(static_cast<const std::byte*>(p), n),
                               pd::detail::Clock::now() + 3600s) == pd::detail::IoStatus::ok;
}

// Throughput: message i lands in buffer i % window, as it does on the fabric side (which needs
// `window` buffers for its receives in flight), so both receivers touch the same memory; reading
// every message into one buffer kept a 1 MiB message in L2 and the socket ~10% ahead for that alone.
void socket_peer(int fd) {
  std::vector<std::vector<std::byte>> bufs(window);
  for (;;) {
    Command c;
    if (!read_all(fd, &c, sizeof c) || c.op == 0) return;
    for (auto& b : bufs) b.resize(c.size);
    auto& buf = bufs[0];
    if (c.op == 1) {
      const auto cpu0 = process_cpu_ns();
      const auto cs0 = process_switches();
      for (std::uint64_t i = 0; i < c.count; ++i) read_all(fd, bufs[i % window].data(), c.size);
      Ack ack{c.count, process_cpu_ns() - cpu0, process_switches() - cs0};
      write_all(fd, &ack, sizeof ack);
    } else {
      for (std::uint64_t i = 0; i < c.count; ++i) {
        read_all(fd, buf.data(), c.size);
        write_all(fd, buf.data(), c.size);
      }
    }
  }
}

// POSEIDON_BENCH_SPIN_US and POSEIDON_BENCH_PIECE_BYTES override FabricOptions::spin and
// ::checksum_piece_bytes in both processes (for tuning them).
pd::FabricOptions bench_options() {
  pd::FabricOptions o;
  if (const char* s = std::getenv("POSEIDON_BENCH_SPIN_US")) o.spin = std::chrono::microseconds(std::atoll(s));
  if (const char* s = std::getenv("POSEIDON_BENCH_PIECE_BYTES")) o.checksum_piece_bytes = std::strtoull(s, nullptr, 10);
  return o;
}

int peer_main(const pd::Cluster& cluster) {
  try {
    std::thread sock([&] {
      auto fd = pd::detail::connect_until(cluster.master_host, static_cast<std::uint16_t>(cluster.master_port + 1),
                                          pd::detail::Clock::now() + 120s, "bench peer");
      socket_peer(fd.get());
    });
    pd::FabricTransport t(cluster, bench_options());
    fabric_peer(t);
    sock.join();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench peer: %s\n", e.what());
    return 1;
  }
}

// --- the measuring side ---------------------------------------------------------------------

std::unique_ptr<pd::FabricTransport> g_fabric;
pd::detail::Fd g_socket;

void BM_fabric_throughput(benchmark::State& st, bool checksum) {
  const auto size = static_cast<std::uint64_t>(st.range(0));
  const auto count = count_for(st.range(0));
  std::vector<std::byte> buf(size, std::byte{1});
  auto& t = *g_fabric;
  t.set_checksum_payload(checksum);
  double cpu_s = 0, switches = 0;
  for (auto _ : st) {
    const auto cpu0 = process_cpu_ns();
    const auto cs0 = process_switches();
    Command c{1, size, count, checksum};
    auto q = t.isend(1, cmd_tag, std::as_bytes(std::span(&c, 1)));
    std::vector<pd::FabricTransport::Request> reqs(window);
    for (std::uint64_t i = 0; i < count; ++i) {
      auto& r = reqs[i % window];
      if (r.valid()) t.wait(r);
      r = t.isend(1, data_tag, buf);
    }
    for (auto& r : reqs)
      if (r.valid()) t.wait(r);
    Ack ack;
    auto a = t.irecv(1, ack_tag, std::as_writable_bytes(std::span(&ack, 1)));
    t.wait(a);
    t.wait(q);
    cpu_s += static_cast<double>(process_cpu_ns() - cpu0 + ack.cpu_ns) * 1e-9;
    switches += static_cast<double>(process_switches() - cs0 + ack.switches);
  }
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * size * count));
  st.counters["GB_per_cpu_s"] = static_cast<double>(st.iterations() * size * count) / cpu_s / 1e9;
  st.counters["switches_per_msg"] = switches / static_cast<double>(st.iterations() * count);
}

void BM_socket_throughput(benchmark::State& st) {
  const auto size = static_cast<std::uint64_t>(st.range(0));
  const auto count = count_for(st.range(0));
  std::vector<std::byte> buf(size, std::byte{1});
  double cpu_s = 0, switches = 0;
  for (auto _ : st) {
    const auto cpu0 = process_cpu_ns();
    const auto cs0 = process_switches();
    Command c{1, size, count, 0};
    write_all(g_socket.get(), &c, sizeof c);
    for (std::uint64_t i = 0; i < count; ++i) write_all(g_socket.get(), buf.data(), size);
    Ack ack;
    read_all(g_socket.get(), &ack, sizeof ack);
    cpu_s += static_cast<double>(process_cpu_ns() - cpu0 + ack.cpu_ns) * 1e-9;
    switches += static_cast<double>(process_switches() - cs0 + ack.switches);
  }
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * size * count));
  st.counters["GB_per_cpu_s"] = static_cast<double>(st.iterations() * size * count) / cpu_s / 1e9;
  st.counters["switches_per_msg"] = switches / static_cast<double>(st.iterations() * count);
}

void BM_fabric_latency(benchmark::State& st) {
  const auto size = static_cast<std::uint64_t>(st.range(0));
  std::vector<std::byte> buf(size, std::byte{1}), back(size);
  auto& t = *g_fabric;
  t.set_checksum_payload(false);  // the default
  constexpr std::uint64_t rounds = 50;
  for (auto _ : st) {
    Command c{2, size, rounds, 0};
    auto q = t.isend(1, cmd_tag, std::as_bytes(std::span(&c, 1)));
    for (std::uint64_t i = 0; i < rounds; ++i) {
      auto r = t.irecv(1, data_tag, back);
      auto s = t.isend(1, data_tag, buf);
      t.wait(s);
      t.wait(r);
    }
    t.wait(q);
  }
  // kIsRate | kInvert reports seconds / value: dividing by 1e6 here makes it microseconds.
  st.counters["us_per_round_trip"] = benchmark::Counter(static_cast<double>(st.iterations() * rounds) / 1e6,
                                                    benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_socket_latency(benchmark::State& st) {
  const auto size = static_cast<std::uint64_t>(st.range(0));
  std::vector<std::byte> buf(size, std::byte{1}), back(size);
  constexpr std::uint64_t rounds = 50;
  for (auto _ : st) {
    Command c{2, size, rounds, 0};
    write_all(g_socket.get(), &c, sizeof c);
    for (std::uint64_t i = 0; i < rounds; ++i) {
      write_all(g_socket.get(), buf.data(), size);
      read_all(g_socket.get(), back.data(), size);
    }
  }
  // kIsRate | kInvert reports seconds / value: dividing by 1e6 here makes it microseconds.
  st.counters["us_per_round_trip"] = benchmark::Counter(static_cast<double>(st.iterations() * rounds) / 1e6,
                                                    benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void sizes(benchmark::internal::Benchmark* b) {
  for (std::int64_t s : {8, 64, 512, 4096, 32768, 262144, 1 << 20, 4 << 20, 16 << 20, 64 << 20}) b->Arg(s);
  b->UseRealTime()->MinTime(0.3);
}
void latency_sizes(benchmark::internal::Benchmark* b) {
  for (std::int64_t s : {8, 512, 4096, 65536, 1 << 20, 16 << 20}) b->Arg(s);
  b->UseRealTime()->MinTime(0.3);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// Remembers every repetition and prints the medians side by side at the end: throughput of
// FabricTransport (by default, and with the payload CRC) against the socket, and round trips.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& r : runs) {
      if (r.run_type != Run::RT_Iteration) continue;
      const std::string name = r.run_name.function_name;
      const auto arg = r.run_name.args;
      const long long size = std::stoll(arg.substr(0, arg.find('/')));
      if (auto it = r.counters.find("bytes_per_second"); it != r.counters.end())
        bps_[name][size].push_back(it->second.value);
      if (auto it = r.counters.find("us_per_round_trip"); it != r.counters.end())
        rtt_[name][size].push_back(it->second.value);
      if (auto it = r.counters.find("GB_per_cpu_s"); it != r.counters.end())
        cpu_[name][size].push_back(it->second.value);
      if (auto it = r.counters.find("switches_per_msg"); it != r.counters.end())
        switches_[name][size].push_back(it->second.value);
    }
    ConsoleReporter::ReportRuns(runs);
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    // "fabric" is the default (no payload checksum: /nocrc), "fabric+crc" the payload CRC-32C
    // that FabricOptions::checksum_payload or POSEIDON_PAYLOAD_CHECKSUM=1 turns on.
    const auto table = [](const char* title, auto& by_name, double scale) {
      std::printf("\n%s\n%10s %12s %12s %8s %12s %8s\n", title, "bytes", "socket", "fabric", "ratio", "fabric+crc",
                  "ratio");
      for (const auto& [size, v] : by_name["BM_socket_throughput"]) {
        const double s = median(v);
        const double f = median(by_name["BM_fabric_throughput/nocrc"][size]);
        const double g = median(by_name["BM_fabric_throughput/crc"][size]);
        std::printf("%10lld %12.3f %12.3f %7.0f%% %12.3f %7.0f%%\n", size, s * scale, f * scale, 100 * f / s,
                    g * scale, 100 * g / s);
      }
    };
    table("throughput, median of repetitions (GB/s = 1e9 B/s)", bps_, 1e-9);
    table("bytes moved per CPU-second of both processes, median (GB/s of CPU)", cpu_, 1.0);
    std::printf("\ncontext switches per message, both processes, median\n%10s %12s %12s %12s\n", "bytes", "socket",
                "fabric", "fabric+crc");
    for (const auto& [size, v] : switches_["BM_socket_throughput"])
      std::printf("%10lld %12.1f %12.1f %12.1f\n", size, median(v),
                  median(switches_["BM_fabric_throughput/nocrc"][size]),
                  median(switches_["BM_fabric_throughput/crc"][size]));
    std::printf("\nround trip, median of repetitions (us)\n%10s %10s %10s %8s\n", "bytes", "socket", "fabric",
                "ratio");
    for (const auto& [size, v] : rtt_["BM_socket_latency"]) {
      const double s = median(v);
      const double f = median(rtt_["BM_fabric_latency"][size]);
      std::printf("%10lld %10.1f %10.1f %7.1fx\n", size, s, f, f / s);
    }
  }

 private:
  std::map<std::string, std::map<long long, std::vector<double>>> bps_, rtt_, cpu_, switches_;
};

}  // namespace

int main(int argc, char** argv) {
  // Flags first: --help exits inside Initialize, which must happen before there is a peer
  // waiting for this process's goodbye. Repetitions are interleaved at random across all
  // benchmarks: on a shared machine the load drifts, and measuring socket and fabric at
  // different times would compare the drift.
  std::vector<char*> args(argv, argv + argc);
  std::string reps = "--benchmark_repetitions=3", shuffle = "--benchmark_enable_random_interleaving=true";
  bool has_reps = false;
  for (int i = 1; i < argc; ++i) has_reps |= std::string(argv[i]).starts_with("--benchmark_repetitions");
  if (!has_reps) {
    args.push_back(reps.data());
    args.push_back(shuffle.data());
  }
  int nargs = static_cast<int>(args.size());
  benchmark::Initialize(&nargs, args.data());

  const char* role_env = std::getenv("POSEIDON_BENCH_ROLE");
  const std::string role = role_env ? role_env : "local";
  pd::Cluster cluster;
  pid_t child = -1;
  if (role == "peer") return peer_main(pd::Cluster::from_env());
  if (role == "host") {
    cluster = pd::Cluster::from_env();
  } else {
    cluster.world_size = 2;
    cluster.master_host = "127.0.0.1";
    cluster.master_port = pd::detail::pick_free_port();
    if (const char* p = std::getenv("POSEIDON_PROVIDER")) cluster.provider = p;
    // Fork before any thread exists in this process.
    child = ::fork();
    if (child == 0) {
      auto c = cluster;
      c.rank = 1;
      ::_exit(peer_main(c));
    }
  }
  auto [listener, port] = pd::detail::listen_tcp(cluster.master_host, static_cast<std::uint16_t>(cluster.master_port + 1));
  (void)port;
  g_fabric = std::make_unique<pd::FabricTransport>(cluster, bench_options());
  g_socket = pd::detail::accept_until(listener.get(), pd::detail::Clock::now() + 120s);
  if (!g_socket) {
    std::fprintf(stderr, "bench: the peer never connected its socket\n");
    return 1;
  }
  benchmark::RegisterBenchmark("BM_socket_throughput", BM_socket_throughput)->Apply(sizes);
  benchmark::RegisterBenchmark("BM_fabric_throughput/crc", BM_fabric_throughput, true)->Apply(sizes);
  benchmark::RegisterBenchmark("BM_fabric_throughput/nocrc", BM_fabric_throughput, false)->Apply(sizes);
  benchmark::RegisterBenchmark("BM_socket_latency", BM_socket_latency)->Apply(latency_sizes);
  benchmark::RegisterBenchmark("BM_fabric_latency", BM_fabric_latency)->Apply(latency_sizes);
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  Command quit{};
  write_all(g_socket.get(), &quit, sizeof quit);
  auto q = g_fabric->isend(1, cmd_tag, std::as_bytes(std::span(&quit, 1)));
  g_fabric->wait(q);
  g_fabric.reset();
  if (child > 0) ::waitpid(child, nullptr, 0);
  return 0;
}
