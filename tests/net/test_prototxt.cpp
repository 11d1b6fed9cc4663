// Tests of the prototxt reader and printer: every piece of the grammar, the errors and
// their file:line:col, the limits, the round trip, and real Caffe files read unchanged.
#include <doctest/doctest.h>

#include <poseidon/net/prototxt.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace pd = poseidon;
namespace fs = std::filesystem;

namespace {

fs::path data_dir() { return fs::path(__FILE__).parent_path() / "data"; }

/// The message of the Error that parsing `text` throws ("" when it parses).
std::string parse_error(std::string_view text, std::string_view file = "t.prototxt") {
  try {
    (void)pd::parse_prototxt(text, file);
  } catch (const pd::Error& e) {
    return e.what();
  }
  return "";
}

bool starts_with(const std::string& s, std::string_view prefix) { return s.rfind(prefix, 0) == 0; }
bool contains(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

void check_round_trip(const pd::Message& m) {
  const std::string printed = pd::to_prototxt(m);
  const pd::Message again = pd::parse_prototxt(printed, "printed");
  CHECK(pd::same_content(m, again));
  CHECK(pd::to_prototxt(again) == printed);
}

/// A temporary file removed at scope exit.
struct TempFile {
  fs::path path;
  explicit TempFile(std::string_view name, std::string_view content) {
    path = fs::temp_directory_path() /
           (std::string("poseidon_test_prototxt_") + std::to_string(::getpid_hack()) + "_" + std::string(name));
    std::ofstream(path, std::ios::binary) << content;
  }
  ~TempFile() {
    std::error_code ec;
    fs::remove(path, ec);
  }
};

}  // namespace
