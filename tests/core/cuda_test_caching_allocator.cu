// The caching device allocator: size classes, reuse, statistics, no cudaMalloc in a steady
// state, the free-event rule (a block is not handed out while queued work still uses it),
// out-of-memory handling, thread safety; and PinnedBuffer.
#include <doctest/doctest.h>
#include <poseidon/core/context.hpp>
#include <poseidon/core/tensor.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

using namespace poseidon;

namespace {

CudaCachingAllocator& alloc() { return CudaCachingAllocator::instance(); }
int current_device() {
  int d = 0;
  POSEIDON_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}
CudaMemoryStats stats() { return cuda_memory_stats(current_device()); }

// Spins until the host sets *flag (mapped pinned memory), then writes `value` to *out.
__global__ void wait_for_flag_kernel(const volatile int* flag, int* out, int value) {
  while (*flag == 0) __nanosleep(1000);
  *out = value;
}

}  // namespace

TEST_CASE("size classes: 512-byte steps up to 1 MiB, quarter powers of two above") {
  using A = CudaCachingAllocator;
  static_assert(A::round_size(0) == 0);
  CHECK(A::round_size(1) == 512);
  CHECK(A::round_size(512) == 512);
  CHECK(A::round_size(513) == 1024);
  CHECK(A::round_size(1 << 20) == 1 << 20);
  CHECK(A::round_size((1 << 20) + 1) == (1 << 20) + (1 << 18));
  CHECK(A::round_size(3 << 20) == 3 << 20);
  CHECK(A::round_size((3 << 20) + 1) == (7 << 19));
  CHECK(A::round_size(std::size_t(1) << 40) == std::size_t(1) << 40);
  for (std::size_t b : {std::size_t(7), std::size_t(100000), std::size_t(5) << 20, (std::size_t(1) << 33) + 3}) {
    CAPTURE(b);
    CHECK(A::round_size(b) >= b);
    CHECK(A::round_size(b) < b + b / 4 + 512);  // never more than a quarter wasted (or 512 B)
    CHECK(A::round_size(A::round_size(b)) == A::round_size(b));
  }
}

TEST_CASE("a freed block is reused for a request of its class, without cudaMalloc") {
  DeviceContext<CUDA> ctx;
  if (!alloc().caching()) return;  // POSEIDON_CUDA_NO_CACHING set: nothing to test
  alloc().empty_cache(ctx.device());
  const auto s0 = stats();
  void* p = alloc().allocate(1000);
  REQUIRE(p != nullptr);
  auto s1 = stats();
  CHECK(s1.cuda_malloc_calls == s0.cuda_malloc_calls + 1);
  CHECK(s1.bytes_in_use == s0.bytes_in_use + 1024);
  CHECK(s1.blocks_in_use == s0.blocks_in_use + 1);
  CHECK(s1.peak_bytes_in_use >= s1.bytes_in_use);
  alloc().deallocate(p);
  auto s2 = stats();
  CHECK(s2.bytes_in_use == s0.bytes_in_use);
  CHECK(s2.bytes_cached == 1024);
  CHECK(s2.blocks_cached == 1);
  CHECK(s2.cuda_free_calls == s0.cuda_free_calls);  // kept, not freed

  void* q = alloc().allocate(513);  // same class (1024)
  CHECK(q == p);
  auto s3 = stats();
  CHECK(s3.cuda_malloc_calls == s1.cuda_malloc_calls);
  CHECK(s3.cache_hits == s0.cache_hits + 1);
  CHECK(s3.bytes_cached == 0);

  void* r = alloc().allocate(2000);  // another class: a new block
  CHECK(r != q);
  CHECK(stats().cuda_malloc_calls == s1.cuda_malloc_calls + 1);
  alloc().deallocate(q);
  alloc().deallocate(r);
  CHECK(stats().bytes_cached == 1024 + 2048);

  alloc().empty_cache(ctx.device());
  const auto s4 = stats();
  CHECK(s4.bytes_cached == 0);
  CHECK(s4.blocks_cached == 0);
  CHECK(s4.cuda_free_calls == s0.cuda_free_calls + 2);
  CHECK(alloc().allocate(0) == nullptr);
  alloc().deallocate(nullptr);  // ignored
}

TEST_CASE("repeated allocation of the same sizes reaches a steady state with no cudaMalloc") {
  DeviceContext<CUDA> ctx;
  if (!alloc().caching()) return;
  const std::vector<std::size_t> sizes = {100, 4096, 70000, std::size_t(1) << 20, std::size_t(3) << 20,
                                          std::size_t(10) << 20, 100, 4096};
  auto round = [&] {
    std::vector<void*> ps;
    for (std::size_t b : sizes) {
      ps.push_back(alloc().allocate(b));
      // Queue work on the block so its free event is pending at times.
      POSEIDON_CUDA_CHECK(cudaMemsetAsync(ps.back(), 1, b, ctx.stream()));
    }
    for (void* p : ps) alloc().deallocate(p);
  };
  round();
  const auto warm = stats();
  for (int i = 0; i < 50; ++i) round();
  const auto after = stats();
  CHECK(after.cuda_malloc_calls == warm.cuda_malloc_calls);
  CHECK(after.cuda_free_calls == warm.cuda_free_calls);
  CHECK(after.cache_hits == warm.cache_hits + 50 * sizes.size());
  CHECK(after.bytes_in_use == warm.bytes_in_use);

  // Tensors made and dropped in a loop (per-iteration scratch) behave the same.
  {
    Tensor<CUDA, float> t{64, 3, 32, 32};
    Tensor<CUDA, float> scratch{17};
  }
  const auto before_tensors = stats();
  std::vector<float> host(64 * 3 * 32 * 32, 0.5f);
  for (int i = 0; i < 20; ++i) {
    Tensor<CUDA, float> t{64, 3, 32, 32};
    t.copy_data_from_host(host);
    Tensor<CUDA, float> scratch{17};
  }
  CHECK(stats().cuda_malloc_calls == before_tensors.cuda_malloc_calls);
  ctx.synchronize();
}

TEST_CASE("a block is not handed out again while work queued before its free still runs") {
  DeviceContext<CUDA> ctx;
  if (!alloc().caching()) return;
  int* flag_host = nullptr;
  POSEIDON_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&flag_host), sizeof(int), cudaHostAllocMapped));
  *flag_host = 0;
  int* flag_dev = nullptr;
  POSEIDON_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&flag_dev), flag_host, 0));

  // A size class no other test uses, so the block below is the bin's only one.
  const std::size_t bytes = 777777;
  alloc().empty_cache(ctx.device());
  auto* block = static_cast<int*>(alloc().allocate(bytes));
  // The kernel (on the context's stream, not the legacy one) writes the block only once released.
  wait_for_flag_kernel<<<1, 1, 0, ctx.stream()>>>(flag_dev, block, 41);
  POSEIDON_CUDA_CHECK(cudaGetLastError());
  alloc().deallocate(block);  // still in use on the device

  // Releases the kernel once allocate() has decided to wait (or gives up if it never does).
  const auto waits_before = stats().reuse_waits;
  std::atomic<bool> done{false};
  const int device = ctx.device();
  std::thread releaser([&] {
    (void)cudaSetDevice(device);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!done.load() && cuda_memory_stats(device).reuse_waits == waits_before &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    reinterpret_cast<volatile int*>(flag_host)[0] = 1;
  });
  void* again = alloc().allocate(bytes);
  // Whatever the timing, the queued kernel must be finished by the time the block is ours.
  const cudaError_t q = cudaStreamQuery(ctx.stream());
  done = true;
  releaser.join();
  CHECK(again == block);
  CHECK(q == cudaSuccess);
  CHECK(stats().reuse_waits == waits_before + 1);
  int v = 0;
  POSEIDON_CUDA_CHECK(cudaMemcpy(&v, again, sizeof(int), cudaMemcpyDeviceToHost));
  CHECK(v == 41);
  alloc().deallocate(again);
  POSEIDON_CUDA_CHECK(cudaFreeHost(flag_host));
}

TEST_CASE("out of memory: the cache is released, the allocation retried, then a clear error") {
  DeviceContext<CUDA> ctx;
  std::size_t free_bytes = 0, total = 0;
  POSEIDON_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
  void* p = alloc().allocate(std::size_t(1) << 20);
  alloc().deallocate(p);  // something cached
  const auto s0 = stats();
  const std::size_t impossible = total + (std::size_t(1) << 30);
  CHECK_THROWS_WITH_AS((void)alloc().allocate(impossible), doctest::Contains("CUDA out of memory"), Error);
  CHECK_THROWS_WITH_AS((void)alloc().allocate(impossible), doctest::Contains("failed on device"), Error);
  const auto s1 = stats();
  if (alloc().caching()) {
    CHECK(s1.cache_flushes >= s0.cache_flushes + 1);
    CHECK(s1.bytes_cached == 0);
  }
  CHECK(s1.bytes_in_use == s0.bytes_in_use);
  // The device is still usable and no error is left behind.
  CHECK(cudaGetLastError() == cudaSuccess);
  Tensor<CUDA, float> ok{16};
  CHECK(ok.data_to_host() == std::vector<float>(16, 0.0f));
}

TEST_CASE("threads allocating and freeing at once never share a block") {
  DeviceContext<CUDA> ctx;
  const int device = ctx.device();
  const auto s0 = stats();
  constexpr int threads = 4, iterations = 150;
  std::atomic<int> failures{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      try {
        POSEIDON_CUDA_CHECK(cudaSetDevice(device));
        const std::size_t sizes[] = {256, 1000, 5000, 65536, std::size_t(2) << 20};
        std::vector<std::pair<unsigned char*, std::size_t>> live;
        for (int i = 0; i < iterations; ++i) {
          const std::size_t b = sizes[static_cast<std::size_t>(i * (t + 1)) % 5];
          auto* p = static_cast<unsigned char*>(alloc().allocate(b));
          POSEIDON_CUDA_CHECK(cudaMemset(p, t + 1, b));
          live.emplace_back(p, b);
          if (live.size() > 3) {
            // The oldest block still holds this thread's byte at both ends: nobody else got it.
            const auto [q, n] = live.front();
            unsigned char first = 0, last = 0;
            POSEIDON_CUDA_CHECK(cudaMemcpy(&first, q, 1, cudaMemcpyDeviceToHost));
            POSEIDON_CUDA_CHECK(cudaMemcpy(&last, q + n - 1, 1, cudaMemcpyDeviceToHost));
            if (first != t + 1 || last != t + 1) ++failures;
            alloc().deallocate(q);
            live.erase(live.begin());
          }
        }
        for (auto [q, n] : live) alloc().deallocate(q);
      } catch (...) {
        failures += 1000;
      }
    });
  for (auto& th : pool) th.join();
  CHECK(failures.load() == 0);
  const auto s1 = stats();
  CHECK(s1.bytes_in_use == s0.bytes_in_use);
  CHECK(s1.blocks_in_use == s0.blocks_in_use);
  CHECK(s1.allocations == s0.allocations + threads * iterations);
  if (alloc().caching()) {
    // A thread's (at most 4) live blocks are of distinct classes, so no class ever has more
    // than `threads` blocks live: with reuse, at most threads x 5 classes cudaMalloc calls.
    CHECK(s1.cuda_malloc_calls - s0.cuda_malloc_calls <= std::size_t(threads) * 5);
  }
}

TEST_CASE("a block freed while another device is current goes back to its own pool") {
  if (cuda_device_count() < 2) return;  // needs two GPUs
  POSEIDON_CUDA_CHECK(cudaSetDevice(1));
  const auto s0 = cuda_memory_stats(1);
  void* p = alloc().allocate(4096);
  POSEIDON_CUDA_CHECK(cudaSetDevice(0));
  alloc().deallocate(p);
  CHECK(current_device() == 0);  // the guard restored it
  const auto s1 = cuda_memory_stats(1);
  CHECK(s1.bytes_in_use == s0.bytes_in_use);
  if (alloc().caching()) CHECK(s1.bytes_cached == s0.bytes_cached + 4096);
}

TEST_CASE("PinnedBuffer: page-locked, move-only, round-trips through the device") {
  static_assert(!std::is_copy_constructible_v<PinnedBuffer>);
  static_assert(std::is_nothrow_move_constructible_v<PinnedBuffer>);
  PinnedBuffer a(64 * sizeof(float));
  REQUIRE(a.get() != nullptr);
  CHECK(a.bytes() == 64 * sizeof(float));
  cudaPointerAttributes attr{};
  POSEIDON_CUDA_CHECK(cudaPointerGetAttributes(&attr, a.get()));
  CHECK(attr.type == cudaMemoryTypeHost);
  auto v = a.as<float>();
  CHECK(v.size() == 64);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = float(i) * 0.25f;

  PinnedBuffer b(std::move(a));
  CHECK(a.get() == nullptr);
  CHECK(a.bytes() == 0);
  CHECK(b.as<float>()[3] == 0.75f);

  Tensor<CUDA, float> t{64};
  DeviceContext<CUDA> ctx;
  POSEIDON_CUDA_CHECK(cudaMemcpyAsync(t.data(), b.get(), b.bytes(), cudaMemcpyHostToDevice, ctx.stream()));
  ctx.synchronize();
  const auto back = t.data_to_host();
  CHECK(std::vector<float>(back.begin(), back.end()) == std::vector<float>(v.begin(), v.end()));

  PinnedBuffer c;
  c = std::move(b);
  CHECK(c.bytes() == 64 * sizeof(float));
  CHECK(PinnedBuffer(0).get() == nullptr);
}
