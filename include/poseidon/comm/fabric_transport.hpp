// FabricTransport: the transport concept over libfabric RDM endpoints with tagged messages
// (provider chosen at run time: tcp, verbs, shm, sockets), bootstrapped by the Rendezvous.
#pragma once
// One thread at a time reads the completion queue (two threads reading one queue steal each
// other's completions): a thread waiting in wait() when the queue is free, else the progress
// thread, which the tcp provider needs because it moves no data unless someone drives progress.
// A waiter that drives needs no hand-off from the progress thread, which saves a wake-up on each
// side per message; busy polling collapses on loaded cores, so the reader blocks in
// fi_cq_sread. The reader also checksums pieces right before posting them and checks received
// ones right after they land, while the bytes are in its cache. Posting is another matter: a
// caller whose postings have nothing queued ahead of them posts them itself (the provider is
// FI_THREAD_SAFE).

#include <poseidon/comm/cluster.hpp>
#include <poseidon/comm/detail/log.hpp>
#include <poseidon/comm/detail/netif.hpp>
#include <poseidon/comm/frame.hpp>
#include <poseidon/comm/rendezvous.hpp>
#include <poseidon/comm/transport.hpp>
#include <poseidon/core/concepts.hpp>
#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

struct FabricOptions {
  /// The largest single fabric message; bigger transfers go as several, reassembled in place.
  /// Every rank must use the same value.
  std::size_t chunk_bytes = std::size_t{1} << 30;
  /// CRC-32C over every payload of this rank's sends (the 40-byte header is always checked;
  /// receivers follow each frame's flag). Unset: Cluster::payload_checksum
  /// (POSEIDON_PAYLOAD_CHECKSUM) decides, and off when that is unset too. Off leaves payloads to
  /// the provider's own integrity checks (TCP's checksum and Ethernet's CRC, the InfiniBand ICRC),
  /// as NCCL, Gloo and MPI do; on adds a check from the sender's memory to the receiver's at the
  /// cost of one more pass over every byte on each side and, above checksum_piece_bytes, more
  /// fabric messages: 8-30% more CPU per byte on loopback here (docs/transport.md). Turn it on
  /// where silent corruption between the wire checks and memory is a concern (a long job on
  /// hardware you do not trust).
  std::optional<bool> checksum_payload;
  /// With the checksum on, a longer message travels in pieces of this many bytes (at most
  /// chunk_bytes), each with its own CRC: the sender checksums a piece while the one before it
  /// is on the wire, and the receiver verifies each piece as it lands instead of a pass over the
  /// whole message before and after. Each piece is one fabric message with its own wake-ups,
  /// so small pieces cost more than the overlap saves (1 MiB and 256 KiB pieces moved 5-25%
  /// fewer bytes per CPU-second than 4 MiB here). Below
  /// FrameHeader::min_piece, one CRC over the whole payload. Only the sender's value matters
  /// (the header carries it).
  std::size_t checksum_piece_bytes = std::size_t{4} << 20;
  /// How long wait() polls for completion before it sleeps. A short spin catches completions
  /// that land within microseconds (sends, local messages) without a futex round trip; longer
  /// spins starve the progress thread and the peer on shared cores.
  /// Measured on 2 shared cores: 10 us was neutral, 100 us tripled the round trip.
  std::chrono::microseconds spin{0};
};

namespace detail {

struct FabricOp;

// One fabric message of an operation (the first carries the frame header; in a pieced frame
// every later one carries its piece's CRC in `trailer`).
struct FabricPosting {
  fi_context2 ctx{};  // first, so the completion's op_context leads back here
  FabricOp* op = nullptr;
  std::size_t offset = 0;  // into the user buffer
  std::size_t length = 0;  // payload bytes (without the header or trailer)
  bool first = false;
  bool has_trailer = false;
  std::array<std::byte, FrameHeader::piece_trailer> trailer{};

  FabricPosting() = default;
  FabricPosting(FabricOp* o, std::size_t off, std::size_t len, bool is_first, bool trailed) noexcept
      : op(o), offset(off), length(len), first(is_first), has_trailer(trailed) {}
  void set(FabricOp* o, std::size_t off, std::size_t len, bool is_first) noexcept {
    op = o;
    offset = off;
    length = len;
    first = is_first;
  }
};

struct FabricOp {
  bool is_send = false;
  int peer = 0;
  Tag tag = 0;
  std::byte* data = nullptr;
  std::size_t capacity = 0;  // send: message size; receive: buffer size
  std::array<std::byte, FrameHeader::size> header{};
  // The first posting lives inline and further chunks in a deque (growing it never moves a
  // posted context), so the common one-chunk message costs a single allocation: the op.
  FabricPosting head;
  std::unique_ptr<std::deque<FabricPosting>> more;
  // Guarded by the transport's state mutex:
  std::size_t posted = 0;       // postings the provider accepted
  std::size_t outstanding = 0;  // of those, not yet completed
  std::shared_ptr<FabricOp> keep;  // holds the op alive while the provider holds a context
  FabricOp* prev_inflight = nullptr;
  FabricOp* next_inflight = nullptr;
  FrameHeader received;  // receive: the validated header
  bool header_done = false;  // receive: `received` is set and the continuation postings exist
  // A receive whose (well-formed) header was rejected: its continuations are still on their way
  // and must be taken off the wire, or a later message of this (peer, tag) would get them. They
  // land in `drain`, one continuation's worth of scratch shared by all of them (a provider may
  // tear the connection down rather than truncate, so each gets exactly the room it needs).
  bool draining = false;
  std::unique_ptr<std::byte[]> drain;
  std::size_t bytes = 0;
  // pending -> finishing (the one thread that won the race writes `error`) -> done | failed.
  enum State : int { pending, finishing, done, failed };
  std::atomic<int> state{pending};
  std::string error;
  bool provider_error = false;  // failed inside the provider (e.g. the peer vanished), not rejected by us
  bool verified = false;  // receive: payload checksum checked (set before the op is done)
  // Also guarded by the state mutex. A send of several postings: [0, handed) went to the
  // provider (or the retry queue), [0, crc_ready) have their checksum, `retired` completed.
  std::size_t handed = 0;
  std::size_t crc_ready = 0;
  std::size_t retired = 0;
  // A receive: postings whose checksum the queue's reader checks as they land, how many it has
  // checked, and the first mismatch (raised only once the provider has let go of the buffer).
  std::size_t to_verify = 0;
  std::size_t checked = 0;
  std::string verify_error;

  [[nodiscard]] std::size_t posting_count() const noexcept { return 1 + (more ? more->size() : 0); }
  FabricPosting& posting(std::size_t i) noexcept { return i == 0 ? head : (*more)[i - 1]; }
  void add_posting(std::size_t offset, std::size_t length, bool trailer = false) {
    if (!more) more = std::make_unique<std::deque<FabricPosting>>();
    more->emplace_back(this, offset, length, false, trailer);
  }
  [[nodiscard]] bool pending_now() const noexcept { return state.load(std::memory_order_acquire) < done; }
};

// futex(2) on a 32-bit word with a relative timeout: std::atomic::wait has no deadline, and
// every wait here must keep one because a dead peer is silent.
inline void futex_wait_for(std::atomic<std::uint32_t>& word, std::uint32_t seen, std::chrono::nanoseconds d) noexcept {
  if (d <= std::chrono::nanoseconds::zero()) return;
  const auto s = std::chrono::duration_cast<std::chrono::seconds>(d);
  timespec ts{static_cast<time_t>(s.count()), static_cast<long>((d - s).count())};
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_PRIVATE, seen, &ts, nullptr, 0);
}
inline void futex_wake_all(std::atomic<std::uint32_t>& word) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}
static_assert(sizeof(std::atomic<std::uint32_t>) == 4 && std::atomic<std::uint32_t>::is_always_lock_free);

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

inline constexpr int fabric_rank_bits = 20;
inline constexpr std::uint64_t fabric_continuation = std::uint64_t{1} << 62;

// The fabric tag carries the sender's rank, so a receive matches (source, tag) without the
// provider's directed-receive support; the frame header then has to agree with it.
inline std::uint64_t fabric_tag(int source, Tag tag, bool continuation) {
  return (continuation ? fabric_continuation : 0) | (std::uint64_t(source) << 40) | tag;
}

inline std::string provider_chain(const std::string& name) {
  if (name == "tcp") return "tcp;ofi_rxm";
  if (name == "verbs") return "verbs;ofi_rxm";
  return name;  // shm, sockets, or a chain given in full
}

// rxm sends messages up to its eager limit (default 16 KiB) in one go and larger ones through a
// rendezvous handshake (request, read, data, done), which on tcp costs two more wake-ups on each
// side: a 64 KiB round trip took 250 us instead of 90 us. An eager message costs no copy when
// rxm sends it straight from the caller's buffer (direct send) and the tcp provider lands it in a
// receive that is already posted (dynamic receive buffers, rxm's default over tcp); without
// direct send rxm first copies it into a bounce buffer. A message that arrives before its
// receive is posted is held (and later copied) by the receiving provider, so eager pays only
// where receives are posted ahead. Measured (bytes per CPU-second against a socket, 10 runs):
// 1 MiB messages went from 75% to 86% with a 4 MiB limit, but the 4 MiB checksum pieces, whose
// receives are posted only once the message's header has landed, fell from 86-88% to 75-80%.
// Hence 1 MiB + 4 KiB: whole messages up to 1 MiB go eager, checksum pieces by rendezvous.
// Set only where the user has not, and once, before libfabric reads its parameters; every rank
// must agree on the limit.
inline constexpr const char* rxm_eager_limit = "1052672";  // 1 MiB + 4 KiB
inline void default_rxm_parameters() {
  static std::once_flag once;
  std::call_once(once, [] {
    ::setenv("FI_OFI_RXM_EAGER_LIMIT", rxm_eager_limit, 0);
    ::setenv("FI_OFI_RXM_ENABLE_DIRECT_SEND", "1", 0);
  });
}

inline std::string fi_error_text(int rc) { return concat(::fi_strerror(rc < 0 ? -rc : rc), " (", rc, ")"); }

}  // namespace detail

class FabricTransport {
 public:
  /// Handle of one send or receive. Dropping a pending handle does not cancel the transfer:
  /// its buffer must stay valid until the transfer completes or the transport is destroyed.
  class Request {
   public:
    Request() = default;
    [[nodiscard]] bool valid() const noexcept { return op_ != nullptr; }

   private:
    friend class FabricTransport;
    explicit Request(std::shared_ptr<detail::FabricOp> op) : op_(std::move(op)) {}
    std::shared_ptr<detail::FabricOp> op_;
  };

  explicit FabricTransport(const Cluster& cluster, FabricOptions options = {})
      : cluster_(cluster),
        options_(options),
        checksum_payload_(options.checksum_payload.value_or(cluster.payload_checksum.value_or(false))),
        rank_(cluster.rank),
        size_(cluster.world_size) {
    POSEIDON_CHECK(size_ >= 1 && size_ <= (1 << detail::fabric_rank_bits), "rank ", rank_, ": world size ", size_,
                   " is outside [1, ", 1 << detail::fabric_rank_bits, "]");
    POSEIDON_CHECK(options_.chunk_bytes >= 1, "rank ", rank_, ": FabricOptions::chunk_bytes must be positive");
    try {
      open_endpoint();
      rendezvous_.emplace(cluster_, std::span<const std::byte>(local_name_));
      rendezvous_->on_failure([this] {
        wake_waiters();
        kick_cq();  // a waiting thread may be blocked reading the completion queue
      });
      insert_peers();
      progress_ = std::thread([this] { progress_loop(); });
    } catch (...) {
      rendezvous_.reset();
      close_endpoint();
      throw;
    }
  }

  FabricTransport(const FabricTransport&) = delete;
  FabricTransport& operator=(const FabricTransport&) = delete;

  ~FabricTransport() {
    if (rendezvous_) {
      try {
        if (std::uncaught_exceptions() > 0 && !rendezvous_->failed()) rendezvous_->abort("exited with an error");
        else if (!rendezvous_->failed()) rendezvous_->finish(cluster_.deadlines.message);
      } catch (...) {
      }
    }
    stop_progress();
    close_endpoint();
    // Ops the provider never finished hold themselves alive; with the endpoint gone, let go.
    while (inflight_head_) {
      auto* op = inflight_head_;
      inflight_head_ = op->next_inflight;
      op->keep.reset();
    }
    rendezvous_.reset();
  }

  [[nodiscard]] int rank() const noexcept { return rank_; }
  [[nodiscard]] int size() const noexcept { return size_; }
  [[nodiscard]] const Cluster& cluster() const noexcept { return cluster_; }
  [[nodiscard]] const std::vector<PeerInfo>& peers() const { return rendezvous_->peers(); }
  /// The provider that libfabric actually chose, e.g. "tcp;ofi_rxm".
  [[nodiscard]] const std::string& provider_name() const noexcept { return provider_name_; }

  /// Gives up on the job: every rank's waits fail, naming this rank and `reason`.
  void abort(const std::string& reason) { rendezvous_->abort(reason); }

  /// Turns the payload checksum of later sends on or off (receivers follow each frame's flag).
  /// Not to be called concurrently with isend.
  void set_checksum_payload(bool on) noexcept { checksum_payload_ = on; }
  /// Whether later sends carry a payload checksum (see FabricOptions::checksum_payload).
  [[nodiscard]] bool checksum_payload() const noexcept { return checksum_payload_; }

  Request isend(int peer, Tag tag, std::span<const std::byte> data) {
    detail::check_peer_and_tag(rank_, size_, peer, tag, true);
    throw_if_job_failed(true, peer, tag);
    auto op = std::make_shared<detail::FabricOp>();
    op->is_send = true;
    op->peer = peer;
    op->tag = tag;
    op->data = const_cast<std::byte*>(data.data());  // only read: libfabric's iovec is not const
    op->capacity = data.size();
    op->bytes = data.size();
    const std::size_t piece = std::min({options_.checksum_piece_bytes, options_.chunk_bytes,
                                        std::size_t{std::numeric_limits<std::uint32_t>::max()}});
    if (checksum_payload_ && piece >= FrameHeader::min_piece && data.size() > piece) {
      send_pieces(op, data, piece);
      return Request(std::move(op));
    }
    encode_header(make_header(FrameKind::data, static_cast<std::uint32_t>(rank_), tag, data, checksum_payload_),
                  op->header);
    const std::size_t chunk = options_.chunk_bytes;
    op->head.set(op.get(), 0, std::min(chunk, data.size()), true);
    for (std::size_t off = op->head.length; off < data.size(); off += chunk)
      op->add_posting(off, std::min(chunk, data.size() - off));
    queue_send(op, op->posting_count());
    return Request(std::move(op));
  }

  Request irecv(int peer, Tag tag, std::span<std::byte> buffer) {
    detail::check_peer_and_tag(rank_, size_, peer, tag, false);
    throw_if_job_failed(false, peer, tag);
    auto op = std::make_shared<detail::FabricOp>();
    op->peer = peer;
    op->tag = tag;
    op->data = buffer.data();
    op->capacity = buffer.size();
    // Continuation postings are added once the header says how long the message is.
    op->head.set(op.get(), 0, std::min(options_.chunk_bytes, buffer.size()), true);
    receive(op);
    return Request(std::move(op));
  }

  bool test(Request& req) {
    POSEIDON_CHECK(req.valid(), "rank ", rank_, ": test() on an empty request");
    auto& op = *req.op_;
    if (op.pending_now()) {
      throw_if_job_failed(op.is_send, op.peer, op.tag);
      throw_if_progress_failed(op);
      return false;
    }
    finish_op(op);
    return true;
  }

  std::size_t wait(Request& req) { return wait(req, cluster_.deadlines.message); }

  std::size_t wait(Request& req, std::chrono::milliseconds timeout) {
    POSEIDON_CHECK(req.valid(), "rank ", rank_, ": wait() on an empty request");
    auto& op = *req.op_;
    const auto start = std::chrono::steady_clock::now();
    const auto deadline = start + timeout;
    for (auto now = start; op.pending_now() && now - start < options_.spin; now = std::chrono::steady_clock::now())
      for (int i = 0; i < 16 && op.pending_now(); ++i) detail::cpu_relax();
    if (op.pending_now()) {
      // While any thread waits, the progress thread stays parked (see progress_loop), so it
      // must see this wait, and its end.
      in_wait_.fetch_add(1);
      wait_epoch_.fetch_add(1);
      struct Leave {
        FabricTransport& t;
        bool driving = false;
        ~Leave() {
          if (driving) t.release_cq();
          t.wait_epoch_.fetch_add(1);
          t.in_wait_.fetch_sub(1);
        }
      } leave{*this};
      for (;;) {
        // Read the sequence before the state: a completion after this read changes it, so the
        // futex below returns at once instead of sleeping through the wake-up.
        const std::uint32_t seen = wake_seq_.load();
        if (!op.pending_now()) break;
        throw_if_job_failed(op.is_send, op.peer, op.tag);
        throw_if_progress_failed(op);
        // A peer that died leaves no trace in the provider, so the deadline is the last resort.
        const auto now = std::chrono::steady_clock::now();
        if (now >= deadline)
          detail::raise("rank ", rank_, ": timed out after ", detail::format_ms(timeout), " waiting for ",
                        detail::describe_op(op.is_send, op.peer, op.tag));
        const auto slice = std::min<std::chrono::nanoseconds>(deadline - now, std::chrono::milliseconds(200));
        if (!leave.driving) leave.driving = acquire_cq(cq_waiter);
        if (leave.driving) {
          // This thread reads the completion queue itself: the completion it waits for needs
          // no hand-off from the progress thread (a wake-up on each side saved per message).
          drive_or_fail(static_cast<int>(std::max<std::int64_t>(
              1, std::chrono::duration_cast<std::chrono::milliseconds>(slice).count())));
          continue;
        }
        // Another thread drives. If it is the progress thread, interrupt its blocking read: it
        // then hands the queue over (release_cq wakes us).
        if (cq_owner_.load() == cq_progress) ::fi_cq_signal(cq_);
        sleepers_.fetch_add(1);
        detail::futex_wait_for(wake_seq_, seen, slice);
        sleepers_.fetch_sub(1);
      }
    }
    return finish_op(op);
  }

 private:
  // --- set-up ---------------------------------------------------------------------
  void open_endpoint() {
    const std::string chain = detail::provider_chain(cluster_.provider);
    const bool ip_based = chain.find("shm") == std::string::npos;
    std::string node;
    if (ip_based) node = detail::choose_local_address(cluster_);
    if (chain.find("ofi_rxm") != std::string::npos) detail::default_rxm_parameters();
    if (chain == "tcp;ofi_rxm") {
      // Over tcp an eager message that does not fit its receive makes the provider drop the
      // connection instead of truncating it. A receive smaller than a chunk therefore gets a
      // shared overflow area behind its buffer, as long as the eager limit: the message lands
      // whole, the header says it does not fit, and the rejection leaves the connection up.
      // (verbs would register the area with every receive, so it is tcp only.) The memory is
      // only touched when a message overflows.
      const char* limit = std::getenv("FI_OFI_RXM_EAGER_LIMIT");
      overflow_bytes_ = std::min<std::size_t>(limit ? std::strtoull(limit, nullptr, 10) : 0, std::size_t{64} << 20);
      if (overflow_bytes_) overflow_ = std::make_unique_for_overwrite<std::byte[]>(overflow_bytes_);
    }
    fi_info* hints = ::fi_allocinfo();
    POSEIDON_CHECK(hints, "rank ", rank_, ": fi_allocinfo failed");
    hints->ep_attr->type = FI_EP_RDM;
    hints->caps = FI_TAGGED;
    hints->mode = FI_CONTEXT | FI_CONTEXT2;
    // No FI_MR_LOCAL: we never register memory, so providers that need it (verbs) must sit
    // under ofi_rxm, which registers for us.
    hints->domain_attr->mr_mode = FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
    hints->domain_attr->threading = FI_THREAD_SAFE;
    hints->tx_attr->msg_order = FI_ORDER_SAS;
    hints->rx_attr->msg_order = FI_ORDER_SAS;
    hints->fabric_attr->prov_name = ::strdup(chain.c_str());
    fi_info* info = nullptr;
    // FI_SOURCE with an explicit node binds the address we chose; left alone, the provider may
    // pick another interface than the one the peers can reach.
    const int rc = ::fi_getinfo(FI_VERSION(1, 9), ip_based ? node.c_str() : nullptr, ip_based ? "0" : nullptr,
                                ip_based ? FI_SOURCE : 0, hints, &info);
    ::fi_freeinfo(hints);
    if (rc != 0 || !info) {
      if (cluster_.provider == "verbs" || chain.find("verbs") != std::string::npos)
        detail::raise("rank ", rank_, ": libfabric provider \"", chain, "\" is not available here (fi_getinfo: ",
                      detail::fi_error_text(rc),
                      "). verbs needs an RDMA device (InfiniBand or RoCE) and its rdma-core driver; none was found "
                      "on this host. Use POSEIDON_PROVIDER=tcp instead.");
      detail::raise("rank ", rank_, ": libfabric provider \"", chain, "\" is not available",
                    ip_based ? detail::concat(" on address ", node) : std::string(), " (fi_getinfo: ",
                    detail::fi_error_text(rc), "); choose POSEIDON_PROVIDER=tcp, shm or sockets");
    }
    info_ = info;
    provider_name_ = info_->fabric_attr->prov_name ? info_->fabric_attr->prov_name : chain;
    check(::fi_fabric(info_->fabric_attr, &fabric_, nullptr), "fi_fabric");
    check(::fi_domain(fabric_, info_, &domain_, nullptr), "fi_domain");
    fi_cq_attr cq_attr{};
    cq_attr.format = FI_CQ_FORMAT_TAGGED;
    cq_attr.wait_obj = FI_WAIT_UNSPEC;
    cq_attr.size = 4096;
    check(::fi_cq_open(domain_, &cq_attr, &cq_, nullptr), "fi_cq_open");
    fi_av_attr av_attr{};
    av_attr.type = FI_AV_TABLE;
    av_attr.count = static_cast<std::size_t>(size_);
    check(::fi_av_open(domain_, &av_attr, &av_, nullptr), "fi_av_open");
    check(::fi_endpoint(domain_, info_, &ep_, nullptr), "fi_endpoint");
    check(::fi_ep_bind(ep_, &cq_->fid, FI_TRANSMIT | FI_RECV), "fi_ep_bind(cq)");
    check(::fi_ep_bind(ep_, &av_->fid, 0), "fi_ep_bind(av)");
    check(::fi_enable(ep_), "fi_enable");
    std::size_t len = 0;
    ::fi_getname(&ep_->fid, nullptr, &len);
    local_name_.resize(len);
    check(::fi_getname(&ep_->fid, local_name_.data(), &len), "fi_getname");
    local_name_.resize(len);
  }

  void insert_peers() {
    const auto& peers = rendezvous_->peers();
    addrs_.resize(static_cast<std::size_t>(size_));
    for (int r = 0; r < size_; ++r) {
      const auto& p = peers[static_cast<std::size_t>(r)];
      const int n = ::fi_av_insert(av_, p.address.data(), 1, &addrs_[static_cast<std::size_t>(r)], 0, nullptr);
      POSEIDON_CHECK(n == 1, "rank ", rank_, ": could not add rank ", r, " (host ", p.host,
                     ") to the address vector: ", detail::fi_error_text(n));
    }
  }

  void check(int rc, const char* what) const {
    POSEIDON_CHECK(rc == 0, "rank ", rank_, ": ", what, " failed on provider ", provider_name_, ": ",
                   detail::fi_error_text(rc));
  }

  void close_endpoint() noexcept {
    std::lock_guard lock(cq_life_mutex_);
    if (ep_) ::fi_close(&ep_->fid);
    if (av_) ::fi_close(&av_->fid);
    if (cq_) ::fi_close(&cq_->fid);
    if (domain_) ::fi_close(&domain_->fid);
    if (fabric_) ::fi_close(&fabric_->fid);
    if (info_) ::fi_freeinfo(info_);
    ep_ = nullptr;
    av_ = nullptr;
    cq_ = nullptr;
    domain_ = nullptr;
    fabric_ = nullptr;
    info_ = nullptr;
  }

  // --- user-thread side ----------------------------------------------------------------
  // Posts a receive's first posting, or queues it behind earlier ones.
  void receive(const std::shared_ptr<detail::FabricOp>& op) {
    {
      std::lock_guard lock(state_mutex_);
      recvs_.push_back(op);
      // Post here only when nothing is queued: postings must reach the provider in submission
      // order, since FIFO matching of one (peer, tag) depends on it.
      if (queue_.empty() && post(op, 0)) return;
      queue_.emplace_back(op, 0);
    }
    ::fi_cq_signal(cq_);  // -FI_EAGAIN or a queue ahead of us: the queue's reader retries
  }

  // Posts the continuation receives of messages whose headers have landed, in the order the
  // receives were posted, which is the order their messages matched and so the order the
  // sender's continuations arrive in. Headers may land out of that order (an eager one
  // overtakes a rendezvous one), so a receive posts its continuations only once every earlier
  // receive of the same (peer, tag) has posted its own.
  void pump_receives_locked() {
    std::vector<std::pair<int, Tag>> busy;
    for (auto it = recvs_.begin(); it != recvs_.end();) {
      auto& op = **it;
      const std::pair key{op.peer, op.tag};
      if (std::find(busy.begin(), busy.end(), key) != busy.end()) {
        ++it;
        continue;
      }
      if (op.pending_now() && !op.header_done) {
        busy.push_back(key);
        ++it;
        continue;
      }
      if (op.pending_now() || op.draining)
        for (std::size_t k = 1; k < op.posting_count(); ++k) queue_.emplace_back(*it, k);
      it = recvs_.erase(it);
    }
  }

  // A pieced frame: the header carries piece 0's CRC, every later piece its own in a trailer.
  // isend checksums the first two pieces; the queue's reader checksums each later one when a
  // piece of this message completes, right before it posts it (see pump_sends_locked).
  void send_pieces(const std::shared_ptr<detail::FabricOp>& op, std::span<const std::byte> data, std::size_t piece) {
    FrameHeader h;
    h.kind = FrameKind::data;
    h.flags = FrameHeader::flag_piece_crc;
    h.source = static_cast<std::uint32_t>(rank_);
    h.tag = op->tag;
    h.length = data.size();
    h.piece = static_cast<std::uint32_t>(piece);
    h.payload_crc = detail::crc32c_payload(data.first(piece));
    encode_header(h, op->header);
    op->head.set(op.get(), 0, piece, true);
    for (std::size_t off = piece; off < data.size(); off += piece)
      op->add_posting(off, std::min(piece, data.size() - off), true);
    auto& second = op->posting(1);
    detail::put_le(second.trailer.data(), piece_crc(h.payload_crc, 1, data.subspan(second.offset, second.length)), 4);
    queue_send(op, 2);
  }

  // Every send goes through sends_, in isend order; postings [0, crc_ready) are ready to go.
  void queue_send(const std::shared_ptr<detail::FabricOp>& op, std::size_t crc_ready) {
    bool queued;
    {
      std::lock_guard lock(state_mutex_);
      op->crc_ready = crc_ready;
      sends_.push_back(op);
      queued = pump_sends_locked(nullptr);
    }
    if (queued) ::fi_cq_signal(cq_);
  }

  // Hands the ready postings of queued sends to the provider, in order. Messages of one (peer,
  // tag) match in posting order, and so do their continuations, so a send posts nothing while an
  // earlier one to the same (peer, tag) still has postings to hand over: the continuations of
  // two messages never interleave, and each message goes whole in isend order. A piece whose
  // checksum is still due is left to the queue's reader (`crc_work`), and only while fewer than
  // send_window pieces of its message are in the provider: the checksum then runs shortly
  // before the provider reads the piece, and nothing is read far ahead of the wire.
  // Returns whether something went to the retry queue (the queue's reader must be woken).
  bool pump_sends_locked(std::pair<std::shared_ptr<detail::FabricOp>, std::size_t>* crc_work) {
    bool queued = false;
    std::vector<std::pair<int, Tag>> busy;
    for (auto it = sends_.begin(); it != sends_.end();) {
      auto& op = **it;
      const bool blocked = std::find(busy.begin(), busy.end(), std::pair{op.peer, op.tag}) != busy.end();
      const std::size_t n = op.posting_count();
      if (!blocked && op.pending_now()) {
        for (; op.handed < std::min(n, op.crc_ready) && op.pending_now(); ++op.handed) {
          if (queue_.empty() && post(*it, op.handed)) continue;
          queue_.emplace_back(*it, op.handed);
          queued = true;
        }
        if (crc_work && !crc_work->first && op.handed < n && op.handed == op.crc_ready &&
            op.handed - op.retired < send_window && op.pending_now())
          *crc_work = {*it, op.handed};
      }
      if (!op.pending_now() || op.handed == n) {
        it = sends_.erase(it);
        continue;
      }
      if (!blocked) busy.emplace_back(op.peer, op.tag);
      ++it;
    }
    return queued;
  }

  // The queue's reader: posts what the queued sends have ready, checksumming due pieces outside
  // the state mutex (a 4 MiB piece takes ~0.1 ms; postings must not wait for it).
  void pump_sends() {
    for (;;) {
      std::pair<std::shared_ptr<detail::FabricOp>, std::size_t> work;
      {
        std::lock_guard lock(state_mutex_);
        if (sends_.empty()) return;
        pump_sends_locked(&work);
      }
      if (!work.first) return;
      auto& op = *work.first;
      auto& p = op.posting(work.second);
      const auto first_crc = static_cast<std::uint32_t>(detail::get_le(op.header.data() + 32, 4));  // payload_crc
      detail::put_le(p.trailer.data(),
                     piece_crc(first_crc, work.second, std::span<const std::byte>(op.data + p.offset, p.length)), 4);
      std::lock_guard lock(state_mutex_);
      op.crc_ready = work.second + 1;
    }
  }

  // The queue's reader, outside the state mutex: checks the postings that just landed while
  // their bytes are still in this core's cache (its own socket reads put them there), then
  // completes the receives that are whole. A mismatch fails the receive only once every posting
  // of it has left the provider, so no exception leaves the buffer still being written.
  void verify_landed() {
    for (auto& [keep, i] : landed_) {
      auto& op = *keep;
      FrameError e = FrameError::none;
      if (op.pending_now()) {
        const auto& h = op.received;
        if (h.pieced()) {
          const std::size_t begin = i * std::size_t{h.piece};
          const std::size_t len = std::min<std::size_t>(h.piece, h.length - begin);
          e = check_piece(h, i, std::span<const std::byte>(op.data + begin, len), op.posting(i).trailer);
        } else {
          e = check_payload(h, std::span<const std::byte>(op.data, op.bytes));
        }
      }
      std::lock_guard lock(state_mutex_);
      ++op.checked;
      if (e != FrameError::none && op.verify_error.empty())
        op.verify_error = op.received.pieced()
                              ? detail::concat(to_string(e), " (piece ", i, " of ", op.received.piece_count(), ")")
                              : std::string(to_string(e));
      complete_if_whole(op);
    }
    landed_.clear();  // may free ops: the provider and their requests may have let go
  }

  void wake_waiters() noexcept {
    wake_seq_.fetch_add(1);
    if (sleepers_.load() > 0) detail::futex_wake_all(wake_seq_);
  }

  // --- who reads the completion queue -----------------------------------------------------
  // Exactly one thread at a time: two threads reading one queue steal each other's
  // completions. The owner is the progress thread or a waiting thread; either drives progress
  // for every operation.
  bool acquire_cq(int who) noexcept {
    int expected = cq_free;
    return cq_owner_.compare_exchange_strong(expected, who);
  }
  void release_cq() noexcept {
    cq_owner_.store(cq_free);
    wake_waiters();  // a waiter that found the queue taken sleeps until it is free again
  }

  // Kicks the owner out of a blocking read (a job failure, a wait that wants the queue). Never
  // after the queue is closed: the rendezvous may report a failure at any time.
  void kick_cq() noexcept {
    std::lock_guard lock(cq_life_mutex_);
    if (cq_) ::fi_cq_signal(cq_);
  }

  // A waiting thread's turn at driving; a broken completion queue stops all progress, as it
  // stops the progress thread.
  void drive_or_fail(int timeout_ms) {
    try {
      drive(timeout_ms);
    } catch (const std::exception& e) {
      record_progress_failure(e.what());
      throw;
    }
  }

  void record_progress_failure(const std::string& what) {
    std::lock_guard lock(state_mutex_);
    if (progress_failed_.load()) return;
    progress_error_ = what;
    progress_failed_.store(true, std::memory_order_release);
    detail::comm_log(rank_, "fabric progress stopped: ", what);
    wake_waiters();
  }

  void throw_if_job_failed(bool is_send, int peer, Tag tag) const {
    if (rendezvous_ && rendezvous_->failed())
      detail::raise("rank ", rank_, ": ", rendezvous_->failure_text(), " during ",
                    detail::describe_op(is_send, peer, tag));
  }

  void throw_if_progress_failed(const detail::FabricOp& op) const {
    if (progress_failed_.load(std::memory_order_acquire))
      detail::raise("rank ", rank_, ": fabric progress stopped (", progress_error_, ") during ",
                    detail::describe_op(op.is_send, op.peer, op.tag));
  }

  // Runs in the waiting thread.
  std::size_t finish_op(detail::FabricOp& op) {
    const int state = op.state.load(std::memory_order_acquire);
    if (state == detail::FabricOp::failed && op.provider_error && rendezvous_) {
      // A provider error is usually the first sign of a dead peer; the control channel says
      // which rank died a moment later, and that is the error worth reporting.
      for (int i = 0; i < 100 && !rendezvous_->failed(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (rendezvous_->failed())
        detail::raise("rank ", rank_, ": ", rendezvous_->failure_text(), " during ",
                      detail::describe_op(op.is_send, op.peer, op.tag), " (provider: ", op.error, ")");
    }
    if (state == detail::FabricOp::failed)
      detail::raise("rank ", rank_, ": ", detail::describe_op(op.is_send, op.peer, op.tag), " failed: ", op.error);
    // Left for the waiting thread: a payload with one CRC over several chunks (above chunk_bytes,
    // sent with a piece size below FrameHeader::min_piece), and frames without a CRC,
    // where only the length is checked. A whole-payload pass by the queue's reader would hold
    // up every other transfer.
    if (!op.is_send && !op.verified) {
      if (const auto e = check_payload(op.received, std::span<const std::byte>(op.data, op.bytes));
          e != FrameError::none) {
        const auto msg = detail::concat("rejected a frame from rank ", op.peer, " (", detail::describe_tag(op.tag),
                                        "): ", to_string(e));
        detail::comm_log(rank_, msg);
        op.error = msg;
        op.state.store(detail::FabricOp::failed, std::memory_order_release);
        detail::raise("rank ", rank_, ": ", detail::describe_op(op.is_send, op.peer, op.tag), " failed: ", msg);
      }
      op.verified = true;
    }
    return op.bytes;
  }

  // --- posting and completions (under state_mutex_) ----------------------------------
  using Item = std::pair<std::shared_ptr<detail::FabricOp>, std::size_t>;

  // Returns false when the provider asked us to retry later (-FI_EAGAIN). The caller holds
  // state_mutex_, so a completion racing in on the queue's reader waits for our bookkeeping.
  bool post(const std::shared_ptr<detail::FabricOp>& keep, std::size_t index) {
    auto& op = *keep;
    auto& p = op.posting(index);
    iovec iov[4];
    std::size_t n = 0;
    if (p.first) iov[n++] = {op.header.data(), op.header.size()};
    if (p.length) iov[n++] = {(op.draining && !p.first ? op.drain.get() : op.data + p.offset), p.length};
    if (p.has_trailer) iov[n++] = {p.trailer.data(), p.trailer.size()};
    if (p.first && !op.is_send && overflow_bytes_ && p.length < options_.chunk_bytes)
      iov[n++] = {overflow_.get(), overflow_bytes_};
    const auto ftag = detail::fabric_tag(op.is_send ? rank_ : op.peer, op.tag, !p.first);
    ssize_t rc;
    if (op.is_send)
      rc = ::fi_tsendv(ep_, iov, nullptr, n, addrs_[static_cast<std::size_t>(op.peer)], ftag, &p.ctx);
    else
      rc = ::fi_trecvv(ep_, iov, nullptr, n, FI_ADDR_UNSPEC, ftag, 0, &p.ctx);
    if (rc == -FI_EAGAIN) return false;
    if (rc != 0) {
      fail_op(op, detail::concat(op.is_send ? "fi_tsendv" : "fi_trecvv", ": ",
                                 detail::fi_error_text(static_cast<int>(rc))));
      return true;
    }
    // The op keeps itself alive exactly while the provider holds one of its contexts.
    if (op.outstanding++ == 0) link_inflight(keep);
    ++op.posted;
    return true;
  }

  void link_inflight(const std::shared_ptr<detail::FabricOp>& keep) {
    auto* op = keep.get();
    op->keep = keep;
    op->prev_inflight = nullptr;
    op->next_inflight = inflight_head_;
    if (inflight_head_) inflight_head_->prev_inflight = op;
    inflight_head_ = op;
  }

  // May free the op: callers must not touch it afterwards.
  void unlink_inflight(detail::FabricOp& op) {
    if (op.prev_inflight) op.prev_inflight->next_inflight = op.next_inflight;
    else inflight_head_ = op.next_inflight;
    if (op.next_inflight) op.next_inflight->prev_inflight = op.prev_inflight;
    op.prev_inflight = op.next_inflight = nullptr;
    auto keep = std::move(op.keep);
  }

  void complete_op(detail::FabricOp& op, detail::FabricOp::State st, std::string error = {}) {
    int expected = detail::FabricOp::pending;
    if (!op.state.compare_exchange_strong(expected, detail::FabricOp::finishing, std::memory_order_acq_rel)) return;
    op.error = std::move(error);
    op.state.store(st, std::memory_order_release);
    wake_waiters();
  }

  void fail_op(detail::FabricOp& op, std::string error) { complete_op(op, detail::FabricOp::failed, std::move(error)); }

  void reject(detail::FabricOp& op, const std::string& why) {
    const auto msg =
        detail::concat("rejected a frame from rank ", op.peer, " (", detail::describe_tag(op.tag), "): ", why);
    detail::comm_log(rank_, msg);
    fail_op(op, msg);
  }

  // A receive whose message does not fit its buffer. When the header itself is sound, the rest
  // of the message (continuations of a chunked or pieced frame) is drained so that it cannot
  // match a later receive of the same (peer, tag); a header that fails its own checks tells us
  // nothing we could trust about what follows, and is only rejected.
  void reject_oversized(detail::FabricOp& op) {
    const auto d = decode_header(op.header, {~std::uint64_t{0}, static_cast<std::uint32_t>(size_), true});
    if (d && d.header.kind == FrameKind::data && d.header.source == static_cast<std::uint32_t>(op.peer) &&
        d.header.tag == op.tag) {
      const auto& h = d.header;
      const std::size_t step = h.pieced() ? std::size_t{h.piece} : options_.chunk_bytes;
      const std::size_t first = std::min<std::size_t>(h.length, step);
      for (std::size_t off = first; off < h.length; off += step)
        op.add_posting(off, std::min<std::size_t>(step, h.length - off), h.pieced());
      if (op.posting_count() > 1) {
        op.drain = std::make_unique_for_overwrite<std::byte[]>(std::min<std::size_t>(step, h.length - first));
        op.draining = true;
      }
      op.header_done = true;  // pump_receives_locked posts the drains, in order
    }
    reject(op, detail::concat("its message does not fit the ", op.capacity, "-byte receive buffer"));
  }

  // One posting of `op` left the provider: complete the op when nothing of it remains, and let
  // go of it (this may free it, so callers must not touch `op` afterwards).
  void retire(detail::FabricOp& op) {
    --op.outstanding;
    ++op.retired;
    complete_if_whole(op);
    if (op.outstanding == 0) unlink_inflight(op);
  }

  // Completes `op` once every posting has left the provider and every landed piece is checked.
  void complete_if_whole(detail::FabricOp& op) {
    if (op.outstanding != 0 || op.posted != op.posting_count() || op.checked != op.to_verify || !op.pending_now())
      return;
    if (!op.verify_error.empty()) return reject(op, op.verify_error);
    op.verified = op.to_verify > 0;
    complete_op(op, detail::FabricOp::done);
  }

  void on_receive_header(detail::FabricOp& op, std::size_t len) {
    if (len < FrameHeader::size) return reject(op, detail::concat("only ", len, " bytes, shorter than a frame header"));
    const auto d = decode_header(op.header, {op.capacity, static_cast<std::uint32_t>(size_), true});
    if (!d) {
      if (d.error == FrameError::oversized) return reject_oversized(op);
      return reject(op, std::string(to_string(d.error)));
    }
    const auto& h = d.header;
    if (h.kind != FrameKind::data) return reject(op, "not a data frame");
    if (h.source != static_cast<std::uint32_t>(op.peer))
      return reject(op, detail::concat("its header claims to come from rank ", h.source));
    if (h.tag != op.tag) return reject(op, detail::concat("its header carries tag ", h.tag));
    // Pieces follow the sender's piece size; plain continuations are chunk_bytes long.
    const std::size_t step = h.pieced() ? std::size_t{h.piece} : options_.chunk_bytes;
    const std::size_t first = std::min<std::size_t>(h.length, step);
    if (len != FrameHeader::size + first)
      return reject(op, detail::concat("received ", len - FrameHeader::size, " payload bytes where the header implies ",
                                       first));
    op.received = h;
    op.bytes = h.length;
    op.header_done = true;  // pump_receives_locked posts the continuations, in order
    for (std::size_t off = first; off < h.length; off += step)
      op.add_posting(off, std::min<std::size_t>(step, h.length - off), h.pieced());
    // Every piece is checked as it lands; a CRC over several chunks only once all are here.
    if (h.pieced()) op.to_verify = op.posting_count();
    else if ((h.flags & FrameHeader::flag_payload_crc) && op.posting_count() == 1) op.to_verify = 1;
    if (op.to_verify) landed_.emplace_back(op.keep, 0);
  }

  void handle_completion(const fi_cq_tagged_entry& e) {
    auto* p = static_cast<detail::FabricPosting*>(e.op_context);
    auto& op = *p->op;
    if (op.pending_now() && !op.is_send) {
      const std::size_t due = p->length + (p->has_trailer ? FrameHeader::piece_trailer : 0);
      if (p->first) {
        on_receive_header(op, e.len);
      } else if (e.len != due) {
        reject(op, detail::concat("continuation of ", e.len, " bytes where ", due, " were due"));
      } else if (p->has_trailer) {
        landed_.emplace_back(op.keep, p->offset / op.received.piece);
      }
    }
    retire(op);
  }

  void handle_error() {
    fi_cq_err_entry err{};
    if (::fi_cq_readerr(cq_, &err, 0) != 1) return;
    auto* p = static_cast<detail::FabricPosting*>(err.op_context);
    if (!p) return;
    auto& op = *p->op;
    if (op.draining && !p->first) {
      // a continuation of a rejected message, dropped as intended
    } else if (err.err == FI_ETRUNC) {
      if (p->first && !op.is_send && op.pending_now()) reject_oversized(op);
      else reject(op, detail::concat("its message does not fit the ", op.capacity, "-byte receive buffer"));
    } else {
      op.provider_error = true;
      fail_op(op, detail::concat(::fi_strerror(err.err), " (provider: ",
                                 ::fi_cq_strerror(cq_, err.prov_errno, err.err_data, nullptr, 0), ")"));
    }
    retire(op);
  }

  // One turn of progress by the owner of the completion queue: checksum and post what is due,
  // retry postings the provider refused, read completions (blocking up to `timeout_ms` in the
  // provider's wait object: on loaded cores spinning starves the very peer we are waiting for)
  // and act on them.
  void drive(int timeout_ms) {
    pump_sends();
    // Post in submission order: FIFO matching of one (peer, tag) depends on it.
    bool blocked = false;
    {
      std::lock_guard lock(state_mutex_);
      while (!queue_.empty()) {
        auto& item = queue_.front();
        const auto& op = *item.first;
        if ((op.pending_now() || op.draining) && !post(item.first, item.second)) {
          blocked = true;  // -FI_EAGAIN: drive progress below, then retry this same item
          break;
        }
        queue_.pop_front();  // posted, or its op already failed and (unless it drains) the rest is moot
      }
    }
    fi_cq_tagged_entry entries[32];
    const ssize_t n = blocked ? ::fi_cq_read(cq_, entries, 32) : ::fi_cq_sread(cq_, entries, 32, nullptr, timeout_ms);
    if (n > 0) {
      {
        std::lock_guard lock(state_mutex_);
        for (ssize_t i = 0; i < n; ++i) handle_completion(entries[i]);
        pump_receives_locked();
      }
      verify_landed();
    } else if (n == -FI_EAVAIL) {
      std::lock_guard lock(state_mutex_);
      handle_error();
      pump_receives_locked();
    } else if (n != -FI_EAGAIN && n != 0 && n != -FI_EINTR && n != -FI_ECANCELED) {
      throw Error(detail::concat("fi_cq_sread: ", detail::fi_error_text(static_cast<int>(n))));
    }
  }

  // The progress thread drives whenever no thread has waited for `progress_grace`: it moves
  // transfers nobody waits for yet (the tcp provider moves no data unless someone reads the
  // queue). While threads keep waiting it stays parked, so a stream of waits costs it no
  // wake-ups; once they stop, it takes over within one to two grace periods.
  void progress_loop() {
    std::uint32_t epoch = wait_epoch_.load();
    try {
      while (!stop_.load(std::memory_order_acquire) && !progress_failed_.load(std::memory_order_acquire)) {
        const std::uint32_t now_epoch = wait_epoch_.load();
        if (in_wait_.load() > 0 || now_epoch != epoch || !acquire_cq(cq_progress)) {
          epoch = now_epoch;
          detail::futex_wait_for(park_word_, park_word_.load(), progress_grace);
          continue;
        }
        struct Release {
          FabricTransport& t;
          ~Release() { t.release_cq(); }
        } release{*this};
        // The 100 ms bound lets `stop_` be seen; a waiter that wants the queue kicks us out.
        drive(100);
      }
    } catch (const std::exception& e) {
      record_progress_failure(e.what());
    }
  }

  void stop_progress() {
    if (!progress_.joinable()) return;
    stop_.store(true, std::memory_order_release);
    park_word_.fetch_add(1);
    detail::futex_wake_all(park_word_);
    kick_cq();
    progress_.join();
  }

  Cluster cluster_;
  FabricOptions options_;
  bool checksum_payload_;
  int rank_;
  int size_;
  std::string provider_name_;
  fi_info* info_ = nullptr;
  fid_fabric* fabric_ = nullptr;
  fid_domain* domain_ = nullptr;
  fid_cq* cq_ = nullptr;
  fid_av* av_ = nullptr;
  fid_ep* ep_ = nullptr;
  std::vector<std::byte> local_name_;
  std::unique_ptr<std::byte[]> overflow_;  // where an oversized eager message's excess lands (tcp)
  std::size_t overflow_bytes_ = 0;
  std::vector<fi_addr_t> addrs_;
  std::optional<Rendezvous> rendezvous_;

  // Pieces of one message in the provider beyond which no further piece of it is checksummed
  // (and so read) ahead of the wire. Two left the wire idle between rxm rendezvous hand-shakes
  // (more context switches per message at 16 and 64 MiB); four did not.
  static constexpr std::size_t send_window = 4;

  std::mutex state_mutex_;
  std::deque<Item> queue_;  // postings not yet accepted by the provider, in order
  std::deque<std::shared_ptr<detail::FabricOp>> sends_;  // sends not yet wholly handed over, in order
  std::deque<std::shared_ptr<detail::FabricOp>> recvs_;  // receives whose continuations are not yet posted, in order
  std::vector<Item> landed_;  // the queue's reader: received postings whose checksum is due
  detail::FabricOp* inflight_head_ = nullptr;  // ops the provider holds a context of

  // Waiters sleep on this word; every completion and failure bumps it.
  std::atomic<std::uint32_t> wake_seq_{0};
  std::atomic<int> sleepers_{0};  // threads asleep on wake_seq_
  // The completion queue's reader (see acquire_cq), the threads inside wait() and a count of
  // wait() entries and exits (the progress thread parks while either moves), and the word the
  // parked progress thread sleeps on.
  static constexpr int cq_free = 0, cq_progress = 1, cq_waiter = 2;
  static constexpr std::chrono::milliseconds progress_grace{2};
  std::atomic<int> cq_owner_{cq_free};
  std::atomic<int> in_wait_{0};
  std::atomic<std::uint32_t> wait_epoch_{0};
  std::atomic<std::uint32_t> park_word_{0};
  std::mutex cq_life_mutex_;  // kick_cq against close_endpoint
  std::atomic<bool> stop_{false};
  std::atomic<bool> progress_failed_{false};
  std::string progress_error_;
  std::thread progress_;
};

static_assert(transport<FabricTransport>);

POSEIDON_NAMESPACE_END
