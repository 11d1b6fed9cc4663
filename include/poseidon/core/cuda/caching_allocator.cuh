// CudaCachingAllocator: device memory kept per device in size-class bins and handed out again
// after a free, so a training loop's steady state makes no cudaMalloc (or cudaFree) calls.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/cuda/check.cuh>
#include <poseidon/core/error.hpp>

#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdlib>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

POSEIDON_NAMESPACE_BEGIN

/// What one device's pool holds and has done. Sizes are size-class bytes (what the device
/// gave out), not the bytes asked for.
struct CudaMemoryStats {
  int device = 0;
  std::size_t bytes_in_use = 0;       // handed out and not yet freed
  std::size_t peak_bytes_in_use = 0;  // the most bytes_in_use has ever been
  std::size_t bytes_cached = 0;       // freed, kept for reuse
  std::size_t blocks_in_use = 0;
  std::size_t blocks_cached = 0;
  std::size_t allocations = 0;        // allocate() calls with a non-zero size
  std::size_t cache_hits = 0;         // ... served from the cache
  std::size_t reuse_waits = 0;        // ... that had to wait for the device to finish with the block
  std::size_t cuda_malloc_calls = 0;  // successful cudaMalloc calls
  std::size_t cuda_free_calls = 0;
  std::size_t cache_flushes = 0;      // cudaMalloc failures answered by releasing the cache and retrying
};

namespace detail {
/// Makes `device` current for the calling thread and restores the previous one on scope exit;
/// does nothing when it is already current. Never throws (used on free paths).
class CudaDeviceGuard {
 public:
  explicit CudaDeviceGuard(int device) noexcept {
    if (cudaGetDevice(&previous_) != cudaSuccess) {
      (void)cudaGetLastError();
      previous_ = -1;
    }
    if (device != previous_ && cudaSetDevice(device) == cudaSuccess) {
      switched_ = true;
    } else {
      (void)cudaGetLastError();
    }
  }
  ~CudaDeviceGuard() {
    if (switched_ && previous_ >= 0 && cudaSetDevice(previous_) != cudaSuccess) (void)cudaGetLastError();
  }
  CudaDeviceGuard(const CudaDeviceGuard&) = delete;
  CudaDeviceGuard& operator=(const CudaDeviceGuard&) = delete;

 private:
  int previous_ = -1;
  bool switched_ = false;
};
}  // namespace detail

/// The process-wide caching allocator behind Allocator<CUDA> (and so every Tensor<CUDA>).
///
/// Size classes: requests up to 1 MiB round up to a multiple of 512 B; larger ones to the next
/// of four steps per power of two (2^k times 1, 1.25, 1.5 or 1.75), so at most a quarter is
/// wasted. A free block is reused only for a request of exactly its class; blocks are never
/// split or merged, so every pointer keeps cudaMalloc's 256-byte alignment.
///
/// Stream rule (record an event on free, wait on reuse): Poseidon's kernels, copies and memsets
/// run on the legacy default stream and on DeviceContext streams made with cudaStreamCreate,
/// which are blocking streams. deallocate() records the block's event on cudaStreamLegacy; the
/// legacy stream waits for all earlier work of every blocking stream of the device, so the event
/// completes only when every use of the block queued before the free has finished, whichever
/// context's stream queued it. allocate() hands out a cached block whose event has completed, or,
/// when every block of the class is still pending, waits for the oldest one's event rather than
/// calling cudaMalloc. Work on streams created with cudaStreamNonBlocking is NOT covered: code
/// that frees memory used on such a stream must synchronise that stream first.
///
/// Out of memory: a failed cudaMalloc releases this device's cached blocks and retries once;
/// a second failure throws poseidon::Error with the sizes and the device's free memory.
/// POSEIDON_CUDA_NO_CACHING=1 in the environment (read once) turns caching off: every free goes
/// back to cudaFree, as tools such as compute-sanitizer prefer.
class CudaCachingAllocator {
 public:
  static constexpr std::size_t small_quantum = 512;
  static constexpr std::size_t small_limit = std::size_t(1) << 20;
  static constexpr int max_devices = 64;

  /// The one allocator of the program. Never destroyed: tensors with static storage may be
  /// freed after it would have been, and the driver reclaims device memory at exit anyway.
  static CudaCachingAllocator& instance() {
    static CudaCachingAllocator* a = new CudaCachingAllocator();
    return *a;
  }

  /// The size class of a request of `bytes` (0 for 0).
  static constexpr std::size_t round_size(std::size_t bytes) {
    if (bytes <= small_limit) return (bytes + small_quantum - 1) / small_quantum * small_quantum;
    const std::size_t step = std::bit_floor(bytes) / 4;
    return (bytes + step - 1) / step * step;
  }

  [[nodiscard]] bool caching() const { return caching_; }

  /// `bytes` of device memory on the calling thread's current device; nullptr for 0 bytes.
  void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    // Beyond this the rounding would overflow; no device has that much memory anyway.
    if (bytes > std::numeric_limits<std::size_t>::max() / 2)
      detail::raise("CUDA out of memory: cannot allocate ", bytes, " bytes (more than any device holds)");
    int device = 0;
    POSEIDON_CUDA_CHECK(cudaGetDevice(&device));
    Pool& pl = pool(device);
    const std::size_t size = round_size(bytes);

    std::unique_lock lock(pl.mutex);
    ++pl.stats.allocations;
    if (auto bin = pl.free.find(size); bin != pl.free.end()) {
      auto& q = bin->second;
      std::size_t pick = q.size();
      for (std::size_t i = 0; i < q.size() && pick == q.size(); ++i) {
        const cudaError_t e = cudaEventQuery(q[i].ready);
        if (e == cudaSuccess) {
          pick = i;
        } else if (e != cudaErrorNotReady) {
          detail::cuda_check(e, "cudaEventQuery (a cached block's free event)", __FILE__, __LINE__);
        }
      }
      const bool wait = pick == q.size();
      if (wait) pick = 0;  // the oldest pending free: the first to complete
      const Block b = q[pick];
      q.erase(q.begin() + static_cast<std::ptrdiff_t>(pick));
      if (q.empty()) pl.free.erase(bin);
      pl.stats.bytes_cached -= size;
      --pl.stats.blocks_cached;
      ++pl.stats.cache_hits;
      if (wait) ++pl.stats.reuse_waits;
      pl.live.emplace(b.ptr, b);
      note_in_use(pl, size);
      lock.unlock();
      if (wait) POSEIDON_CUDA_CHECK(cudaEventSynchronize(b.ready));
      return b.ptr;
    }

    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, size);
    const std::size_t cached_before = pl.stats.bytes_cached;
    if (e == cudaErrorMemoryAllocation && pl.stats.blocks_cached > 0) {
      (void)cudaGetLastError();
      ++pl.stats.cache_flushes;
      release_cached(pl);
      e = cudaMalloc(&p, size);
    }
    if (e != cudaSuccess) {
      (void)cudaGetLastError();  // clear the error so later calls are not blamed
      std::size_t free_bytes = 0, total_bytes = 0;
      if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) (void)cudaGetLastError();
      detail::raise(e == cudaErrorMemoryAllocation ? "CUDA out of memory" : "CUDA error", ": cudaMalloc(", size,
                    " bytes, the size class of a request for ", bytes, " bytes) failed on device ", device, ": ",
                    cudaGetErrorString(e), ". Poseidon holds ", pl.stats.bytes_in_use, " bytes in use",
                    cached_before ? " and released its " : "",
                    cached_before ? std::to_string(cached_before) + " cached bytes before retrying" : "",
                    "; the device has ", free_bytes, " of ", total_bytes, " bytes free");
    }
    ++pl.stats.cuda_malloc_calls;
    Block b{p, size, nullptr};
    if (const cudaError_t ee = cudaEventCreateWithFlags(&b.ready, cudaEventDisableTiming); ee != cudaSuccess) {
      (void)cudaGetLastError();
      (void)cudaFree(p);
      ++pl.stats.cuda_free_calls;
      detail::cuda_check(ee, "cudaEventCreateWithFlags (a block's free event)", __FILE__, __LINE__);
    }
    pl.live.emplace(p, b);
    pl.used.store(true, std::memory_order_release);
    note_in_use(pl, size);
    return p;
  }

  /// Returns a pointer from allocate() (on any device, from any thread); nullptr is ignored.
  void deallocate(void* p) noexcept {
    if (!p) return;
    int current = -1;
    if (cudaGetDevice(&current) != cudaSuccess) {
      (void)cudaGetLastError();
      current = -1;
    }
    // The current device is almost always the owner; the others are searched only if not.
    if (current >= 0 && current < max_devices && release_into(*pools_[static_cast<std::size_t>(current)], p)) return;
    for (int d = 0; d < max_devices; ++d)
      if (d != current && pools_[static_cast<std::size_t>(d)]->used.load(std::memory_order_acquire) &&
          release_into(*pools_[static_cast<std::size_t>(d)], p))
        return;
    // Not ours (cannot happen through Allocator<CUDA>): hand it to the driver.
    if (cudaFree(p) != cudaSuccess) (void)cudaGetLastError();
  }

  /// Frees every cached block of `device` (blocks in use stay); waits for their pending frees.
  void empty_cache(int device) {
    Pool& pl = pool(device);
    std::lock_guard lock(pl.mutex);
    release_cached(pl);
  }
  /// Frees every cached block of every device.
  void empty_cache() {
    for (int d = 0; d < max_devices; ++d)
      if (pools_[static_cast<std::size_t>(d)]->used.load(std::memory_order_acquire)) empty_cache(d);
  }

  [[nodiscard]] CudaMemoryStats stats(int device) const {
    const Pool& pl = pool(device);
    std::lock_guard lock(pl.mutex);
    return pl.stats;
  }
  /// Sets the peak to the current use (to measure the peak of one phase).
  void reset_peak(int device) {
    Pool& pl = pool(device);
    std::lock_guard lock(pl.mutex);
    pl.stats.peak_bytes_in_use = pl.stats.bytes_in_use;
  }

  CudaCachingAllocator(const CudaCachingAllocator&) = delete;
  CudaCachingAllocator& operator=(const CudaCachingAllocator&) = delete;

 private:
  struct Block {
    void* ptr = nullptr;
    std::size_t size = 0;
    cudaEvent_t ready = nullptr;  // recorded at free; complete once the device is done with the block
  };
  struct Pool {
    mutable std::mutex mutex;
    std::atomic<bool> used{false};
    std::unordered_map<void*, Block> live;           // handed out
    std::map<std::size_t, std::deque<Block>> free;   // size class -> cached blocks, oldest free first
    CudaMemoryStats stats;
  };

  CudaCachingAllocator() {
    const char* off = std::getenv("POSEIDON_CUDA_NO_CACHING");
    caching_ = !(off && *off && std::string_view(off) != "0");
    for (int d = 0; d < max_devices; ++d) {
      pools_[static_cast<std::size_t>(d)] = std::make_unique<Pool>();
      pools_[static_cast<std::size_t>(d)]->stats.device = d;
    }
  }

  Pool& pool(int device) const {
    POSEIDON_CHECK(device >= 0 && device < max_devices, "CudaCachingAllocator: device ", device,
                   " is outside 0..", max_devices - 1);
    return *pools_[static_cast<std::size_t>(device)];
  }

  static void note_in_use(Pool& pl, std::size_t size) {
    pl.stats.bytes_in_use += size;
    ++pl.stats.blocks_in_use;
    if (pl.stats.bytes_in_use > pl.stats.peak_bytes_in_use) pl.stats.peak_bytes_in_use = pl.stats.bytes_in_use;
  }

  // Moves p from live to the cache (or to cudaFree) if this pool owns it; false if it does not.
  bool release_into(Pool& pl, void* p) noexcept {
    std::lock_guard lock(pl.mutex);
    const auto it = pl.live.find(p);
    if (it == pl.live.end()) return false;
    const Block b = it->second;
    pl.live.erase(it);
    pl.stats.bytes_in_use -= b.size;
    --pl.stats.blocks_in_use;
    detail::CudaDeviceGuard guard(pl.stats.device);
    const bool recorded = cudaEventRecord(b.ready, cudaStreamLegacy) == cudaSuccess;
    if (!recorded) (void)cudaGetLastError();  // e.g. the runtime is unloading at exit
    if (caching_ && recorded) {
      try {
        pl.free[b.size].push_back(b);
        pl.stats.bytes_cached += b.size;
        ++pl.stats.blocks_cached;
        return true;
      } catch (...) {  // no host memory for the bin: give the block back instead
      }
    }
    free_block(pl, b, recorded);
    return true;
  }

  static void free_block(Pool& pl, const Block& b, bool wait) noexcept {
    if (wait && cudaEventSynchronize(b.ready) != cudaSuccess) (void)cudaGetLastError();
    if (cudaEventDestroy(b.ready) != cudaSuccess) (void)cudaGetLastError();
    if (cudaFree(b.ptr) != cudaSuccess) (void)cudaGetLastError();
    ++pl.stats.cuda_free_calls;
  }

  // Caller holds pl.mutex.
  static void release_cached(Pool& pl) noexcept {
    detail::CudaDeviceGuard guard(pl.stats.device);
    for (auto& [size, q] : pl.free)
      for (const Block& b : q) free_block(pl, b, true);
    pl.free.clear();
    pl.stats.bytes_cached = 0;
    pl.stats.blocks_cached = 0;
  }

  bool caching_ = true;
  std::array<std::unique_ptr<Pool>, max_devices> pools_;
};

/// The memory statistics of a device (default: the calling thread's current device).
inline CudaMemoryStats cuda_memory_stats(int device = -1) {
  if (device < 0) POSEIDON_CUDA_CHECK(cudaGetDevice(&device));
  return CudaCachingAllocator::instance().stats(device);
}

/// Returns every cached (free) device block of every device to the driver; blocks in use stay.
/// For handing memory to another library or process; training never needs it.
inline void cuda_empty_cache() { CudaCachingAllocator::instance().empty_cache(); }

POSEIDON_NAMESPACE_END
