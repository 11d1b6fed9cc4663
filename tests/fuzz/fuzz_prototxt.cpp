// libFuzzer target for the prototxt reader: any bytes either parse or throw poseidon::Error,
// and whatever parses must print and re-parse to the same content, printed identically.
#include <poseidon/net/prototxt.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  poseidon::Message first;
  try {
    first = poseidon::parse_prototxt(text, "fuzz");
  } catch (const poseidon::Error&) {
    return 0;  // rejecting input is fine; any other exception escapes and is a finding
  }
  const std::string printed = poseidon::to_prototxt(first);
  poseidon::Message second;
  try {
    second = poseidon::parse_prototxt(printed, "printed");
  } catch (const poseidon::Error& e) {
    std::fprintf(stderr, "printed text does not parse: %s\n--- printed ---\n%s\n", e.what(), printed.c_str());
    std::abort();
  }
  if (!poseidon::same_content(first, second)) {
    std::fprintf(stderr, "round trip changed the message\n--- printed ---\n%s\n", printed.c_str());
    std::abort();
  }
  if (poseidon::to_prototxt(second) != printed) {
    std::fprintf(stderr, "printing is not stable\n--- printed ---\n%s\n", printed.c_str());
    std::abort();
  }
  return 0;
}
