// Net<D, T>: a graph of layers built from a Caffe net definition (prototxt or C++ builder), with
// Caffe's rules (phases, in-place tops, split insertion, shared parameters, loss-driven backward).
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/context.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/core/tensor.hpp>
#include <poseidon/layers/layer.hpp>
#include <poseidon/layers/registry.hpp>
#include <poseidon/net/prototxt.hpp>
#include <poseidon/net/state.hpp>
#include <poseidon/net/upgrade.hpp>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

namespace detail {

// Caffe's InsertSplits: a blob read by several bottoms (or read and also weighted as a loss)
// gets a Split layer right after its producer, so that each reader has its own diff and the
// gradients are summed by Split's backward instead of overwriting one another.
inline std::vector<LayerParameter> insert_splits(const std::vector<LayerParameter>& layers) {
  using TopId = std::pair<std::size_t, std::size_t>;  // (layer, top index)
  std::map<std::string, TopId> last_producer;
  std::map<TopId, int> readers;
  std::map<TopId, float> loss_weight;
  std::map<std::pair<std::size_t, std::size_t>, TopId> source;  // (layer, bottom index) -> producer
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const auto& p = layers[i];
    for (std::size_t j = 0; j < p.bottom.size(); ++j) {
      auto it = last_producer.find(p.bottom[j]);
      if (it == last_producer.end()) continue;  // reported when the net is built
      source[{i, j}] = it->second;
      ++readers[it->second];
    }
    for (std::size_t j = 0; j < p.top.size(); ++j) {
      last_producer[p.top[j]] = {i, j};
      if (j < p.loss_weight.size() && p.loss_weight[j] != 0.0f) {
        loss_weight[{i, j}] = p.loss_weight[j];
        ++readers[{i, j}];
      }
    }
  }
  auto split_blob = [](const std::string& layer, const std::string& blob, std::size_t j, int k) {
    return detail::concat(blob, "_", layer, "_", j, "_split_", k);
  };
  std::vector<LayerParameter> out;
  std::map<TopId, int> next_split;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    LayerParameter p = layers[i];
    for (std::size_t j = 0; j < p.bottom.size(); ++j) {
      auto it = source.find({i, j});
      if (it == source.end() || readers[it->second] <= 1) continue;
      const auto& producer = layers[it->second.first];
      p.bottom[j] = split_blob(producer.name, p.bottom[j], it->second.second, next_split[it->second]++);
    }
    std::vector<LayerParameter> splits;
    for (std::size_t j = 0; j < p.top.size(); ++j) {
      const TopId id{i, j};
      const int n = readers.count(id) ? readers[id] : 0;
      if (n <= 1) continue;
      LayerParameter s(detail::concat(p.top[j], "_", p.name, "_", j, "_split"), "Split");
      s.phase = p.phase;
      s.bottom = {p.top[j]};
      for (int k = 0; k < n; ++k) s.top.push_back(split_blob(p.name, p.top[j], j, k));
      if (auto lw = loss_weight.find(id); lw != loss_weight.end()) {
        // The loss moves to the split's first top; the producer's own top no longer carries it.
        s.loss_weight.assign(static_cast<std::size_t>(n), 0.0f);
        s.loss_weight[0] = lw->second;
        p.loss_weight[j] = 0.0f;
      }
      splits.push_back(std::move(s));
    }
    out.push_back(std::move(p));
    for (auto& s : splits) out.push_back(std::move(s));
  }
  return out;
}

}  // namespace detail

template <class D, class T = float>
class Net {
 public:
  using Context = DeviceContext<D>;
  using tensor_type = Tensor<D, T>;
  using Vec = std::vector<tensor_type*>;

  /// One learnable parameter of the net (shared parameters appear once, under their owner).
  struct LearnableParam {
    std::string name;  // the ParamSpec name, or "<layer>[<index>]" when unnamed
    int layer = 0;     // the owning layer
    int index = 0;     // index among the owning layer's blobs
    float lr_mult = 1.0f;
    float decay_mult = 1.0f;
    std::shared_ptr<tensor_type> tensor;
  };

  /// Called after layer `layer`'s backward with the learnable parameters whose gradient is now
  /// complete (every layer sharing them has run backward): the seam wait-free backprop uses.
  using BackwardHook = std::function<void(int layer, std::span<const int> completed_params)>;
  /// Called before layer `layer`'s forward: where fresh parameters must have arrived.
  using ForwardHook = std::function<void(int layer)>;

  /// Builds the net from a NetParameter message for the given state (phase, level, stages).
  explicit Net(const Message& net_param, NetState state = {}, std::shared_ptr<Context> ctx = nullptr)
      : ctx_(ctx ? std::move(ctx) : std::make_shared<Context>()), state_(std::move(state)) {
    init(net_param);
  }
  static Net from_prototxt(const std::filesystem::path& file, NetState state = {}, std::shared_ptr<Context> ctx = nullptr) {
    return Net(read_prototxt(file), std::move(state), std::move(ctx));
  }
  static Net from_text(std::string_view text, NetState state = {}, std::shared_ptr<Context> ctx = nullptr) {
    return Net(parse_prototxt(text, "<net>"), std::move(state), std::move(ctx));
  }

  Net(Net&&) noexcept = default;
  Net& operator=(Net&&) noexcept = default;

  // ---- running ------------------------------------------------------------
  /// Forward through every layer; returns the weighted total loss.
  T forward() { return forward_from_to(0, num_layers() - 1); }
  T forward_from_to(int start, int end) {
    check_range(start, end, "forward_from_to");
    T loss = 0;
    for (int i = start; i <= end; ++i) {
      if (before_forward_) before_forward_(i);
      loss += layers_[idx(i)]->forward(*ctx_, bottom_vecs_[idx(i)], top_vecs_[idx(i)]);
    }
    return loss;
  }
  /// Backward from the top layer down, firing the backward hook after each layer with parameters.
  void backward() { backward_from_to(num_layers() - 1, 0); }
  void backward_from_to(int start, int end) {
    check_range(end, start, "backward_from_to");
    for (int i = start; i >= end; --i) {
      if (!layer_need_backward_[idx(i)]) continue;
      layers_[idx(i)]->backward(*ctx_, top_vecs_[idx(i)], bottom_need_backward_[idx(i)], bottom_vecs_[idx(i)]);
      if (after_backward_ && !layers_[idx(i)]->blobs().empty()) after_backward_(i, completes_at_[idx(i)]);
    }
  }
  T forward_backward() {
    const T loss = forward();
    backward();
    return loss;
  }
  /// Zeroes every learnable parameter's gradient (the solver does this before each iteration).
  void clear_param_diffs() {
    for (auto& p : learnable_) p.tensor->zero_diff();
  }

  void set_backward_hook(BackwardHook h) { after_backward_ = std::move(h); }
  void set_forward_hook(ForwardHook h) { before_forward_ = std::move(h); }

  /// Makes this net's layers use the parameter values of same-named layers in `other`
  /// (Caffe's ShareTrainedLayersWith: a TEST net evaluates the TRAIN net's weights).
  void share_trained_layers_with(const Net& other) {
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      auto& mine = layers_[i]->blobs();
      if (mine.empty()) continue;
      const int j = other.layer_index(layers_[i]->name());
      if (j < 0) continue;
      const auto& theirs = other.layers_[idx(j)]->blobs();
      POSEIDON_CHECK(theirs.size() == mine.size(), layers_[i]->describe(), " has ", mine.size(),
                     " parameters but the source layer has ", theirs.size());
      for (std::size_t k = 0; k < mine.size(); ++k) {
        POSEIDON_CHECK(mine[k]->shape() == theirs[k]->shape(), layers_[i]->describe(), ": parameter ", k, " shape ",
                       mine[k]->shape().str(), " does not match the source's ", theirs[k]->shape().str());
        mine[k]->share_data(*theirs[k]);
      }
    }
  }

  // ---- inspection ---------------------------------------------------------
  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] Phase phase() const { return state_.phase; }
  [[nodiscard]] Context& context() { return *ctx_; }
  [[nodiscard]] std::shared_ptr<Context> context_ptr() const { return ctx_; }
  [[nodiscard]] int num_layers() const { return static_cast<int>(layers_.size()); }
  [[nodiscard]] Layer<D, T>& layer(int i) { return *layers_[idx(i)]; }
  [[nodiscard]] const Layer<D, T>& layer(int i) const { return *layers_[idx(i)]; }
  [[nodiscard]] int layer_index(std::string_view name) const {
    for (std::size_t i = 0; i < layers_.size(); ++i)
      if (layers_[i]->name() == name) return static_cast<int>(i);
    return -1;
  }
  [[nodiscard]] Layer<D, T>& layer_by_name(std::string_view name) {
    const int i = layer_index(name);
    POSEIDON_CHECK(i >= 0, "net '", name_, "' has no layer '", name, "'");
    return *layers_[idx(i)];
  }
  [[nodiscard]] bool has_blob(std::string_view name) const { return blob_index_.count(std::string(name)) != 0; }
  [[nodiscard]] tensor_type& blob(std::string_view name) {
    auto it = blob_index_.find(std::string(name));
    POSEIDON_CHECK(it != blob_index_.end(), "net '", name_, "' has no blob '", name, "'");
    return *blobs_[it->second];
  }
  [[nodiscard]] const std::vector<std::string>& blob_names() const { return blob_names_; }
  [[nodiscard]] const Vec& bottom_vecs(int i) const { return bottom_vecs_[idx(i)]; }
  [[nodiscard]] const Vec& top_vecs(int i) const { return top_vecs_[idx(i)]; }
  [[nodiscard]] bool layer_need_backward(int i) const { return layer_need_backward_[idx(i)]; }
  [[nodiscard]] const std::vector<bool>& bottom_need_backward(int i) const { return bottom_need_backward_[idx(i)]; }
  [[nodiscard]] const std::vector<LearnableParam>& learnable_params() const { return learnable_; }
  [[nodiscard]] std::vector<LearnableParam>& learnable_params() { return learnable_; }
  /// Blobs no layer reads: what forward produces for the user (losses, accuracies, outputs).
  [[nodiscard]] const std::vector<std::string>& output_blob_names() const { return outputs_; }
  /// The tops of Input layers: what the user fills before forward.
  [[nodiscard]] const std::vector<std::string>& input_blob_names() const { return inputs_; }

  /// Caffe's start-up summary: one line per layer with its tops' shapes.
  [[nodiscard]] std::string summary() const {
    std::ostringstream os;
    os << "Net '" << name_ << "' (" << phase_name(state_.phase) << "), " << layers_.size() << " layers, "
       << learnable_.size() << " learnable parameters\n";
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      os << "  " << layers_[i]->describe();
      for (std::size_t j = 0; j < top_vecs_[i].size(); ++j)
        os << (j ? ", " : " -> ") << layers_[i]->param().top[j] << " " << top_vecs_[i][j]->shape().str();
      if (!layer_need_backward_[i]) os << "  [no backward]";
      os << "\n";
    }
    return os.str();
  }

 private:
  static std::size_t idx(int i) { return static_cast<std::size_t>(i); }
  void check_range(int lo, int hi, const char* what) const {
    POSEIDON_CHECK(0 <= lo && lo <= hi && hi < num_layers(), "net '", name_, "': ", what, " range [", lo, ", ", hi,
                   "] outside 0..", num_layers() - 1);
  }

  static void check_known_type(const LayerParameter& p) {
    if (LayerRegistry<D, T>::has(p.type)) return;
    static constexpr std::string_view caffe_backends[] = {"Data", "ImageData", "HDF5Data", "WindowData", "HDF5Output"};
    for (auto b : caffe_backends)
      if (p.type == b)
        detail::raise(p.message.loc().str(), ": ", p.describe(), ": Caffe's '", p.type,
                      "' layer reads a storage backend (LMDB, LevelDB, HDF5 or image files) that Poseidon does not "
                      "have; use IdxData, DummyData, MemoryData or Input instead");
    std::string known;
    for (const auto& t : LayerRegistry<D, T>::types()) {
      if (!known.empty()) known += ", ";
      known += t;
    }
    detail::raise(p.message.loc().str(), ": ", p.describe(), ": unknown layer type '", p.type, "' (registered: ", known,
                  ")");
  }

  void init(const Message& raw) {
    const Message net = detail::upgrade_net(raw);
    name_ = net.get<std::string>("name", "");
    force_backward_ = net.get("force_backward", false);
    if (net.has("state")) {
      const Message& s = net.child("state");
      // The caller's phase wins; the file's level and stages add to the caller's.
      state_.level = s.get("level", state_.level);
      for (auto& st : s.get_all<std::string>("stage")) state_.stages.push_back(st);
    }
    std::vector<LayerParameter> params;
    for (const Message* lm : net.children("layer")) {
      if (!detail::layer_included(state_, *lm)) continue;
      LayerParameter p = LayerParameter::from_message(*lm, state_.phase);
      POSEIDON_CHECK(!p.type.empty(), lm->loc().str(), ": layer '", p.name, "' has no type");
      if (p.name.empty()) p.name = detail::concat(p.type, "_", params.size());
      params.push_back(std::move(p));
    }
    POSEIDON_CHECK(!params.empty(), net.loc().str(), ": net '", name_, "' has no layers in phase ",
                   phase_name(state_.phase));
    {
      std::set<std::string> names;
      for (const auto& p : params)
        POSEIDON_CHECK(names.insert(p.name).second, p.message.loc().str(), ": duplicate layer name '", p.name, "'");
    }
    params = detail::insert_splits(params);

    std::map<std::string, std::size_t> owner_by_name;  // shared parameter name -> learnable index
    std::vector<std::vector<int>> param_users;         // learnable index -> layers using it
    std::set<std::string> unread;                      // produced but not yet read
    std::vector<bool> blob_need_backward;
    for (std::size_t i = 0; i < params.size(); ++i) {
      const LayerParameter& p = params[i];
      check_known_type(p);
      auto layer = LayerRegistry<D, T>::create(p);
      Vec bottoms, tops;
      std::vector<bool> need;
      if (!p.propagate_down.empty())
        POSEIDON_CHECK(p.propagate_down.size() == p.bottom.size(), p.describe(), ": ", p.propagate_down.size(),
                       " propagate_down values for ", p.bottom.size(), " bottoms");
      for (std::size_t j = 0; j < p.bottom.size(); ++j) {
        auto it = blob_index_.find(p.bottom[j]);
        POSEIDON_CHECK(it != blob_index_.end(), p.message.loc().str(), ": ", p.describe(), ": bottom blob '", p.bottom[j],
                       "' is not produced by any earlier layer");
        bottoms.push_back(blobs_[it->second].get());
        unread.erase(p.bottom[j]);
        bool nb = blob_need_backward[it->second] && layer->allow_backward_to(static_cast<int>(j));
        if (!p.propagate_down.empty()) nb = nb && p.propagate_down[j];
        need.push_back(nb);
      }
      for (std::size_t j = 0; j < p.top.size(); ++j) {
        const std::string& t = p.top[j];
        if (j < p.bottom.size() && p.bottom[j] == t) {  // in place
          tops.push_back(bottoms[j]);
          unread.insert(t);
          continue;
        }
        POSEIDON_CHECK(!blob_index_.count(t), p.message.loc().str(), ": ", p.describe(), ": top blob '", t,
                       "' is already produced by an earlier layer (in-place use needs top i == bottom i)");
        blob_index_[t] = blobs_.size();
        blob_names_.push_back(t);
        blobs_.push_back(std::make_shared<tensor_type>());
        blob_need_backward.push_back(false);
        tops.push_back(blobs_.back().get());
        unread.insert(t);
        if (p.type == "Input") inputs_.push_back(t);
      }
      layer->setup(*ctx_, bottoms, tops);

      // Learnable parameters: owners, and shared ones that take the owner's memory.
      bool param_need = false;
      for (std::size_t k = 0; k < layer->blobs().size(); ++k) {
        const ParamSpec spec = layer->param_spec(k);
        layer->set_param_propagate_down(k, spec.lr_mult != 0.0f);
        param_need = param_need || spec.lr_mult != 0.0f;
        auto owner = spec.name.empty() ? owner_by_name.end() : owner_by_name.find(spec.name);
        if (owner == owner_by_name.end()) {
          LearnableParam lp;
          lp.name = spec.name.empty() ? detail::concat(p.name, "[", k, "]") : spec.name;
          lp.layer = static_cast<int>(i);
          lp.index = static_cast<int>(k);
          lp.lr_mult = spec.lr_mult;
          lp.decay_mult = spec.decay_mult;
          lp.tensor = layer->blobs()[k];
          if (!spec.name.empty()) owner_by_name[spec.name] = learnable_.size();
          learnable_.push_back(std::move(lp));
          param_users.push_back({static_cast<int>(i)});
        } else {
          auto& o = learnable_[owner->second];
          auto& mine = layer->blobs()[k];
          POSEIDON_CHECK(mine->shape() == o.tensor->shape(), p.describe(), ": shared parameter '", spec.name, "' has shape ",
                         mine->shape().str(), " here but ", o.tensor->shape().str(), " in layer '",
                         params[idx(o.layer)].name, "'");
          const auto& ospec = layers_[idx(o.layer)]->param_spec(static_cast<std::size_t>(o.index));
          POSEIDON_CHECK(ospec.lr_mult == spec.lr_mult && ospec.decay_mult == spec.decay_mult, p.describe(),
                         ": shared parameter '", spec.name, "' has lr_mult/decay_mult ", spec.lr_mult, "/", spec.decay_mult,
                         " here but ", ospec.lr_mult, "/", ospec.decay_mult, " in layer '", params[idx(o.layer)].name, "'");
          mine->share_data(*o.tensor);
          mine->share_diff(*o.tensor);
          param_users[owner->second].push_back(static_cast<int>(i));
        }
      }
      bool layer_need = param_need;
      for (bool b : need) layer_need = layer_need || b;
      for (const auto& t : p.top) blob_need_backward[blob_index_.at(t)] = layer_need;
      layers_.push_back(std::move(layer));
      bottom_vecs_.push_back(std::move(bottoms));
      top_vecs_.push_back(std::move(tops));
      bottom_need_backward_.push_back(std::move(need));
      layer_need_backward_.push_back(layer_need);
    }

    // Backward only where a loss depends on the result (Caffe's blobs_under_loss pass) and where
    // some reader wants the gradient (blobs_skip_backp: e.g. propagate_down: false), unless
    // force_backward asks for gradients everywhere they can flow.
    std::set<const tensor_type*> under_loss, skip_backp;
    for (int i = num_layers() - 1; i >= 0; --i) {
      auto& L = *layers_[idx(i)];
      bool contributes = false;
      bool skip = true;
      for (std::size_t j = 0; j < top_vecs_[idx(i)].size(); ++j) {
        const tensor_type* t = top_vecs_[idx(i)][j];
        contributes = contributes || L.loss_weight(j) != T(0) || under_loss.count(t);
        skip = skip && skip_backp.count(t);
      }
      if (force_backward_) {
        bool any = false;
        for (std::size_t j = 0; j < bottom_vecs_[idx(i)].size(); ++j) {
          bottom_need_backward_[idx(i)][j] = L.allow_backward_to(static_cast<int>(j));
          any = any || bottom_need_backward_[idx(i)][j];
        }
        layer_need_backward_[idx(i)] = layer_need_backward_[idx(i)] || any;
      } else if (!contributes || skip) {
        layer_need_backward_[idx(i)] = false;
      }
      auto& need = bottom_need_backward_[idx(i)];
      if (!layer_need_backward_[idx(i)]) std::fill(need.begin(), need.end(), false);
      for (std::size_t j = 0; j < bottom_vecs_[idx(i)].size(); ++j) {
        if (contributes || force_backward_) under_loss.insert(bottom_vecs_[idx(i)][j]);
        if (!need[j]) skip_backp.insert(bottom_vecs_[idx(i)][j]);
      }
    }

    // Where each parameter's gradient becomes complete: the lowest layer using it that runs backward.
    completes_at_.assign(layers_.size(), {});
    for (std::size_t p = 0; p < learnable_.size(); ++p) {
      int lowest = -1;
      for (int l : param_users[p])
        if (layer_need_backward_[idx(l)] && (lowest < 0 || l < lowest)) lowest = l;
      if (lowest >= 0) completes_at_[idx(lowest)].push_back(static_cast<int>(p));
    }
    for (const auto& n : blob_names_)
      if (unread.count(n)) outputs_.push_back(n);
  }

  std::shared_ptr<Context> ctx_;
  NetState state_;
  std::string name_;
  bool force_backward_ = false;
  std::vector<std::unique_ptr<Layer<D, T>>> layers_;
  std::vector<std::shared_ptr<tensor_type>> blobs_;
  std::vector<std::string> blob_names_;
  std::map<std::string, std::size_t> blob_index_;
  std::vector<Vec> bottom_vecs_, top_vecs_;
  std::vector<std::vector<bool>> bottom_need_backward_;
  std::vector<bool> layer_need_backward_;
  std::vector<LearnableParam> learnable_;
  std::vector<std::vector<int>> completes_at_;
  std::vector<std::string> inputs_, outputs_;
  BackwardHook after_backward_;
  ForwardHook before_forward_;
};

POSEIDON_NAMESPACE_END
