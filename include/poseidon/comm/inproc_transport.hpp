// InprocTransport: ranks as threads of one process, with the semantics of FabricTransport
// (tag matching in send order, deadlines, a dead rank fails every wait) for fast, deterministic tests.
#pragma once

#include <poseidon/comm/transport.hpp>
#include <poseidon/core/concepts.hpp>
#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

namespace detail {

struct InprocOp {
  bool is_send = false;
  int peer = 0;
  Tag tag = 0;
  std::span<std::byte> buffer;  // receives only
  std::size_t bytes = 0;
  bool done = false;
  std::string error;  // set when the operation failed; `done` is then true too
};

struct InprocShared {
  using Key = std::pair<int, Tag>;  // (source, tag)
  struct Mailbox {
    std::map<Key, std::deque<std::vector<std::byte>>> unexpected;
    std::map<Key, std::deque<std::shared_ptr<InprocOp>>> posted;
  };

  InprocShared(int n, Deadlines d) : size(n), deadlines(d), boxes(static_cast<std::size_t>(n)) {}

  int size;
  Deadlines deadlines;
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<Mailbox> boxes;
  int dead_rank = -1;  // the first rank that died or aborted; -1 while all are alive
  std::string dead_reason;
};

}  // namespace detail

class InprocTransport;

/// The shared state of an in-process world of `size` ranks; hand `transport(r)` to thread r.
class InprocWorld {
 public:
  explicit InprocWorld(int size, Deadlines deadlines = {})
      : shared_(std::make_shared<detail::InprocShared>(size, deadlines)) {
    POSEIDON_CHECK(size >= 1, "InprocWorld: world size must be at least 1, got ", size);
  }

  [[nodiscard]] int size() const noexcept { return shared_->size; }
  [[nodiscard]] InprocTransport transport(int rank) const;

  /// Marks `rank` dead, as the control channel does for a crashed process: every pending and
  /// future wait on every rank fails with an error that names it.
  void kill(int rank, const std::string& reason) const;

  /// The rank that died first, or -1.
  [[nodiscard]] int dead_rank() const {
    std::lock_guard lock(shared_->mutex);
    return shared_->dead_rank;
  }

  /// Runs fn(transport) on `size` threads, one per rank. A rank that throws is killed (so the
  /// others fail fast instead of waiting for their deadlines); the error of the rank that
  /// failed first is rethrown, since the others' errors only report its death.
  template <class Fn>
  static void run(int size, Fn&& fn, Deadlines deadlines = {});

 private:
  std::shared_ptr<detail::InprocShared> shared_;
};

class InprocTransport {
 public:
  /// Handle of one send or receive; default-constructed handles are empty.
  class Request {
   public:
    Request() = default;
    [[nodiscard]] bool valid() const noexcept { return op_ != nullptr; }

   private:
    friend class InprocTransport;
    explicit Request(std::shared_ptr<detail::InprocOp> op) : op_(std::move(op)) {}
    std::shared_ptr<detail::InprocOp> op_;
  };

  InprocTransport(std::shared_ptr<detail::InprocShared> shared, int rank) : shared_(std::move(shared)), rank_(rank) {
    POSEIDON_CHECK(rank_ >= 0 && rank_ < shared_->size, "InprocTransport: rank ", rank_, " outside the world of ",
                   shared_->size);
  }

  [[nodiscard]] int rank() const noexcept { return rank_; }
  [[nodiscard]] int size() const noexcept { return shared_->size; }
  [[nodiscard]] const Deadlines& deadlines() const noexcept { return shared_->deadlines; }

  // Sends are eager (the bytes are copied before isend returns), like a provider's inject path;
  // the receiver still sees them only through tag matching, in send order.
  Request isend(int peer, Tag tag, std::span<const std::byte> data) {
    detail::check_peer_and_tag(rank_, size(), peer, tag, true);
    auto op = std::make_shared<detail::InprocOp>();
    op->is_send = true;
    op->peer = peer;
    op->tag = tag;
    op->bytes = data.size();
    {
      std::lock_guard lock(shared_->mutex);
      throw_if_dead_locked(*op);
      auto& box = shared_->boxes[static_cast<std::size_t>(peer)];
      const detail::InprocShared::Key key{rank_, tag};
      auto it = box.posted.find(key);
      if (it != box.posted.end() && !it->second.empty()) {
        auto recv = std::move(it->second.front());
        it->second.pop_front();
        if (it->second.empty()) box.posted.erase(it);
        deliver(*recv, data);
      } else {
        box.unexpected[key].emplace_back(data.begin(), data.end());
      }
      op->done = true;
    }
    shared_->cv.notify_all();
    return Request(std::move(op));
  }

  Request irecv(int peer, Tag tag, std::span<std::byte> buffer) {
    detail::check_peer_and_tag(rank_, size(), peer, tag, false);
    auto op = std::make_shared<detail::InprocOp>();
    op->peer = peer;
    op->tag = tag;
    op->buffer = buffer;
    {
      std::lock_guard lock(shared_->mutex);
      auto& box = shared_->boxes[static_cast<std::size_t>(rank_)];
      const detail::InprocShared::Key key{peer, tag};
      auto it = box.unexpected.find(key);
      if (it != box.unexpected.end() && !it->second.empty()) {
        auto msg = std::move(it->second.front());
        it->second.pop_front();
        if (it->second.empty()) box.unexpected.erase(it);
        deliver_from(*op, msg);
      } else {
        box.posted[key].push_back(op);
      }
    }
    return Request(std::move(op));
  }

  bool test(Request& req) {
    POSEIDON_CHECK(req.valid(), "rank ", rank_, ": test() on an empty request");
    std::lock_guard lock(shared_->mutex);
    if (!req.op_->done) {
      throw_if_dead_locked(*req.op_);
      return false;
    }
    throw_if_failed(*req.op_);
    return true;
  }

  std::size_t wait(Request& req) { return wait(req, shared_->deadlines.message); }

  std::size_t wait(Request& req, std::chrono::milliseconds timeout) {
    POSEIDON_CHECK(req.valid(), "rank ", rank_, ": wait() on an empty request");
    auto& op = *req.op_;
    std::unique_lock lock(shared_->mutex);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!op.done) {
      throw_if_dead_locked(op);
      if (shared_->cv.wait_until(lock, deadline) == std::cv_status::timeout && !op.done) {
        throw_if_dead_locked(op);
        detail::raise("rank ", rank_, ": timed out after ", detail::format_ms(timeout), " waiting for ",
                      detail::describe_op(op.is_send, op.peer, op.tag));
      }
    }
    throw_if_failed(op);
    return op.bytes;
  }

  /// Gives up on the job: every other rank's waits fail naming this rank and `reason`.
  void abort(const std::string& reason) {
    {
      std::lock_guard lock(shared_->mutex);
      if (shared_->dead_rank < 0) {
        shared_->dead_rank = rank_;
        shared_->dead_reason = reason;
      }
    }
    shared_->cv.notify_all();
  }

 private:

  static void deliver_from(detail::InprocOp& recv, const std::vector<std::byte>& msg) {
    deliver(recv, std::span<const std::byte>(msg));
  }
  static void deliver(detail::InprocOp& recv, std::span<const std::byte> msg) {
    if (msg.size() > recv.buffer.size()) {
      recv.error = detail::concat("message of ", msg.size(), " bytes does not fit the ", recv.buffer.size(),
                                  "-byte receive buffer");
    } else {
      if (!msg.empty()) std::memcpy(recv.buffer.data(), msg.data(), msg.size());
      recv.bytes = msg.size();
    }
    recv.done = true;
  }

  void throw_if_dead_locked(const detail::InprocOp& op) const {
    if (shared_->dead_rank < 0) return;
    const bool self = shared_->dead_rank == rank_;
    detail::raise("rank ", rank_, ": ", self ? "this rank aborted" : detail::concat("rank ", shared_->dead_rank, " died"),
                  " (", shared_->dead_reason, ") during ", detail::describe_op(op.is_send, op.peer, op.tag));
  }
  void throw_if_failed(const detail::InprocOp& op) const {
    if (!op.error.empty())
      detail::raise("rank ", rank_, ": ", detail::describe_op(op.is_send, op.peer, op.tag), " failed: ", op.error);
  }

  std::shared_ptr<detail::InprocShared> shared_;
  int rank_;
};

inline InprocTransport InprocWorld::transport(int rank) const { return InprocTransport(shared_, rank); }

inline void InprocWorld::kill(int rank, const std::string& reason) const { transport(rank).abort(reason); }

template <class Fn>
void InprocWorld::run(int size, Fn&& fn, Deadlines deadlines) {
  InprocWorld world(size, deadlines);
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(size));
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(size));
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      try {
        auto t = world.transport(r);
        fn(t);
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(r)] = std::current_exception();
        world.kill(r, e.what());
      } catch (...) {
        errors[static_cast<std::size_t>(r)] = std::current_exception();
        world.kill(r, "unknown exception");
      }
    });
  }
  for (auto& t : threads) t.join();
  const int first = world.dead_rank();
  if (first >= 0 && errors[static_cast<std::size_t>(first)]) std::rethrow_exception(errors[static_cast<std::size_t>(first)]);
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

static_assert(transport<InprocTransport>);

POSEIDON_NAMESPACE_END
