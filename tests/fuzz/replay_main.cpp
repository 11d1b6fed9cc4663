// Replays every file of a fuzz corpus folder through LLVMFuzzerTestOneInput, so that
// the corpus is a regression test under any compiler; prints "N passed, 0 failed".
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  namespace fs = std::filesystem;
  if (!fs::is_directory(argv[1])) {
    std::fprintf(stderr, "corpus folder %s does not exist\n", argv[1]);
    return 2;
  }
  std::size_t n = 0;
  for (const auto& entry : fs::recursive_directory_iterator(argv[1])) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    ++n;
  }
  if (n == 0) {
    std::fprintf(stderr, "corpus folder %s is empty\n", argv[1]);
    return 1;
  }
  std::printf("fuzz replay: %zu passed, 0 failed\n", n);
  return 0;
}
