#include <doctest/doctest.h>
#include <poseidon/core/message.hpp>

#include <cmath>

using namespace poseidon;

namespace {
Message sample() {
  Message m(SourceLoc{"net.prototxt", 3, 1});
  m.add("num_output", Scalar{"20", Scalar::Kind::number}, SourceLoc{"net.prototxt", 4, 5});
  m.add("pool", Scalar{"MAX", Scalar::Kind::identifier}, SourceLoc{"net.prototxt", 5, 5});
  m.add("name", Scalar{"conv1", Scalar::Kind::string}, SourceLoc{"net.prototxt", 6, 5});
  m.add("pad", Scalar{"1", Scalar::Kind::number}, SourceLoc{"net.prototxt", 7, 5});
  m.add("pad", Scalar{"2", Scalar::Kind::number}, SourceLoc{"net.prototxt", 8, 5});
  m.add("lr", Scalar{"-1.5e-3", Scalar::Kind::number}, SourceLoc{"net.prototxt", 9, 5});
  m.add("hex", Scalar{"0x1F", Scalar::Kind::number}, SourceLoc{"net.prototxt", 10, 5});
  m.add("weight_filler", Message().set("type", "xavier"), SourceLoc{"net.prototxt", 11, 5});
  return m;
}
}  // namespace

TEST_CASE("Message typed access with defaults") {
  const Message m = sample();
  CHECK(m.get("num_output", 0) == 20);
  CHECK(m.get("missing", 7) == 7);
  CHECK(m.get<std::string>("name", "") == "conv1");
  CHECK(m.get("lr", 0.0) == doctest::Approx(-1.5e-3));
  CHECK(m.get("hex", 0) == 31);
  CHECK(m.get("pad", 0) == 2);  // last occurrence wins, as in protobuf
  CHECK(m.get_all<int>("pad") == std::vector<int>{1, 2});
  CHECK(m.count("pad") == 2);
  CHECK(m.get_enum("pool", {"MAX", "AVE", "STOCHASTIC"}, 1) == 0);
  CHECK(m.get_enum("absent", {"MAX", "AVE"}, 1) == 1);
  CHECK(m.child("weight_filler").get<std::string>("type", "") == "xavier");
  CHECK(m.child("bias_filler").empty());
  CHECK(m.children("weight_filler").size() == 1);
}

TEST_CASE("Message errors name the field and its location") {
  const Message m = sample();
  CHECK_THROWS_WITH_AS((void)m.get("name", 0), doctest::Contains("net.prototxt:6:5: field 'name' expects an integer"), Error);
  CHECK_THROWS_WITH_AS((void)m.get("pool", true), doctest::Contains("expects true or false"), Error);
  CHECK_THROWS_WITH_AS((void)m.get_enum("pool", {"AVE"}, 0), doctest::Contains("net.prototxt:5:5: field 'pool' has value 'MAX'; expected one of: AVE"),
                       Error);
  CHECK_THROWS_WITH_AS((void)m.get("weight_filler", 0), doctest::Contains("is a message"), Error);
  CHECK_THROWS_WITH_AS((void)m.child("pad"), doctest::Contains("is a value; expected a message"), Error);
  CHECK_THROWS_WITH_AS((void)m.required<int>("kernel_size", "layer 'c'"), doctest::Contains("layer 'c' at net.prototxt:3:1: missing required field 'kernel_size'"), Error);
  CHECK_THROWS_WITH_AS(m.check_fields({"num_output", "pool", "name", "pad", "lr", "weight_filler"}, "convolution_param"),
                       doctest::Contains("net.prototxt:10:5: unknown field 'hex' in convolution_param"), Error);
  Message big;
  big.add("n", Scalar{"99999999999", Scalar::Kind::number});
  CHECK_THROWS_WITH_AS((void)big.get("n", 0), doctest::Contains("out of range"), Error);
  CHECK(big.get("n", std::int64_t{0}) == 99999999999LL);
  Message neg;
  neg.add("n", Scalar{"-3", Scalar::Kind::number});
  CHECK_THROWS_AS((void)neg.get("n", 0u), Error);
}

TEST_CASE("Message floats: inf, nan, suffixes") {
  Message m;
  m.add("a", Scalar{"inf", Scalar::Kind::identifier});
  m.add("b", Scalar{"-inf", Scalar::Kind::number});
  m.add("c", Scalar{"1.5f", Scalar::Kind::number});
  m.add("d", Scalar{"7", Scalar::Kind::number});
  m.add("e", Scalar{"abc", Scalar::Kind::identifier});
  CHECK(std::isinf(m.get("a", 0.0f)));
  CHECK(m.get("b", 0.0) < 0);
  CHECK(m.get("c", 0.0) == 1.5);
  CHECK(m.get("d", 0.0) == 7.0);
  CHECK_THROWS_WITH_AS((void)m.get("e", 0.0), doctest::Contains("expects a number"), Error);
}

TEST_CASE("Message builder") {
  Message m;
  m.set("num_output", 10).set("bias_term", false).set("name", "fc").set_enum("pool", "AVE").set("std", 0.01);
  CHECK(m.get("num_output", 0) == 10);
  CHECK(m.get("bias_term", true) == false);
  CHECK(m.get<std::string>("name", "") == "fc");
  CHECK(m.get_enum("pool", {"MAX", "AVE"}, 0) == 1);
  CHECK(m.get("std", 0.0) == doctest::Approx(0.01));
  CHECK(m.loc().str() == "<builder>");
}

TEST_CASE("Message::add(Field) copies fields as they stand, locations and child messages included") {
  const Message m = sample();
  Message copy(m.loc());
  for (const Field& f : m.fields())
    if (f.name != "pool") copy.add(f);
  REQUIRE(copy.fields().size() == m.fields().size() - 1);
  CHECK(copy.get("num_output", 0) == 20);
  CHECK(copy.get_all<int>("pad") == std::vector<int>{1, 2});
  CHECK(copy.get<std::string>("name", "") == "conv1");
  CHECK_FALSE(copy.has("pool"));
  CHECK(copy.child("weight_filler").get<std::string>("type", "") == "xavier");
  for (std::size_t i = 0; i < copy.fields().size(); ++i) {
    const Field& f = copy.fields()[i];
    CHECK(f.loc.line == (i == 0 ? 4 : static_cast<int>(i) + 5));  // the lines of sample(), "pool" (line 5) skipped
    CHECK(f.loc.file == "net.prototxt");
  }
}
