#include <doctest/doctest.h>
#include <poseidon/data/idx.hpp>

#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

using namespace poseidon;
namespace fs = std::filesystem;

namespace {
fs::path temp_dir() {
  auto d = fs::temp_directory_path() / ("poseidon_idx_test_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

std::vector<unsigned char> idx_bytes(std::vector<std::uint32_t> dims, std::size_t payload, unsigned char type = 0x08) {
  std::vector<unsigned char> b{0, 0, type, static_cast<unsigned char>(dims.size())};
  for (auto d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>(d >> s));
  for (std::size_t i = 0; i < payload; ++i) b.push_back(static_cast<unsigned char>(i * 7));
  return b;
}

fs::path write(const fs::path& p, const std::vector<unsigned char>& b, bool gz = false) {
  if (gz) {
    gzFile f = gzopen(p.string().c_str(), "wb");
    gzwrite(f, b.data(), static_cast<unsigned>(b.size()));
    gzclose(f);
  } else {
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  }
  return p;
}
}  // namespace

TEST_CASE("IDX files read plain and gzip-compressed alike") {
  const auto d = temp_dir();
  auto bytes = idx_bytes({3, 2, 2}, 12);
  for (bool gz : {false, true}) {
    const auto p = write(d / (gz ? "a.idx.gz" : "a.idx"), bytes, gz);
    IdxArray a = read_idx(p);
    CHECK(a.dims == std::vector<int>{3, 2, 2});
    CHECK(a.items() == 3);
    CHECK(a.item_size() == 4);
    REQUIRE(a.bytes.size() == 12);
    CHECK(a.bytes[5] == 35);
  }
  fs::remove_all(d);
}

TEST_CASE("IDX errors name the file and the problem") {
  const auto d = temp_dir();
  CHECK_THROWS_WITH_AS(read_idx(d / "missing.idx"), doctest::Contains("missing.idx: no such file"), Error);
  auto bad = idx_bytes({2}, 2);
  bad[0] = 1;
  CHECK_THROWS_WITH_AS(read_idx(write(d / "bad", bad)), doctest::Contains("not an IDX file"), Error);
  CHECK_THROWS_WITH_AS(read_idx(write(d / "float", idx_bytes({2}, 8, 0x0D))), doctest::Contains("only unsigned bytes"), Error);
  auto trunc = idx_bytes({10, 10}, 50);
  CHECK_THROWS_WITH_AS(read_idx(write(d / "trunc", trunc)), doctest::Contains("truncated or unreadable IDX file while reading the data"),
                       Error);
  CHECK_THROWS_WITH_AS(read_idx(write(d / "trunc.gz", trunc, true)), doctest::Contains("truncated"), Error);
  auto hdr = idx_bytes({10, 10}, 0);
  hdr.resize(9);
  CHECK_THROWS_WITH_AS(read_idx(write(d / "hdr", hdr)), doctest::Contains("while reading the dimensions"), Error);
  CHECK_THROWS_WITH_AS(read_idx(write(d / "huge", idx_bytes({0x7fffffff, 0x7fffffff, 0x7fffffff}, 0)), 1 << 20),
                       doctest::Contains("header announces more than"), Error);
  CHECK_THROWS_WITH_AS(read_idx(write(d / "zero", std::vector<unsigned char>{})), doctest::Contains("magic number"), Error);
  fs::remove_all(d);
}

TEST_CASE("IdxDataset validates, shards and batches") {
  const auto d = temp_dir();
  const auto imgs = write(d / "img", idx_bytes({5, 2, 2}, 20));
  auto lbl = idx_bytes({5}, 0);
  for (unsigned char c : {3, 1, 4, 1, 5}) lbl.push_back(c);
  const auto lbls = write(d / "lbl", lbl);
  IdxDataset ds(imgs, lbls, 0.5f);
  CHECK(ds.size() == 5);
  CHECK(ds.image_shape() == std::vector<int>{1, 2, 2});
  Tensor<CPU, float> data, labels;
  ds.batch(3, 4, data, labels);  // wraps around after sample 4
  CHECK(data.shape() == Shape{4, 1, 2, 2});
  CHECK(labels.data_to_host() == std::vector<float>{1, 5, 3, 1});
  CHECK(data.data()[0] == doctest::Approx((3 * 4 * 7 % 256) * 0.5));

  std::set<float> seen;
  for (int r = 0; r < 2; ++r) {
    IdxDataset s(imgs, lbls);
    s.shard(r, 2);
    CHECK(s.size() == (r == 0 ? 3u : 2u));
  }
  IdxDataset s1(imgs, lbls);
  s1.shard(1, 2);
  s1.batch(0, 2, data, labels);
  CHECK(labels.data_to_host() == std::vector<float>{1, 1});  // samples 1 and 3
  CHECK_THROWS_AS(s1.shard(2, 2), Error);

  const auto short_lbls = write(d / "lbl4", idx_bytes({4}, 4));
  CHECK_THROWS_WITH_AS(IdxDataset(imgs, short_lbls), doctest::Contains("image/label count mismatch"), Error);
  CHECK_THROWS_WITH_AS(IdxDataset(imgs, imgs), doctest::Contains("labels must be 1-dimensional"), Error);
  fs::remove_all(d);
}

TEST_CASE("Fashion-MNIST from the Debian package, when installed") {
  const fs::path dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir / "t10k-images-idx3-ubyte.gz")) {
    MESSAGE("dataset-fashion-mnist not installed; this case checks nothing");
    return;
  }
  IdxDataset test(dir / "t10k-images-idx3-ubyte.gz", dir / "t10k-labels-idx1-ubyte.gz");
  CHECK(test.size() == 10000);
  CHECK(test.image_shape() == std::vector<int>{1, 28, 28});
  Tensor<CPU, float> data, labels;
  test.batch(0, 100, data, labels);
  for (float l : labels.data_span()) CHECK((l >= 0 && l <= 9));
  for (float x : data.data_span()) REQUIRE((x >= 0 && x < 1));
}
