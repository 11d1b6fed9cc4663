// NetState and Caffe's include/exclude rules: which layers of a net definition exist in a
// phase (TRAIN/TEST), at a level, with a set of stages.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/message.hpp>
#include <poseidon/layers/layer_parameter.hpp>

#include <algorithm>
#include <string>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct NetState {
  Phase phase = Phase::train;
  int level = 0;
  std::vector<std::string> stages;
};

namespace detail {

inline Phase parse_phase(const Message& m, std::string_view field, Phase fallback) {
  return static_cast<Phase>(m.get_enum(field, {"TRAIN", "TEST"}, static_cast<int>(fallback)));
}

/// Caffe's StateMeetsRule for one `include { }` / `exclude { }` rule.
inline bool state_meets_rule(const NetState& s, const Message& rule, std::string_view context) {
  rule.check_fields({"phase", "min_level", "max_level", "stage", "not_stage"}, context);
  if (rule.has("phase") && parse_phase(rule, "phase", s.phase) != s.phase) return false;
  if (rule.has("min_level") && s.level < rule.get("min_level", 0)) return false;
  if (rule.has("max_level") && s.level > rule.get("max_level", 0)) return false;
  auto has_stage = [&](const std::string& st) { return std::find(s.stages.begin(), s.stages.end(), st) != s.stages.end(); };
  for (const auto& st : rule.get_all<std::string>("stage"))
    if (!has_stage(st)) return false;
  for (const auto& st : rule.get_all<std::string>("not_stage"))
    if (has_stage(st)) return false;
  return true;
}

/// Whether a `layer { }` exists in state s: excluded by any matching exclude rule; with include
/// rules, present only when one matches (Caffe's FilterNet).
inline bool layer_included(const NetState& s, const Message& layer) {
  const std::string ctx = detail::concat("layer '", layer.get<std::string>("name", ""), "'");
  const auto includes = layer.children("include");
  const auto excludes = layer.children("exclude");
  if (!includes.empty() && !excludes.empty())
    detail::raise(layer.loc().str(), ": ", ctx, " specifies both include and exclude rules; use one");
  for (const Message* r : excludes)
    if (state_meets_rule(s, *r, ctx + " exclude")) return false;
  if (includes.empty()) return true;
  for (const Message* r : includes)
    if (state_meets_rule(s, *r, ctx + " include")) return true;
  return false;
}

}  // namespace detail
POSEIDON_NAMESPACE_END
