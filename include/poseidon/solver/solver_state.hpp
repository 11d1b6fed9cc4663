// SolverState: what a solver needs besides the weights to continue bit-identically (iteration,
// history tensors, RNG, lr-policy position, loss window, data positions), in the snapshot framing.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/shape.hpp>
#include <poseidon/net/snapshot.hpp>

#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

inline constexpr std::uint32_t solver_state_format_version = 1;

struct SolverState {
  /// State of one ResumableLayer: net is "train" or "test<k>".
  struct LayerState {
    std::string net;
    std::string layer;
    std::string bytes;
  };

  std::string type;                      // the solver type that wrote it ("SGD", "Adam", ...)
  std::uint64_t iter = 0;
  std::uint32_t lr_step = 0;             // multistep position (informational: it follows from iter)
  double elapsed_seconds = 0;            // training time so far, so the metrics' clock continues
  std::string rng_state;                 // Rng::state() of the nets' shared context
  double smoothed_loss = 0;
  std::vector<double> losses;            // the average_loss window
  std::uint32_t loss_pos = 0;            // next slot of the window to replace once it is full
  std::vector<detail::TensorRecord> history;
  std::vector<LayerState> layer_states;
  std::string weights_file;              // file name of the weights, relative to the state file's directory

  /// Writes the state with `history` tensors of element type T.
  template <class T>
  void write(const std::filesystem::path& file, const std::vector<std::pair<Shape, std::vector<T>>>& hist) const {
    detail::ByteWriter w;
    w.str(type);
    w.u64(iter);
    w.u32(lr_step);
    w.f64(elapsed_seconds);
    w.str(rng_state);
    w.f64(smoothed_loss);
    w.u32(static_cast<std::uint32_t>(losses.size()));
    for (double l : losses) w.f64(l);
    w.u32(loss_pos);
    w.u32(static_cast<std::uint32_t>(hist.size()));
    for (std::size_t i = 0; i < hist.size(); ++i)
      w.tensor("history", static_cast<std::uint32_t>(i), hist[i].first, hist[i].second);
    w.u32(static_cast<std::uint32_t>(layer_states.size()));
    for (const auto& s : layer_states) {
      w.str(s.net);
      w.str(s.layer);
      w.str(s.bytes);
    }
    w.str(weights_file);
    detail::write_snapshot_file(file, detail::solver_state_magic, solver_state_format_version, w.bytes());
  }

  /// Reads and verifies a state file; throws Error naming the file and the problem.
  static SolverState read(const std::filesystem::path& file) {
    SolverState s;
    s.payload_ = std::make_shared<const std::string>(detail::read_snapshot_file(
        file, detail::solver_state_magic, solver_state_format_version, "solver state"));
    detail::ByteReader r(*s.payload_, file.string());
    s.type = r.str("solver type", 64);
    s.iter = r.u64("iteration");
    if (s.iter > static_cast<std::uint64_t>(std::numeric_limits<int>::max())) r.fail("iteration ", s.iter, " out of range");
    s.lr_step = r.u32("lr policy position");
    s.elapsed_seconds = r.f64("elapsed seconds");
    s.rng_state = r.str("RNG state", 1u << 20);
    s.smoothed_loss = r.f64("smoothed loss");
    const std::uint32_t nl = r.count("loss window size", 8);
    for (std::uint32_t i = 0; i < nl; ++i) s.losses.push_back(r.f64("loss window"));
    s.loss_pos = r.u32("loss window position");
    if (nl && s.loss_pos >= nl) r.fail("loss window position ", s.loss_pos, " outside a window of ", nl);
    const std::uint32_t nh = r.count("history count", 16);
    for (std::uint32_t i = 0; i < nh; ++i) {
      s.history.push_back(r.tensor("history record"));
      if (s.history.back().index != i) r.fail("history record ", i, " has index ", s.history.back().index);
    }
    const std::uint32_t ns = r.count("layer state count", 12);
    for (std::uint32_t i = 0; i < ns; ++i) {
      LayerState ls;
      ls.net = r.str("layer state net", detail::snapshot_max_name);
      ls.layer = r.str("layer state name", detail::snapshot_max_name);
      ls.bytes = r.str("layer state");
      s.layer_states.push_back(std::move(ls));
    }
    s.weights_file = r.str("weights file name", detail::snapshot_max_name);
    r.expect_end("weights file name");
    return s;
  }

 private:
  std::shared_ptr<const std::string> payload_;  // the history records view into it
};

POSEIDON_NAMESPACE_END
