#include <doctest/doctest.h>

#include "solver_testing.hpp"

#include <poseidon/net/snapshot.hpp>
#include <poseidon/solver/solver_state.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace poseidon;
namespace fs = std::filesystem;
using poseidon_solver_test::kResumeNet;

namespace {

fs::path temp_dir(std::string_view name) {
  const fs::path d = fs::temp_directory_path() / detail::concat("poseidon_solver_", name, "_", ::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string read_all(const fs::path& p) {
  std::ifstream is(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(is), {});
}
void write_all(const fs::path& p, const std::string& s) {
  std::ofstream os(p, std::ios::binary | std::ios::trunc);
  os.write(s.data(), static_cast<std::streamsize>(s.size()));
}

template <class T>
Net<CPU, T> make_net(std::uint64_t seed, std::string_view text = kResumeNet) {
  return Net<CPU, T>::from_text(text, {}, std::make_shared<DeviceContext<CPU>>(0, seed));
}

template <class T>
std::vector<std::vector<T>> weights_of(const Net<CPU, T>& n) {
  std::vector<std::vector<T>> out;
  for (int i = 0; i < n.num_layers(); ++i)
    for (const auto& b : n.layer(i).blobs()) out.push_back(b->data_to_host());
  return out;
}

template <class T>
std::string load_error(const fs::path& file) {
  auto n = make_net<T>(1);
  try {
    (void)load_weights(n, file);
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

bool contains(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE_TEMPLATE("Weights round trip byte for byte, by layer name and blob index", T, float, double) {
  const auto dir = temp_dir("roundtrip");
  auto a = make_net<T>(11);
  auto b = make_net<T>(22);
  REQUIRE(weights_of(a) != weights_of(b));
  save_weights(a, dir / "a.poseidonmodel");
  const auto rep = load_weights(b, dir / "a.poseidonmodel");
  CHECK(rep.loaded == 6);
  CHECK(rep.ignored_layers.empty());
  CHECK(weights_of(a) == weights_of(b));
  fs::remove_all(dir);
}

TEST_CASE("Weights convert between f32 and f64 files and nets") {
  const auto dir = temp_dir("convert");
  auto f = make_net<float>(11);
  auto d = make_net<double>(22);
  save_weights(f, dir / "f.poseidonmodel");
  (void)load_weights(d, dir / "f.poseidonmodel");
  const auto wf = weights_of(f);
  const auto wd = weights_of(d);
  for (std::size_t i = 0; i < wf.size(); ++i)
    for (std::size_t j = 0; j < wf[i].size(); ++j) CHECK(wd[i][j] == static_cast<double>(wf[i][j]));

  auto d2 = make_net<double>(33);
  save_weights(d2, dir / "d.poseidonmodel");
  (void)load_weights(f, dir / "d.poseidonmodel");
  const auto w2 = weights_of(d2);
  const auto wf2 = weights_of(f);
  for (std::size_t i = 0; i < w2.size(); ++i)
    for (std::size_t j = 0; j < w2[i].size(); ++j) CHECK(wf2[i][j] == static_cast<float>(w2[i][j]));
  fs::remove_all(dir);
}

TEST_CASE("Loading names the layer and both shapes on a mismatch; ignores layers the net lacks") {
  const auto dir = temp_dir("mismatch");
  auto a = make_net<float>(1);
  save_weights(a, dir / "a.poseidonmodel");
  std::string other = kResumeNet;
  other.replace(other.find("num_output: 6"), 13, "num_output: 7");
  auto b = make_net<float>(2, other);
  try {
    (void)load_weights(b, dir / "a.poseidonmodel");
    FAIL("expected an error");
  } catch (const Error& e) {
    const std::string m = e.what();
    CHECK(contains(m, "a.poseidonmodel"));
    CHECK(contains(m, "layer 'ip1' blob 0"));
    CHECK(contains(m, "(6,3)"));
    CHECK(contains(m, "(7,3)"));
  }
  // A net without ip_noise: that layer of the file is ignored, the rest loads.
  std::string fewer = kResumeNet;
  fewer.replace(fewer.find("ip_noise"), 8, "ip_other");
  auto c = make_net<float>(3, fewer);
  const auto rep = load_weights(c, dir / "a.poseidonmodel");
  CHECK(rep.loaded == 4);
  CHECK(rep.ignored_layers == std::vector<std::string>{"ip_noise"});
  fs::remove_all(dir);
}

TEST_CASE("Corrupt, truncated, wrong-magic and wrong-version files are refused with a clear error") {
  const auto dir = temp_dir("corrupt");
  auto a = make_net<float>(1);
  const fs::path good = dir / "good.poseidonmodel";
  save_weights(a, good);
  const std::string bytes = read_all(good);
  const fs::path bad = dir / "bad.poseidonmodel";

  SUBCASE("a flipped bit anywhere") {
    for (std::size_t pos : {std::size_t(40), bytes.size() / 2, bytes.size() - 1}) {
      std::string b = bytes;
      b[pos] = static_cast<char>(b[pos] ^ 0x10);
      write_all(bad, b);
      const std::string m = load_error<float>(bad);
      CHECK(contains(m, "bad.poseidonmodel"));
      CHECK(contains(m, "payload checksum mismatch"));
    }
    // Header bits: the size field and the version are covered by the header checksum.
    for (std::size_t pos : {std::size_t(9), std::size_t(17), std::size_t(25)}) {
      std::string b = bytes;
      b[pos] = static_cast<char>(b[pos] ^ 0x01);
      write_all(bad, b);
      CHECK(contains(load_error<float>(bad), "header checksum mismatch"));
    }
    // Every single-bit flip of the file is refused (an exhaustive sweep over a sample of bytes).
    for (std::size_t pos = 0; pos < bytes.size(); pos += 7) {
      std::string b = bytes;
      b[pos] = static_cast<char>(b[pos] ^ (1 << (pos % 8)));
      write_all(bad, b);
      CHECK(load_error<float>(bad) != "<no error>");
    }
  }
  SUBCASE("truncated") {
    for (std::size_t len : {std::size_t(0), std::size_t(10), std::size_t(31), std::size_t(32), bytes.size() / 2,
                            bytes.size() - 1}) {
      write_all(bad, bytes.substr(0, len));
      const std::string m = load_error<float>(bad);
      CAPTURE(len);
      CHECK(contains(m, "bad.poseidonmodel"));
      CHECK((contains(m, "truncated") || contains(m, "shorter than")));
    }
    write_all(bad, bytes + "x");
    CHECK(contains(load_error<float>(bad), "trailing bytes"));
  }
  SUBCASE("wrong magic") {
    write_all(bad, "name: \"not a snapshot\" layer { name: \"x\" type: \"Input\" }\n");
    CHECK(contains(load_error<float>(bad), "not a Poseidon weights file (wrong magic number)"));
    // A solver state handed to load_weights is recognised as such.
    std::string s = bytes;
    std::memcpy(s.data(), detail::solver_state_magic.data(), 8);
    write_all(bad, s);
    CHECK(contains(load_error<float>(bad), "it is a solver state file"));
  }
  SUBCASE("wrong version (with valid checksums)") {
    detail::ByteWriter w;
    w.u32(0);
    detail::write_snapshot_file(bad, detail::weights_magic, 2, w.bytes());
    CHECK(contains(load_error<float>(bad), "unsupported weights format version 2"));
  }
  SUBCASE("lengths inside a checksummed payload are bounded (no huge allocation)") {
    auto craft = [&](auto&& fill) {
      detail::ByteWriter w;
      fill(w);
      for (int i = 0; i < 64; ++i) w.u8(0);  // room for the counts to pass their bound
      detail::write_snapshot_file(bad, detail::weights_magic, 1, w.bytes());
      return load_error<float>(bad);
    };
    CHECK(contains(craft([](auto& w) { w.u32(0xFFFFFFFFu); }), "record count is 4294967295"));
    CHECK(contains(craft([](auto& w) {
                     w.u32(1);
                     w.u32(0x7FFFFFFFu);  // name length
                   }),
                   "more than the limit 4096"));
    CHECK(contains(craft([](auto& w) {
                     w.u32(1);
                     w.str("ip1");
                     w.u32(0);
                     w.u8(1);
                     w.u8(2);
                     w.u16(0);
                     w.u32(1u << 30);
                     w.u32(1u << 30);
                     w.u64(1ull << 60);
                   }),
                   "bytes remain"));
    CHECK(contains(craft([](auto& w) {
                     w.u32(1);
                     w.str("ip1");
                     w.u32(0);
                     w.u8(1);
                     w.u8(1);
                     w.u16(0);
                     w.u32(1000000);
                     w.u64(7);
                   }),
                   "holds 7 values but its shape has 1000000"));
    CHECK(contains(craft([](auto& w) {
                     w.u32(1);
                     w.str("ip1");
                     w.u32(0);
                     w.u8(9);
                   }),
                   "unknown element type 9"));
  }
  fs::remove_all(dir);
}

TEST_CASE("Solver state files are framed, checked and refused like weights") {
  const auto dir = temp_dir("state");
  auto c = SolverConfig::from_text(detail::concat("base_lr: 0.01 momentum: 0.9 type: \"Adam\" snapshot_prefix: \"",
                                                  (dir / "run").string(), "\""));
  c.net_param = parse_prototxt(kResumeNet);
  std::ostringstream log;
  AdamSolver<CPU, float> s(c, SolverOptions().log_to(log));
  s.step(3);
  const fs::path state = s.snapshot();
  CHECK(state == dir / "run_iter_3.solverstate");
  CHECK(fs::exists(dir / "run_iter_3.poseidonmodel"));
  const auto st = SolverState::read(state);
  CHECK(st.type == "Adam");
  CHECK(st.iter == 3);
  CHECK(st.history.size() == 2 * static_cast<std::size_t>(s.num_params()));
  CHECK(st.weights_file == "run_iter_3.poseidonmodel");
  REQUIRE(st.layer_states.size() == 1);
  CHECK(st.layer_states[0].net == "train");
  CHECK(st.layer_states[0].layer == "seq");
  CHECK(st.layer_states[0].bytes == "12");
  CHECK(st.rng_state == s.context().rng().state());

  const std::string bytes = read_all(state);
  const fs::path bad = dir / "bad.solverstate";
  auto restore_error = [&] {
    AdamSolver<CPU, float> r(c, SolverOptions().log_to(log));
    try {
      r.restore(bad);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("<no error>");
  };
  for (std::size_t pos = 0; pos < bytes.size(); pos += 97) {
    std::string b = bytes;
    b[pos] = static_cast<char>(b[pos] ^ 0x04);
    write_all(bad, b);
    const std::string m = restore_error();
    CAPTURE(pos);
    CHECK(contains(m, "bad.solverstate"));
  }
  write_all(bad, bytes.substr(0, bytes.size() - 5));
  CHECK(contains(restore_error(), "truncated solver state file"));
  // Another solver type refuses the state.
  c.type = "SGD";
  SGDSolver<CPU, float> sgd(c, SolverOptions().log_to(log));
  try {
    sgd.restore(state);
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(contains(e.what(), "written by solver type Adam; this solver is SGD"));
  }
  // The weights file handed to restore is recognised.
  try {
    sgd.restore(dir / "run_iter_3.poseidonmodel");
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(contains(e.what(), "it is a weights file"));
  }
  fs::remove_all(dir);
}
