#include <doctest/doctest.h>
#include <poseidon/layers/euclidean_loss.hpp>
#include <poseidon/layers/inner_product.hpp>
#include <poseidon/layers/input.hpp>
#include <poseidon/layers/relu.hpp>
#include <poseidon/layers/split.hpp>
#include <poseidon/net/net.hpp>

#include <string>
#include <vector>

using namespace poseidon;
using NetF = Net<CPU, float>;
using NetD = Net<CPU, double>;

namespace {

// Records the order in which layers run backward, to check when hooks fire.
std::vector<std::string>* g_events = nullptr;

template <class D, class T>
class ProbeLayer final : public Layer<D, T> {
 public:
  using typename Layer<D, T>::Context;
  using typename Layer<D, T>::Vec;
  explicit ProbeLayer(const LayerParameter& p) : Layer<D, T>(p) {}
  [[nodiscard]] std::string_view type() const override { return "Probe"; }
  [[nodiscard]] bool supports_in_place() const override { return true; }
  void reshape(const Vec& b, const Vec& t) override { t[0]->reshape(b[0]->shape()); }

 protected:
  void forward_impl(Context& ctx, const Vec& b, const Vec& t) override {
    math::copy(ctx, b[0]->count(), b[0]->data(), t[0]->data());
  }
  void backward_impl(Context& ctx, const Vec& t, const std::vector<bool>& pd, const Vec& b) override {
    if (g_events) g_events->push_back("backward " + this->name());
    if (pd[0]) math::copy(ctx, t[0]->count(), t[0]->diff(), b[0]->diff());
  }
};
POSEIDON_REGISTER_LAYER("Probe", ProbeLayer)

const char* kMlp = R"(
name: "mlp"
layer { name: "in" type: "Input" top: "x" top: "target"
        input_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "p1" type: "Probe" bottom: "h" top: "h" }
layer { name: "relu1" type: "ReLU" bottom: "h" top: "h" }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "y"
        param { lr_mult: 1 } param { lr_mult: 2 }
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "p2" type: "Probe" bottom: "y" top: "y" }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "target" top: "loss" loss_weight: 2 }
layer { name: "test_only" type: "Probe" bottom: "y" top: "y_test" include { phase: TEST } }
)";

template <class T>
void fill_inputs(Net<CPU, T>& net) {
  Rng r(11);
  for (auto* name : {"x", "target"})
    for (auto& v : net.blob(name).data_span()) v = static_cast<T>(r.uniform<double>(-1, 1));
}

}  // namespace

TEST_CASE("Net builds from prototxt: layers, blobs, in-place tops, phases") {
  auto net = NetF::from_text(kMlp);
  CHECK(net.name() == "mlp");
  CHECK(net.num_layers() == 7);  // the TEST-only layer is filtered out
  CHECK(net.layer_index("test_only") == -1);
  CHECK(net.blob("h").shape() == Shape{4, 5});
  CHECK(net.blob("y").shape() == Shape{4, 2});
  CHECK(net.top_vecs(net.layer_index("relu1"))[0] == net.bottom_vecs(net.layer_index("relu1"))[0]);  // in place
  CHECK(net.input_blob_names() == std::vector<std::string>{"x", "target"});
  CHECK(net.output_blob_names() == std::vector<std::string>{"loss"});
  const auto& lp = net.learnable_params();
  REQUIRE(lp.size() == 4);
  CHECK(lp[0].name == "ip1[0]");
  CHECK(lp[3].lr_mult == 2.0f);
  CHECK(lp[2].tensor->shape() == Shape{2, 5});
  CHECK(net.summary().find("layer 'ip2' (InnerProduct) -> y (4,2)") != std::string::npos);

  NetState test;
  test.phase = Phase::test;
  auto tnet = NetF::from_text(kMlp, test);
  CHECK(tnet.num_layers() == 9);  // y now has two readers: a Split joins
  CHECK(tnet.has_blob("y_test"));
  CHECK(tnet.layer(tnet.layer_index("p2") + 1).type() == "Split");
}

// Double only: float finite differences with a step large enough to be accurate cross the ReLU kink.
TEST_CASE_TEMPLATE("Net backward gives the gradient of the weighted loss", T, double) {
  auto net = Net<CPU, T>::from_text(kMlp);
  fill_inputs(net);
  const T loss = net.forward();
  // EuclideanLoss * loss_weight 2, computed by hand from the blobs
  double expect = 0;
  auto y = net.blob("y").data_span();
  auto t = net.blob("target").data_span();
  for (std::size_t i = 0; i < y.size(); ++i) expect += (double(y[i]) - t[i]) * (double(y[i]) - t[i]);
  expect = 2 * expect / (2 * 4);
  CHECK(double(loss) == doctest::Approx(expect).epsilon(1e-5));

  net.clear_param_diffs();
  net.backward();
  // Finite differences on a few parameters of each layer.
  const double h = std::is_same_v<T, double> ? 1e-6 : 1e-2;
  const double tol = std::is_same_v<T, double> ? 1e-6 : 2e-2;
  for (const auto& p : net.learnable_params()) {
    auto analytic = p.tensor->diff_to_host();
    for (std::size_t j = 0; j < p.tensor->count(); j += 3) {
      T& w = p.tensor->data()[j];
      const T orig = w;
      w = static_cast<T>(orig + h);
      const double lp = net.forward();
      w = static_cast<T>(orig - h);
      const double lm = net.forward();
      w = orig;
      const double numeric = (lp - lm) / (2 * h);
      CAPTURE(p.name);
      CAPTURE(j);
      CHECK(double(analytic[j]) == doctest::Approx(numeric).epsilon(tol).scale(1.0));
    }
  }
}

TEST_CASE("Backward hooks fire top layer first, once per layer with parameters, before the layer below") {
  auto net = NetF::from_text(kMlp);
  fill_inputs(net);
  std::vector<std::string> events;
  g_events = &events;
  net.set_backward_hook([&](int layer, std::span<const int> done) {
    std::string e = "hook " + net.layer(layer).name() + ":";
    for (int p : done) e += " " + net.learnable_params()[static_cast<std::size_t>(p)].name;
    events.push_back(e);
  });
  net.forward();
  net.backward();
  g_events = nullptr;
  const std::vector<std::string> expected{"backward p2", "hook ip2: ip2[0] ip2[1]", "backward p1",
                                          "hook ip1: ip1[0] ip1[1]"};
  CHECK(events == expected);
}

TEST_CASE("A blob read twice gets a Split layer and the gradients add up") {
  const char* text = R"(
    layer { name: "in" type: "Input" top: "x" top: "t" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "a" type: "InnerProduct" bottom: "x" top: "a" inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
    layer { name: "b" type: "InnerProduct" bottom: "x" top: "b" inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
    layer { name: "la" type: "EuclideanLoss" bottom: "a" bottom: "t" top: "la" }
    layer { name: "lb" type: "EuclideanLoss" bottom: "b" bottom: "t" top: "lb" }
  )";
  NetState s;
  auto net = NetD::from_text(text, s);
  // x and t are both read twice: two splits after the Input layer.
  REQUIRE(net.num_layers() == 7);
  CHECK(net.layer(1).type() == "Split");
  CHECK(net.layer(1).name() == "x_in_0_split");
  CHECK(net.layer(2).type() == "Split");
  CHECK(net.has_blob("x_in_0_split_1"));
  CHECK(net.layer(net.layer_index("b")).param().bottom[0] == "x_in_0_split_1");
}

TEST_CASE("Parameters shared by name use one tensor and complete at the lowest user") {
  const char* text = R"(
    layer { name: "in" type: "Input" top: "x" top: "t" input_param { shape { dim: 2 dim: 4 } } }
    layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h" param { name: "w" } param { name: "b" }
            inner_product_param { num_output: 4 weight_filler { type: "gaussian" } } }
    layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "y" param { name: "w" } param { name: "b" }
            inner_product_param { num_output: 4 weight_filler { type: "gaussian" } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
  )";
  auto net = NetD::from_text(text);
  REQUIRE(net.learnable_params().size() == 2);
  auto& ip1 = net.layer_by_name("ip1");
  auto& ip2 = net.layer_by_name("ip2");
  CHECK(ip1.blobs()[0]->data() == ip2.blobs()[0]->data());
  CHECK(ip1.blobs()[0]->diff() == ip2.blobs()[0]->diff());
  std::vector<std::pair<std::string, std::size_t>> hooks;
  net.set_backward_hook([&](int l, std::span<const int> done) { hooks.emplace_back(net.layer(l).name(), done.size()); });
  net.forward();
  net.backward();
  CHECK(hooks == std::vector<std::pair<std::string, std::size_t>>{{"ip2", 0}, {"ip1", 2}});

  const char* mismatch = R"(
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 } } }
    layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h" param { name: "w" } inner_product_param { num_output: 4 } }
    layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "y" param { name: "w" } inner_product_param { num_output: 3 } }
  )";
  CHECK_THROWS_WITH_AS(NetF::from_text(mismatch), doctest::Contains("shared parameter 'w' has shape (3,4) here but (4,4) in layer 'ip1'"), Error);
}

TEST_CASE("Backward is skipped where no loss depends on it, unless force_backward") {
  const char* text = R"(
    layer { name: "in" type: "Input" top: "x" top: "t" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "frozen" type: "InnerProduct" bottom: "x" top: "h" param { lr_mult: 0 } param { lr_mult: 0 }
            inner_product_param { num_output: 3 } }
    layer { name: "side" type: "InnerProduct" bottom: "h" top: "side" inner_product_param { num_output: 2 } }
    layer { name: "ip" type: "InnerProduct" bottom: "h" top: "y" inner_product_param { num_output: 3 } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
  )";
  auto net = NetF::from_text(text);
  CHECK_FALSE(net.layer_need_backward(net.layer_index("frozen")));  // lr_mult 0 and no gradient needed below
  CHECK_FALSE(net.layer_need_backward(net.layer_index("side")));    // no loss depends on it
  CHECK(net.layer_need_backward(net.layer_index("ip")));
  CHECK(net.output_blob_names() == std::vector<std::string>{"side", "loss"});
  auto forced = NetF::from_text(std::string("force_backward: true\n") + text);
  CHECK(forced.layer_need_backward(forced.layer_index("side")));
}

TEST_CASE("propagate_down false stops the gradient at that bottom") {
  const char* text = R"(
    layer { name: "in" type: "Input" top: "x" top: "t" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "ip0" type: "InnerProduct" bottom: "x" top: "h" inner_product_param { num_output: 3 } }
    layer { name: "ip" type: "InnerProduct" bottom: "h" top: "y" propagate_down: false inner_product_param { num_output: 3 } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
  )";
  auto net = NetF::from_text(text);
  CHECK(net.bottom_need_backward(net.layer_index("ip")) == std::vector<bool>{false});
  CHECK_FALSE(net.layer_need_backward(net.layer_index("ip0")));
}

TEST_CASE("V1 'layers' definitions and net-level inputs are upgraded") {
  const char* v1 = R"(
    name: "old"
    input: "data" input_dim: 2 input_dim: 3 input_dim: 1 input_dim: 1
    layers { name: "fc" type: INNER_PRODUCT bottom: "data" top: "fc" blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
             inner_product_param { num_output: 4 } }
    layers { name: "relu" type: RELU bottom: "fc" top: "fc" }
  )";
  auto net = NetF::from_text(v1);
  REQUIRE(net.num_layers() == 3);
  CHECK(net.layer(0).type() == "Input");
  CHECK(net.blob("data").shape() == Shape{2, 3, 1, 1});
  CHECK(net.layer(1).type() == "InnerProduct");
  CHECK(net.learnable_params()[1].lr_mult == 2.0f);
  CHECK(net.learnable_params()[1].decay_mult == 0.0f);
  CHECK(net.layer(2).type() == "ReLU");
  CHECK_THROWS_WITH_AS(NetF::from_text("layers { name: \"x\" type: NOT_A_TYPE }"),
                       doctest::Contains("unknown V1 layer type 'NOT_A_TYPE'"), Error);
}

TEST_CASE("Net errors name the layer, the blob and the place in the file") {
  CHECK_THROWS_WITH_AS(NetF::from_text("layer { name: \"ip\" type: \"InnerProduct\" bottom: \"nope\" top: \"y\" "
                                                  "inner_product_param { num_output: 1 } }"),
                       doctest::Contains("<net>:1:1: layer 'ip' (InnerProduct): bottom blob 'nope' is not produced by any earlier layer"),
                       Error);
  CHECK_THROWS_WITH_AS(NetF::from_text(R"(
      layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }
      layer { name: "mnist" type: "Data" top: "d" })"),
                       doctest::Contains("<net>:3:7: layer 'mnist' (Data): Caffe's 'Data' layer reads a storage backend"), Error);
  CHECK_THROWS_WITH_AS(NetF::from_text("layer { name: \"q\" type: \"Quux\" }"),
                       doctest::Contains("unknown layer type 'Quux' (registered: "), Error);
  CHECK_THROWS_WITH_AS(NetF::from_text(R"(
      layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
      layer { name: "a" type: "InnerProduct" bottom: "x" top: "x2" inner_product_param { num_output: 1 } }
      layer { name: "b" type: "InnerProduct" bottom: "x" top: "x2" inner_product_param { num_output: 1 } })"),
                       doctest::Contains("top blob 'x2' is already produced by an earlier layer"), Error);
  CHECK_THROWS_WITH_AS(NetF::from_text(R"(
      layer { name: "a" type: "Input" top: "x" input_param { shape { dim: 1 } } }
      layer { name: "a" type: "Input" top: "y" input_param { shape { dim: 1 } } })"),
                       doctest::Contains("duplicate layer name 'a'"), Error);
  CHECK_THROWS_WITH_AS(NetF::from_text("name: \"empty\""), doctest::Contains("has no layers in phase TRAIN"), Error);
  CHECK_THROWS_WITH_AS(NetF::from_text(R"(layer { name: "a" type: "Input" top: "x" include { phase: TEST } exclude { phase: TRAIN } })"),
                       doctest::Contains("both include and exclude"), Error);
}

TEST_CASE("Caffe's own LeNet definition reads up to its LMDB data layers") {
  CHECK_THROWS_WITH_AS(NetF::from_prototxt(POSEIDON_TEST_DATA_DIR "/lenet_train_test.prototxt"),
                       doctest::Contains("(Data): Caffe's 'Data' layer reads a storage backend"), Error);
}

TEST_CASE("Include rules by level and stage") {
  const char* text = R"(
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }
    layer { name: "deep" type: "Probe" bottom: "x" top: "d" include { min_level: 2 } }
    layer { name: "staged" type: "Probe" bottom: "x" top: "s" include { stage: "deploy" } }
    layer { name: "notstaged" type: "Probe" bottom: "x" top: "n" exclude { stage: "deploy" } }
  )";
  NetState s;
  CHECK(NetF::from_text(text, s).num_layers() == 2);
  s.level = 3;
  s.stages = {"deploy"};
  auto net = NetF::from_text(text, s);
  CHECK(net.layer_index("deep") >= 0);
  CHECK(net.layer_index("staged") >= 0);
  CHECK(net.layer_index("notstaged") == -1);
}

TEST_CASE("share_trained_layers_with lets a TEST net read the TRAIN net's weights") {
  auto train = NetF::from_text(kMlp);
  NetState t;
  t.phase = Phase::test;
  auto test = NetF::from_text(kMlp, t);
  test.share_trained_layers_with(train);
  CHECK(test.layer_by_name("ip1").blobs()[0]->data() == train.layer_by_name("ip1").blobs()[0]->data());
}

#include <poseidon/layers/accuracy.hpp>
#include <poseidon/layers/convolution.hpp>
#include <poseidon/layers/pooling.hpp>
#include <poseidon/layers/softmax_loss.hpp>
#include <poseidon/net/builder.hpp>

TEST_CASE("NetBuilder makes the same net as the equivalent prototxt") {
  NetBuilder b("tiny_lenet");
  b.input({"data", "label"}, {{2, 1, 12, 12}, {2}})
      .convolution("conv1", "data", "conv1", 4, 5)
      .param(1)
      .param(2)
      .max_pool("pool1", "conv1", "pool1", 2, 2)
      .inner_product("ip1", "pool1", "ip1", 10)
      .relu("relu1", "ip1")
      .softmax_loss("loss", "ip1", "label")
      .loss_weight(0.5f)
      .accuracy("acc", "ip1", "label")
      .only_in(Phase::test);
  auto net = b.build<CPU, float>();
  CHECK(net.name() == "tiny_lenet");
  CHECK(net.num_layers() == 6);  // accuracy is TEST-only
  CHECK(net.layer_index("acc") == -1);
  CHECK(net.blob("pool1").shape() == Shape{2, 4, 4, 4});
  CHECK(net.learnable_params()[1].lr_mult == 2.0f);
  CHECK(net.layer_by_name("loss").loss_weight(0) == 0.5f);

  // Printing the message gives prototxt that builds the same net.
  auto again = NetF::from_text(to_prototxt(b.message()));
  CHECK(again.num_layers() == net.num_layers());
  for (int i = 0; i < net.num_layers(); ++i) CHECK(again.layer(i).type() == net.layer(i).type());

  NetState test;
  test.phase = Phase::test;
  auto tnet = b.build<CPU, float>(test);
  CHECK(tnet.layer_index("acc") >= 0);
  CHECK(tnet.num_layers() == 9);  // ip1 and label now have two readers each: two splits
  CHECK_THROWS_WITH_AS(NetBuilder("x").param(1), doctest::Contains("no layer to add to yet"), Error);
}
