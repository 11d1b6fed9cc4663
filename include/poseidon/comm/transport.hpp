// Vocabulary shared by every transport: tags and their reserved ranges, deadlines, and the
// wording of errors that name the rank, the peer and the tag or purpose that was waited for.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/concepts.hpp>
#include <poseidon/core/error.hpp>

#include <chrono>
#include <cstdint>
#include <string>

POSEIDON_NAMESPACE_BEGIN

/// A message tag. User tags are below `reserved_tag_base`; the range above belongs to the
/// collectives, so that a collective never matches a user's message.
using Tag = std::uint64_t;
inline constexpr Tag reserved_tag_base = Tag{1} << 39;
inline constexpr Tag max_tag = (Tag{1} << 40) - 1;

/// Deadlines for every blocking wait. Defaults from the issue: a rendezvous may take two
/// minutes (ranks start at different times), a single message one minute.
struct Deadlines {
  std::chrono::milliseconds rendezvous{120'000};
  std::chrono::milliseconds message{60'000};
};

namespace detail {

// The collectives' tags, one per role, so an error can name the purpose rather than a number.
enum class CollectiveTag : Tag {
  barrier_arrive = reserved_tag_base + 1,
  barrier_release,
  broadcast,
  allgather,
  reduce,
  gather,
};

inline std::string describe_tag(Tag tag) {
  if (tag < reserved_tag_base) return concat("tag ", tag);
  switch (static_cast<CollectiveTag>(tag)) {
    case CollectiveTag::barrier_arrive: return "barrier (arrive)";
    case CollectiveTag::barrier_release: return "barrier (release)";
    case CollectiveTag::broadcast: return "broadcast";
    case CollectiveTag::allgather: return "allgather";
    case CollectiveTag::reduce: return "reduce";
    case CollectiveTag::gather: return "gather";
  }
  return concat("reserved tag ", tag);
}

inline std::string format_ms(std::chrono::milliseconds ms) {
  if (ms.count() % 1000 == 0) return concat(ms.count() / 1000, " s");
  return concat(ms.count(), " ms");
}

// The one place that words "what was this operation", so every transport says it the same way.
inline std::string describe_op(bool is_send, int peer, Tag tag) {
  return concat(is_send ? "send to rank " : "receive from rank ", peer, " (", describe_tag(tag), ")");
}

inline void check_peer_and_tag(int rank, int size, int peer, Tag tag, bool is_send) {
  POSEIDON_CHECK(peer >= 0 && peer < size, "rank ", rank, ": ", is_send ? "send to" : "receive from",
                 " rank ", peer, " which is outside the world of ", size, " ranks");
  POSEIDON_CHECK(tag <= max_tag, "rank ", rank, ": tag ", tag, " is above the largest tag ", max_tag);
}

}  // namespace detail

POSEIDON_NAMESPACE_END
