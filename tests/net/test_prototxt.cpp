// Tests of the prototxt reader and printer: every piece of the grammar, the errors and
// their file:line:col, the limits, the round trip, and real Caffe files read unchanged.
#include <doctest/doctest.h>

#include <poseidon/net/prototxt.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
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

/// A file in a fresh temporary folder, removed (with the folder) at scope exit.
struct TempFile {
  fs::path dir;
  fs::path path;
  TempFile(std::string_view name, std::string_view content) {
    std::random_device rd;
    dir = fs::temp_directory_path() / ("poseidon_prototxt_" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(dir);
    path = dir / std::string(name);
    std::ofstream(path, std::ios::binary) << content;
  }
  ~TempFile() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
};

const pd::Message* layer_named(const pd::Message& net, std::string_view field, std::string_view name) {
  for (const pd::Message* l : net.children(field))
    if (l->get<std::string>("name", "") == name) return l;
  return nullptr;
}

}  // namespace

TEST_SUITE("prototxt") {

// ---- grammar ---------------------------------------------------------------

TEST_CASE("scalar fields: integers, floats, identifiers, booleans") {
  const auto m = pd::parse_prototxt(R"(
    a: 42
    b: -7
    c: 0x1F
    d: -0X10
    e: 0
    f: 1.5
    g: .5
    h: 5.
    i: 1e-4
    j: -2.5E+3
    k: 1.0f
    l: 3F
    pool: MAX
    yes: true
    no: false
  )");
  CHECK(m.get<int>("a", 0) == 42);
  CHECK(m.get<int>("b", 0) == -7);
  CHECK(m.get<int>("c", 0) == 31);
  CHECK(m.get<int>("d", 0) == -16);
  CHECK(m.get<int>("e", 1) == 0);
  CHECK(m.get<double>("f", 0) == 1.5);
  CHECK(m.get<double>("g", 0) == 0.5);
  CHECK(m.get<double>("h", 0) == 5.0);
  CHECK(m.get<double>("i", 0) == doctest::Approx(1e-4));
  CHECK(m.get<double>("j", 0) == -2500.0);
  CHECK(m.get<float>("k", 0) == 1.0f);
  CHECK(m.get<float>("l", 0) == 3.0f);
  CHECK(m.get<std::string>("pool", "") == "MAX");
  CHECK(m.get<bool>("yes", false));
  CHECK_FALSE(m.get<bool>("no", true));
  CHECK(m.find("a")->scalar.kind == pd::Scalar::Kind::number);
  CHECK(m.find("k")->scalar.text == "1.0f");  // kept as written
  CHECK(m.find("pool")->scalar.kind == pd::Scalar::Kind::identifier);
  CHECK(m.find("yes")->scalar.kind == pd::Scalar::Kind::identifier);
  CHECK(m.get_enum("pool", {"MAX", "AVE", "STOCHASTIC"}, -1) == 0);
}

TEST_CASE("inf, -inf and nan are numbers") {
  const auto m = pd::parse_prototxt("a: inf b: -inf c: nan d: -infinity e: Infinity");
  CHECK(std::isinf(m.get<double>("a", 0)));
  CHECK(m.get<double>("a", 0) > 0);
  CHECK(m.get<double>("b", 0) < 0);
  CHECK(std::isinf(m.get<float>("b", 0)));
  CHECK(std::isnan(m.get<double>("c", 0)));
  CHECK(m.get<double>("d", 0) < 0);
  CHECK(std::isinf(m.get<double>("e", 0)));
  for (const auto& f : m.fields()) CHECK(f.scalar.kind == pd::Scalar::Kind::number);
  CHECK(m.find("b")->scalar.text == "-inf");
  // Any case, as protobuf reads them.
  const auto u = pd::parse_prototxt("a: INF b: -Inf c: NaN d: -INFINITY");
  CHECK(u.get<double>("a", 0) == std::numeric_limits<double>::infinity());
  CHECK(u.get<float>("b", 0) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(u.get<double>("c", 0)));
  CHECK(u.get<double>("d", 0) == -std::numeric_limits<double>::infinity());
  CHECK_THROWS_AS((void)u.get<int>("a", 0), pd::Error);
}

TEST_CASE("strings: both quotes, every escape, concatenation") {
  const auto m = pd::parse_prototxt(R"(
    a: "conv1"
    b: 'single "inside"'
    c: "tab\tnl\nbs\\dq\"sq\'cr\ra\ab\bf\fv\vq\?"
    d: "\101\102\103 \x41\x4a \0 \7"
    e: "a" 'b'
       # a comment between the parts
       "c"
    f: "caf\u00e9 \U0001F600"
    g: "# not a comment"
    h: ""
  )");
  CHECK(m.get<std::string>("a", "") == "conv1");
  CHECK(m.find("a")->scalar.kind == pd::Scalar::Kind::string);
  CHECK(m.get<std::string>("b", "") == "single \"inside\"");
  CHECK(m.get<std::string>("c", "") == "tab\tnl\nbs\\dq\"sq'cr\ra\ab\bf\fv\vq?");
  CHECK(m.get<std::string>("d", "") == std::string("ABC AJ \0 \7", 10));
  CHECK(m.get<std::string>("e", "") == "abc");
  CHECK(m.get<std::string>("f", "") == "caf\xC3\xA9 \xF0\x9F\x98\x80");
  CHECK(m.get<std::string>("g", "") == "# not a comment");
  CHECK(m.get<std::string>("h", "x").empty());
  CHECK(m.fields().size() == 8);
}

TEST_CASE("message syntax: braces, colon-braces, angle brackets") {
  const auto m = pd::parse_prototxt(R"(
    a { x: 1 }
    b: { x: 2 }
    c < x: 3 >
    d: < x: 4 e { y: 5 } >
    empty {}
  )");
  CHECK(m.child("a").get<int>("x", 0) == 1);
  CHECK(m.child("b").get<int>("x", 0) == 2);
  CHECK(m.child("c").get<int>("x", 0) == 3);
  CHECK(m.child("d").child("e").get<int>("y", 0) == 5);
  CHECK(m.find("empty")->is_message);
  CHECK(m.child("empty").empty());
}

TEST_CASE("separators, repeated fields, comments, whitespace") {
  const auto m = pd::parse_prototxt(
      "top: \"a\", top: \"b\"; top: \"c\"  # trailing comment\n"
      "# full-line comment\r\n"
      "param { lr_mult: 1, decay_mult: 1; }, param { lr_mult: 2 };\n"
      "\t\v\fx:1");
  CHECK(m.get_all<std::string>("top") == std::vector<std::string>{"a", "b", "c"});
  CHECK(m.count("param") == 2);
  CHECK(m.children("param")[1]->get<int>("lr_mult", 0) == 2);
  CHECK(m.get<std::string>("top", "") == "c");  // last occurrence wins for a singular read
  CHECK(m.get<int>("x", 0) == 1);
}

TEST_CASE("list syntax expands into repeated fields") {
  const auto m = pd::parse_prototxt(R"(
    dim: [1, 3, 224, 224]
    name: ["a", 'b']
    shape: [{ dim: 1 }, < dim: 2 >, {}]
    none: []
    mixed: [1, x, "s"] after: 1
  )");
  CHECK(m.get_all<int>("dim") == std::vector<int>{1, 3, 224, 224});
  CHECK(m.get_all<std::string>("name") == std::vector<std::string>{"a", "b"});
  const auto shapes = m.children("shape");
  REQUIRE(shapes.size() == 3);
  CHECK(shapes[0]->get<int>("dim", 0) == 1);
  CHECK(shapes[1]->get<int>("dim", 0) == 2);
  CHECK(shapes[2]->empty());
  CHECK(m.count("none") == 0);
  CHECK(m.count("mixed") == 3);
  CHECK(m.get<int>("after", 0) == 1);
  // Every element carries the location of the field name.
  for (const auto& f : m.fields())
    if (f.name == "dim") CHECK(f.loc.line == 2);
}

TEST_CASE("locations: file, line and column of every field name and message") {
  const auto m = pd::parse_prototxt("name: \"n\"\nlayer {\n  type: \"Data\"\n    inner { x: 1 }\n}\n",
                                    "net.prototxt");
  CHECK(m.loc().file == "net.prototxt");
  CHECK(m.loc().line == 1);
  CHECK(m.loc().column == 1);
  const auto& fields = m.fields();
  CHECK(fields[0].loc.str() == "net.prototxt:1:1");
  CHECK(fields[1].loc.str() == "net.prototxt:2:1");
  const auto& layer = m.child("layer");
  CHECK(layer.loc().str() == "net.prototxt:2:1");
  CHECK(layer.find("type")->loc.str() == "net.prototxt:3:3");
  CHECK(layer.child("inner").loc().str() == "net.prototxt:4:5");
  CHECK(layer.child("inner").find("x")->loc.str() == "net.prototxt:4:13");
  // Default file name, and Message errors point back into the text.
  const auto d = pd::parse_prototxt("\n\n   k: \"nope\"");
  CHECK(d.find("k")->loc.str() == "<text>:3:4");
  try {
    (void)d.get<int>("k", 0);
    FAIL("expected an error");
  } catch (const pd::Error& e) {
    CHECK(starts_with(e.what(), "<text>:3:4:"));
  }
}

TEST_CASE("a byte order mark is skipped, an empty text is an empty message") {
  const auto m = pd::parse_prototxt("\xEF\xBB\xBFx: 1");
  CHECK(m.get<int>("x", 0) == 1);
  CHECK(m.find("x")->loc.column == 1);
  CHECK(pd::parse_prototxt("").empty());
  CHECK(pd::parse_prototxt("  # only a comment\n\n").empty());
}

// ---- errors ------------------------------------------------------------------

TEST_CASE("error: missing ':' or '{' names the field and what was found") {
  const std::string e = parse_error("layer {\n  convolution_param {\n    kernel_size }\n}\n", "lenet.prototxt");
  CHECK(e == "lenet.prototxt:3:17: expected ':' or '{' after field name 'kernel_size', found '}'");
  CHECK(starts_with(parse_error("a 5"), "t.prototxt:1:3: expected ':' or '{' after field name 'a', found '5'"));
  CHECK(contains(parse_error("a"), "found end of input"));
}

TEST_CASE("error: a line-7 mistake says :7:") {
  const std::string text =
      "name: \"x\"\n"          // 1
      "layer {\n"              // 2
      "  name: \"conv1\"\n"    // 3
      "  # comment\n"          // 4
      "  convolution_param {\n"  // 5
      "    num_output: 20\n"   // 6
      "    kernel_size: 5x\n"  // 7
      "  }\n"
      "}\n";
  const std::string e = parse_error(text, "net.prototxt");
  CHECK(starts_with(e, "net.prototxt:7:18:"));
  CHECK(contains(e, "invalid number '5x'"));
  CHECK(contains(e, "kernel_size"));
}

TEST_CASE("error: unterminated messages, lists and strings report where they started") {
  std::string e = parse_error("a: 1\nlayer {\n  b {\n  }\n");
  CHECK(starts_with(e, "t.prototxt:2:7:"));
  CHECK(contains(e, "'layer' is never closed"));
  CHECK(contains(e, "end of input"));

  e = parse_error("x: 1\n  name: \"conv1\n  type: \"Data\"\n");
  CHECK(starts_with(e, "t.prototxt:2:9:"));
  CHECK(contains(e, "unterminated string"));
  CHECK(contains(e, "end of line"));

  e = parse_error("name: 'abc");
  CHECK(starts_with(e, "t.prototxt:1:7:"));
  CHECK(contains(e, "end of input"));

  e = parse_error("name: \"abc\\");
  CHECK(contains(e, "unterminated string"));

  e = parse_error("dim: [1, 2\n");
  CHECK(starts_with(e, "t.prototxt:1:6:"));
  CHECK(contains(e, "list of 'dim' is never closed"));
}

TEST_CASE("error: stray and mismatched closers") {
  std::string e = parse_error("a: 1\n}\n");
  CHECK(starts_with(e, "t.prototxt:2:1:"));
  CHECK(contains(e, "unexpected '}'"));
  CHECK(contains(parse_error("a: 1 >"), "unexpected '>': no message is open"));
  e = parse_error("a { b: 1 >");
  CHECK(starts_with(e, "t.prototxt:1:10:"));
  CHECK(contains(e, "expected '}' to close 'a' (opened at line 1, column 3), found '>'"));
  e = parse_error("a < b: 1 }");
  CHECK(contains(e, "expected '>' to close 'a'"));
}

TEST_CASE("error: bad escapes") {
  std::string e = parse_error("s: \"ab\\qc\"");
  CHECK(starts_with(e, "t.prototxt:1:7:"));
  CHECK(contains(e, "invalid escape sequence '\\q'"));
  CHECK(contains(parse_error("s: \"\\xZZ\""), "hex digits"));
  CHECK(contains(parse_error("s: \"\\777\""), "out of range"));
  CHECK(contains(parse_error("s: \"\\u12\""), "4 hex digits"));
  CHECK(contains(parse_error("s: \"\\uD800\""), "no Unicode character"));
  CHECK(contains(parse_error("s: \"\\U00110000\""), "no Unicode character"));
}

TEST_CASE("error: invalid numbers and values") {
  CHECK(contains(parse_error("a: 1.2.3"), "invalid number '1.2.3'"));
  CHECK(contains(parse_error("a: 0x"), "hexadecimal"));
  CHECK(contains(parse_error("a: 0xG"), "invalid number"));
  CHECK(contains(parse_error("a: 1e"), "exponent"));
  CHECK(contains(parse_error("a: 1e+"), "exponent"));
  CHECK(contains(parse_error("a: 017"), "octal"));
  CHECK(contains(parse_error("a: 12abc"), "invalid number '12abc'"));
  CHECK(contains(parse_error("a: ."), "invalid number"));
  CHECK(contains(parse_error("a: -"), "expected a number after '-' for field 'a', found end of input"));
  CHECK(contains(parse_error("a: -foo"), "expected a number after '-' for field 'a', found 'foo'"));
  CHECK(contains(parse_error("a: - 5"), "expected a number after '-' for field 'a', found ' '"));
  CHECK(contains(parse_error("a: }"), "expected a value for field 'a', found '}'"));
  CHECK(contains(parse_error("a: +5"), "expected a value for field 'a', found '+'"));
  CHECK(contains(parse_error("a:"), "expected a value for field 'a', found end of input"));
  CHECK(contains(parse_error("a: [1,]"), "expected a value in the list of 'a', found ']'"));
  CHECK(contains(parse_error("a: [1 2]"), "expected ',' or ']' in the list of 'a', found '2'"));
  CHECK(contains(parse_error("a: [[1]]"), "expected a value in the list"));
  CHECK(contains(parse_error("5: 1"), "expected a field name, found '5'"));
  CHECK(contains(parse_error(", a: 1"), "expected a field name, found ','"));
  CHECK(contains(parse_error("a: 1,, b: 2"), "expected a field name, found ','"));
  CHECK(contains(parse_error(std::string("a: 1\n\x01")), "byte 0x01"));
  CHECK(contains(parse_error("[ext.field]: 1"), "expected a field name, found '['"));
}

TEST_CASE("errors from real files name the file, line and column") {
  std::string text;
  {
    std::ifstream in(data_dir() / "bvlc_alexnet_train_val.prototxt");
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  // Break line 101 (1-based, "    lr_mult: 1" of conv2): drop the ':' after its field name.
  std::size_t at = 0;
  for (int line = 1; line < 101; ++line) at = text.find('\n', at) + 1;
  const std::size_t colon = text.find(':', at);
  REQUIRE(colon < text.find('\n', at));
  const std::string field = text.substr(text.find_first_not_of(' ', at), colon - text.find_first_not_of(' ', at));
  text.erase(colon, 1);
  const std::string e = parse_error(text, "train_val.prototxt");
  CHECK(starts_with(e, "train_val.prototxt:101:13:"));
  CHECK(contains(e, "after field name '" + field + "'"));
}

// ---- limits and hostile input --------------------------------------------------

TEST_CASE("nesting depth is limited; deep input fails cleanly, without recursion") {
  auto nested = [](std::size_t depth, char open, char close) {
    std::string s;
    for (std::size_t i = 0; i < depth; ++i) (s += "m") += open;
    s += "x: 1";
    s.append(depth, close);
    return s;
  };
  const auto ok = pd::parse_prototxt(nested(100, '{', '}'));
  const pd::Message* p = &ok;
  for (int i = 0; i < 100; ++i) p = &p->child("m");
  CHECK(p->get<int>("x", 0) == 1);

  std::string e = parse_error(nested(101, '{', '}'));
  CHECK(contains(e, "nested deeper than 100 levels"));
  CHECK(starts_with(e, "t.prototxt:1:202:"));
  // A million open braces: an error, not a stack overflow.
  CHECK(contains(parse_error(nested(1'000'000, '<', '>')), "nested deeper"));
  CHECK(contains(parse_error(std::string(1'000'000, '{')), "expected a field name"));

  pd::PrototxtLimits shallow;
  shallow.max_depth = 2;
  CHECK_NOTHROW((void)pd::parse_prototxt("a { b { c: 1 } }", "<text>", shallow));
  CHECK_THROWS_AS((void)pd::parse_prototxt("a { b { c { } } }", "<text>", shallow), pd::Error);
}

TEST_CASE("input size is limited") {
  pd::PrototxtLimits tiny;
  tiny.max_bytes = 8;
  CHECK_NOTHROW((void)pd::parse_prototxt("a: 1234", "<text>", tiny));
  try {
    (void)pd::parse_prototxt("a: 123456789", "small.prototxt", tiny);
    FAIL("expected an error");
  } catch (const pd::Error& e) {
    CHECK(contains(e.what(), "small.prototxt"));
    CHECK(contains(e.what(), "limit of 8 bytes"));
  }
  TempFile f("big.prototxt", "a: 123456789\n");
  try {
    (void)pd::read_prototxt(f.path, tiny);
    FAIL("expected an error");
  } catch (const pd::Error& e) {
    CHECK(contains(e.what(), f.path.string()));
    CHECK(contains(e.what(), "limit of 8 bytes"));
  }
  CHECK(pd::PrototxtLimits{}.max_bytes == 64u << 20);
}

// A quadratic reader would take minutes here; ctest's time limit catches that, not an assertion.
TEST_CASE("many fields and long tokens parse") {
  std::string text;
  for (int i = 0; i < 100000; ++i) text += "top: \"blob\" ";
  text += "s: \"" + std::string(1 << 20, 'x') + "\" id: " + std::string(1 << 16, 'y');
  const auto m = pd::parse_prototxt(text);
  CHECK(m.count("top") == 100000);
  CHECK(m.get<std::string>("s", "").size() == (1u << 20));
  // A megabyte-long field name does not make a megabyte-long error.
  const std::string e = parse_error(std::string(1 << 20, 'n') + " 5");
  CHECK(e.size() < 300);
}

// ---- files -------------------------------------------------------------------

TEST_CASE("read_prototxt: missing file, directory, and error locations") {
  try {
    (void)pd::read_prototxt("/nonexistent/dir/lenet.prototxt");
    FAIL("expected an error");
  } catch (const pd::Error& e) {
    CHECK(contains(e.what(), "/nonexistent/dir/lenet.prototxt"));
    CHECK(contains(e.what(), "cannot read"));
  }
  CHECK_THROWS_WITH_AS((void)pd::read_prototxt(fs::temp_directory_path()),
                       doctest::Contains("directory"), pd::Error);

  TempFile f("bad.prototxt", "a: 1\nb: 2\nc: 3\nd {\n  e: 4\n  f: 5\n  g: \"unterminated\n}\n");
  try {
    (void)pd::read_prototxt(f.path);
    FAIL("expected an error");
  } catch (const pd::Error& e) {
    CHECK(starts_with(e.what(), f.path.string() + ":7:6:"));
    CHECK(contains(e.what(), "unterminated string"));
  }
  TempFile g("good.prototxt", "solver_mode: GPU\n");
  const auto m = pd::read_prototxt(g.path);
  CHECK(m.find("solver_mode")->loc.str() == g.path.string() + ":1:1");
}

TEST_CASE("Caffe LeNet net and solver") {
  const auto net = pd::read_prototxt(data_dir() / "lenet_train_test.prototxt");
  CHECK(net.get<std::string>("name", "") == "LeNet");
  CHECK(net.count("layer") == 11);
  const auto layers = net.children("layer");
  CHECK(layers[0]->child("include").get_enum("phase", {"TRAIN", "TEST"}, -1) == 0);
  CHECK(layers[1]->child("include").get_enum("phase", {"TRAIN", "TEST"}, -1) == 1);
  CHECK(layers[0]->child("transform_param").get<double>("scale", 0) == 0.00390625);
  CHECK(layers[0]->child("data_param").get<std::string>("source", "") == "examples/mnist/mnist_train_lmdb");
  CHECK(layers[1]->child("data_param").get<int>("batch_size", 0) == 100);
  CHECK(layers[0]->get_all<std::string>("top") == std::vector<std::string>{"data", "label"});
  const auto* conv1 = layer_named(net, "layer", "conv1");
  REQUIRE(conv1);
  CHECK(conv1->get<std::string>("type", "") == "Convolution");
  CHECK(conv1->count("param") == 2);
  CHECK(conv1->child("convolution_param").get<int>("num_output", 0) == 20);
  CHECK(conv1->child("convolution_param").child("weight_filler").get<std::string>("type", "") == "xavier");
  CHECK(layer_named(net, "layer", "pool1")->child("pooling_param").get<std::string>("pool", "") == "MAX");
  CHECK(layer_named(net, "layer", "ip1")->child("inner_product_param").get<int>("num_output", 0) == 500);
  CHECK(layer_named(net, "layer", "loss")->get_all<std::string>("bottom") ==
        std::vector<std::string>{"ip2", "label"});
  check_round_trip(net);

  const auto solver = pd::read_prototxt(data_dir() / "lenet_solver.prototxt");
  CHECK(solver.get<std::string>("net", "") == "examples/mnist/lenet_train_test.prototxt");
  CHECK(solver.get<int>("test_iter", 0) == 100);
  CHECK(solver.get<double>("base_lr", 0) == doctest::Approx(0.01));
  CHECK(solver.get<std::string>("lr_policy", "") == "inv");
  CHECK(solver.get<double>("power", 0) == 0.75);
  CHECK(solver.get<int>("max_iter", 0) == 10000);
  CHECK(solver.get_enum("solver_mode", {"CPU", "GPU"}, -1) == 1);
  CHECK(solver.fields().size() == 14);
  check_round_trip(solver);
}

TEST_CASE("Caffe CIFAR-10 quick") {
  const auto net = pd::read_prototxt(data_dir() / "cifar10_quick_train_test.prototxt");
  CHECK(net.get<std::string>("name", "") == "CIFAR10_quick");
  CHECK(net.count("layer") == 15);
  int convs = 0;
  int ave = 0;
  for (const auto* l : net.children("layer")) {
    convs += l->get<std::string>("type", "") == "Convolution";
    if (l->has("pooling_param")) ave += l->child("pooling_param").get<std::string>("pool", "") == "AVE";
  }
  CHECK(convs == 3);
  CHECK(ave == 2);
  CHECK(layer_named(net, "layer", "conv1")->child("convolution_param").child("weight_filler").get<double>(
            "std", 0) == doctest::Approx(0.0001));
  CHECK(layer_named(net, "layer", "conv3")->child("convolution_param").get<int>("num_output", 0) == 64);
  check_round_trip(net);
}

TEST_CASE("BVLC AlexNet") {
  const auto net = pd::read_prototxt(data_dir() / "bvlc_alexnet_train_val.prototxt");
  CHECK(net.get<std::string>("name", "") == "AlexNet");
  CHECK(net.count("layer") == 26);
  int with_params = 0;
  for (const auto* l : net.children("layer")) {
    if (!l->has("param")) continue;
    ++with_params;
    const auto params = l->children("param");
    REQUIRE(params.size() == 2);
    CHECK(params[0]->get<int>("lr_mult", 0) == 1);
    CHECK(params[0]->get<int>("decay_mult", -1) == 1);
    CHECK(params[1]->get<int>("lr_mult", 0) == 2);
    CHECK(params[1]->get<int>("decay_mult", -1) == 0);
  }
  CHECK(with_params == 8);
  const auto& conv2 = layer_named(net, "layer", "conv2")->child("convolution_param");
  CHECK(conv2.get<int>("group", 1) == 2);
  CHECK(conv2.get<int>("pad", 0) == 2);
  CHECK(conv2.child("bias_filler").get<float>("value", 0) == doctest::Approx(0.1f));
  CHECK(layer_named(net, "layer", "conv3")->child("convolution_param").get<int>("group", 1) == 1);
  const auto& lrn = layer_named(net, "layer", "norm1")->child("lrn_param");
  CHECK(lrn.get<int>("local_size", 0) == 5);
  CHECK(lrn.get<double>("alpha", 0) == doctest::Approx(1e-4));
  CHECK(lrn.get<double>("beta", 0) == 0.75);
  CHECK(layer_named(net, "layer", "fc6")->child("inner_product_param").get<int>("num_output", 0) == 4096);
  CHECK(layer_named(net, "layer", "drop7")->child("dropout_param").get<double>("dropout_ratio", 0) == 0.5);
  const auto data = net.children("layer");
  CHECK(data[0]->child("transform_param").get<bool>("mirror", false));
  CHECK_FALSE(data[1]->child("transform_param").get<bool>("mirror", true));
  CHECK(data[0]->child("transform_param").get<int>("crop_size", 0) == 227);
  check_round_trip(net);
}

TEST_CASE("old V1 format: layers { type: CONVOLUTION } inside a solver") {
  const auto solver = pd::read_prototxt(data_dir() / "lenet_consolidated_solver.prototxt");
  CHECK(solver.get_all<int>("test_iter") == std::vector<int>{100, 600});
  const auto states = solver.children("test_state");
  REQUIRE(states.size() == 2);
  CHECK(states[1]->get<std::string>("stage", "") == "test-on-train-set");
  CHECK(solver.get<int>("random_seed", 0) == 1701);
  const auto& net = solver.child("net_param");
  CHECK(net.get<std::string>("name", "") == "LeNet");
  CHECK(net.count("layers") == 12);
  CHECK(net.count("layer") == 0);
  const auto* conv1 = layer_named(net, "layers", "conv1");
  REQUIRE(conv1);
  CHECK(conv1->find("type")->scalar.kind == pd::Scalar::Kind::identifier);
  CHECK(conv1->get<std::string>("type", "") == "CONVOLUTION");
  CHECK(conv1->get_all<double>("blobs_lr") == std::vector<double>{1, 2});
  const auto data = net.children("layers");
  CHECK(data[1]->child("include").get<std::string>("stage", "") == "test-on-test-set");
  CHECK(data[1]->child("include").get<std::string>("phase", "") == "TEST");
  CHECK(layer_named(net, "layers", "loss")->get<std::string>("type", "") == "SOFTMAX_LOSS");
  check_round_trip(solver);
}

TEST_CASE("GoogLeNet, VGG and ResNet excerpts") {
  // GoogLeNet (models/bvlc_googlenet/train_val.prototxt): an inception branch and its concat.
  const auto googlenet = pd::parse_prototxt(R"(
name: "GoogleNet"
layer {
  name: "inception_3a/1x1"
  type: "Convolution"
  bottom: "pool2/3x3_s2"
  top: "inception_3a/1x1"
  param {
    lr_mult: 1
    decay_mult: 1
  }
  param {
    lr_mult: 2
    decay_mult: 0
  }
  convolution_param {
    num_output: 64
    kernel_size: 1
    weight_filler {
      type: "xavier"
      std: 0.03
    }
    bias_filler {
      type: "constant"
      value: 0.2
    }
  }
}
layer {
  name: "inception_3a/pool"
  type: "Pooling"
  bottom: "pool2/3x3_s2"
  top: "inception_3a/pool"
  pooling_param {
    pool: MAX
    kernel_size: 3
    stride: 1
    pad: 1
  }
}
layer {
  name: "inception_3a/output"
  type: "Concat"
  bottom: "inception_3a/1x1"
  bottom: "inception_3a/3x3"
  bottom: "inception_3a/5x5"
  bottom: "inception_3a/pool_proj"
  top: "inception_3a/output"
}
layer {
  name: "loss1/loss"
  type: "SoftmaxWithLoss"
  bottom: "loss1/classifier"
  bottom: "label"
  top: "loss1/loss1"
  loss_weight: 0.3
}
)",
                                            "googlenet_excerpt");
  CHECK(googlenet.count("layer") == 4);
  CHECK(layer_named(googlenet, "layer", "inception_3a/output")->count("bottom") == 4);
  CHECK(layer_named(googlenet, "layer", "loss1/loss")->get<float>("loss_weight", 1) == doctest::Approx(0.3f));
  check_round_trip(googlenet);

  // VGG-16 deploy (the model zoo gist): the old input / input_dim header.
  const auto vgg = pd::parse_prototxt(R"(name: "VGG_ILSVRC_16_layers"
input: "data"
input_dim: 10
input_dim: 3
input_dim: 224
input_dim: 224
layers {
  bottom: "data"
  top: "conv1_1"
  name: "conv1_1"
  type: CONVOLUTION
  convolution_param {
    num_output: 64
    pad: 1
    kernel_size: 3
  }
}
layers {
  bottom: "conv1_1"
  top: "conv1_1"
  name: "relu1_1"
  type: RELU
}
)",
                                      "vgg_excerpt");
  CHECK(vgg.get_all<int>("input_dim") == std::vector<int>{10, 3, 224, 224});
  CHECK(vgg.count("layers") == 2);
  check_round_trip(vgg);

  // ResNet-50 deploy (KaimingHe/deep-residual-networks): BatchNorm, Scale, Eltwise.
  const auto resnet = pd::parse_prototxt(R"(name: "ResNet-50"
input: "data"
input_dim: 1
input_dim: 3
input_dim: 224
input_dim: 224

layer {
	bottom: "data"
	top: "conv1"
	name: "conv1"
	type: "Convolution"
	convolution_param {
		num_output: 64
		kernel_size: 7
		pad: 3
		stride: 2
	}
}

layer {
	bottom: "conv1"
	top: "conv1"
	name: "bn_conv1"
	type: "BatchNorm"
	batch_norm_param {
		use_global_stats: true
	}
}

layer {
	bottom: "conv1"
	top: "conv1"
	name: "scale_conv1"
	type: "Scale"
	scale_param {
		bias_term: true
	}
}

layer {
	bottom: "res2a_branch1"
	bottom: "res2a_branch2c"
	top: "res2a"
	name: "res2a"
	type: "Eltwise"
}
)",
                                         "resnet_excerpt");
  CHECK(resnet.count("layer") == 4);
  CHECK(layer_named(resnet, "layer", "bn_conv1")->child("batch_norm_param").get<bool>("use_global_stats", false));
  CHECK(layer_named(resnet, "layer", "conv1")->find("type")->loc.str() == "resnet_excerpt:12:2");
  check_round_trip(resnet);

  // The newer Input layer with a shape list, in list syntax.
  const auto input = pd::parse_prototxt(
      R"(layer { name: "data" type: "Input" top: "data" input_param { shape: { dim: [10, 3, 227, 227] } } })");
  CHECK(input.child("layer").child("input_param").child("shape").get_all<int>("dim") ==
        std::vector<int>{10, 3, 227, 227});
}

// ---- printer -------------------------------------------------------------------

TEST_CASE("printer: format, escapes and a round trip of every kind of field") {
  const auto m = pd::parse_prototxt(R"(
    name: "net \"q\" 'x' \\ \t\n\r\001\177 caf\u00e9"
    num: -0x1F f: 1.5e-3f inf: -inf e: MAX
    layer < a: [1, 2] b { c: .5 } >
    empty {}
  )");
  const std::string printed = pd::to_prototxt(m);
  CHECK(printed ==
        "name: \"net \\\"q\\\" \\'x\\' \\\\ \\t\\n\\r\\001\\177 caf\xC3\xA9\"\n"
        "num: -0x1F\n"
        "f: 1.5e-3f\n"
        "inf: -inf\n"
        "e: MAX\n"
        "layer {\n"
        "  a: 1\n"
        "  a: 2\n"
        "  b {\n"
        "    c: .5\n"
        "  }\n"
        "}\n"
        "empty {\n"
        "}\n");
  check_round_trip(m);
}

TEST_CASE("printer: messages built in C++") {
  pd::Message conv;
  conv.set("num_output", 96).set("bias_term", false).set("std", 0.01);
  pd::Message layer;
  layer.set("name", "conv1").set_enum("engine", "CAFFE").add("convolution_param", conv);
  pd::Message net;
  net.set("name", std::string("tiny")).add("layer", layer).add("layer", pd::Message{});
  net.set("x", std::numeric_limits<double>::infinity());
  const std::string printed = pd::to_prototxt(net);
  CHECK(contains(printed, "layer {\n  name: \"conv1\"\n  engine: CAFFE\n  convolution_param {\n    num_output: 96\n"));
  check_round_trip(net);

  // Text that is no valid token of its kind is written as a string rather than as broken text.
  pd::Message odd;
  odd.set_enum("e", "not an identifier");
  odd.add("n", pd::Scalar{"1 2", pd::Scalar::Kind::number});
  CHECK(pd::to_prototxt(odd) == "e: \"not an identifier\"\nn: \"1 2\"\n");
  pd::Message bad_name;
  bad_name.set("has space", 1);
  CHECK_THROWS_WITH_AS((void)pd::to_prototxt(bad_name), doctest::Contains("'has space'"), pd::Error);
}

TEST_CASE("same_content compares structure, not locations") {
  const auto a = pd::parse_prototxt("a: 1 b { c: \"x\" }", "one");
  const auto b = pd::parse_prototxt("\n\na: 1\nb: < c: 'x' >", "two");
  CHECK(pd::same_content(a, b));
  CHECK_FALSE(pd::same_content(a, pd::parse_prototxt("a: 1 b { c: x }")));    // kind differs
  CHECK_FALSE(pd::same_content(a, pd::parse_prototxt("a: 1 b { c: \"y\" }")));
  CHECK_FALSE(pd::same_content(a, pd::parse_prototxt("a: 1 b: 2")));
  CHECK_FALSE(pd::same_content(a, pd::parse_prototxt("a: 1")));
  CHECK_FALSE(pd::same_content(a, pd::parse_prototxt("b { c: \"x\" } a: 1")));  // order matters
}

}  // TEST_SUITE
