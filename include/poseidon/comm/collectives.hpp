// The collectives the trainer needs (barrier, broadcast, allgather, fixed-order reduce), written
// once over the `transport` concept with reserved tags, so every transport gets them alike.
#pragma once

#include <poseidon/comm/transport.hpp>
#include <poseidon/core/concepts.hpp>
#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>

#include <algorithm>
#include <cstddef>
#include <functional>
#include <span>
#include <type_traits>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

// Every rank must call the same collectives in the same order (the MPI rule): they share one
// tag per kind, and per-sender FIFO matching is what keeps consecutive calls apart.

namespace detail {
template <class E>
std::span<std::byte> writable_bytes(std::span<E> s) {
  static_assert(std::is_trivially_copyable_v<E>, "collectives move raw bytes: E must be trivially copyable");
  return std::as_writable_bytes(s);
}
}  // namespace detail

/// Returns once every rank has entered the barrier (gather to rank 0, then release).
template <transport T>
void barrier(T& t) {
  const int n = t.size();
  if (n == 1) return;
  std::byte token{};
  const auto arrive = static_cast<Tag>(detail::CollectiveTag::barrier_arrive);
  const auto release = static_cast<Tag>(detail::CollectiveTag::barrier_release);
  if (t.rank() == 0) {
    std::vector<std::byte> sink(static_cast<std::size_t>(n));
    std::vector<typename T::Request> reqs;
    reqs.reserve(static_cast<std::size_t>(n));
    for (int r = 1; r < n; ++r) reqs.push_back(t.irecv(r, arrive, std::span(&sink[static_cast<std::size_t>(r)], 1)));
    for (auto& q : reqs) t.wait(q);
    reqs.clear();
    for (int r = 1; r < n; ++r) reqs.push_back(t.isend(r, release, std::span<const std::byte>(&token, 1)));
    for (auto& q : reqs) t.wait(q);
  } else {
    auto s = t.isend(0, arrive, std::span<const std::byte>(&token, 1));
    auto r = t.irecv(0, release, std::span(&token, 1));
    t.wait(s);
    t.wait(r);
  }
}

/// Copies `root`'s bytes into `data` on every rank (binomial tree: log2(P) rounds).
/// Every rank passes a buffer of the same size.
template <transport T>
void broadcast(T& t, std::span<std::byte> data, int root) {
  const int n = t.size();
  POSEIDON_CHECK(root >= 0 && root < n, "rank ", t.rank(), ": broadcast root ", root, " outside the world of ", n);
  const auto tag = static_cast<Tag>(detail::CollectiveTag::broadcast);
  const int vr = (t.rank() - root + n) % n;  // rank relative to the root
  int mask = 1;
  while (mask < n) {
    if (vr & mask) {
      auto q = t.irecv((vr - mask + root) % n, tag, data);
      const auto got = t.wait(q);
      POSEIDON_CHECK(got == data.size(), "rank ", t.rank(), ": broadcast from rank ", root, " delivered ", got,
                     " bytes, this rank expected ", data.size());
      break;
    }
    mask <<= 1;
  }
  std::vector<typename T::Request> reqs;
  for (mask >>= 1; mask > 0; mask >>= 1)
    if (vr + mask < n) reqs.push_back(t.isend((vr + mask + root) % n, tag, std::span<const std::byte>(data)));
  for (auto& q : reqs) t.wait(q);
}

template <transport T, class E>
  requires(!std::is_same_v<std::remove_const_t<E>, std::byte>)
void broadcast(T& t, std::span<E> data, int root) {
  broadcast(t, detail::writable_bytes(data), root);
}

/// Gathers every rank's `mine` (all the same size) into `all` in rank order, on every rank:
/// a ring, so each link carries (P-1)/P of the result, the bandwidth-optimal schedule for the
/// large sufficient-factor blocks it exists for.
template <transport T>
void allgather(T& t, std::span<const std::byte> mine, std::span<std::byte> all) {
  const int n = t.size();
  const int me = t.rank();
  const std::size_t block = mine.size();
  POSEIDON_CHECK(all.size() == block * static_cast<std::size_t>(n), "rank ", me, ": allgather output holds ",
                 all.size(), " bytes, needs ", n, " x ", block);
  auto slot = [&](int r) { return all.subspan(static_cast<std::size_t>(r) * block, block); };
  if (block != 0 && slot(me).data() != mine.data()) std::copy(mine.begin(), mine.end(), slot(me).begin());
  const auto tag = static_cast<Tag>(detail::CollectiveTag::allgather);
  const int right = (me + 1) % n;
  const int left = (me - 1 + n) % n;
  for (int step = 0; step < n - 1; ++step) {
    const int send_block = (me - step + n) % n;
    const int recv_block = (me - step - 1 + n) % n;
    auto r = t.irecv(left, tag, slot(recv_block));
    auto s = t.isend(right, tag, std::span<const std::byte>(slot(send_block)));
    const auto got = t.wait(r);
    t.wait(s);
    POSEIDON_CHECK(got == block, "rank ", me, ": allgather block of rank ", recv_block, " from rank ", left, " has ",
                   got, " bytes, expected ", block);
  }
}

template <transport T, class E>
void allgather(T& t, std::span<const E> mine, std::span<E> all) {
  static_assert(std::is_trivially_copyable_v<E>, "allgather moves raw bytes: E must be trivially copyable");
  allgather(t, std::as_bytes(mine), std::as_writable_bytes(all));
}

/// Reduces every rank's `data` into `root`'s `data` as ((x0 op x1) op x2) ... in rank order,
/// whatever order the messages arrive in: the result is bit-identical from run to run.
/// Other ranks' `data` is left unchanged.
template <transport T, class E, class Op = std::plus<>>
void reduce(T& t, std::span<E> data, int root, Op op = {}) {
  static_assert(std::is_trivially_copyable_v<E>, "reduce moves raw bytes: E must be trivially copyable");
  const int n = t.size();
  const int me = t.rank();
  POSEIDON_CHECK(root >= 0 && root < n, "rank ", me, ": reduce root ", root, " outside the world of ", n);
  if (n == 1) return;
  const auto tag = static_cast<Tag>(detail::CollectiveTag::reduce);
  if (me != root) {
    auto s = t.isend(root, tag, std::span<const std::byte>(std::as_bytes(data)));
    t.wait(s);
    return;
  }
  std::vector<std::vector<E>> parts(static_cast<std::size_t>(n));
  std::vector<typename T::Request> reqs(static_cast<std::size_t>(n));
  for (int r = 0; r < n; ++r) {
    if (r == root) continue;
    auto& p = parts[static_cast<std::size_t>(r)];
    p.resize(data.size());
    reqs[static_cast<std::size_t>(r)] = t.irecv(r, tag, std::as_writable_bytes(std::span(p)));
  }
  std::vector<E> acc;
  for (int r = 0; r < n; ++r) {
    std::span<const E> x;
    if (r == root) {
      x = data;
    } else {
      const auto got = t.wait(reqs[static_cast<std::size_t>(r)]);
      POSEIDON_CHECK(got == data.size_bytes(), "rank ", me, ": reduce contribution of rank ", r, " has ", got,
                     " bytes, expected ", data.size_bytes());
      x = parts[static_cast<std::size_t>(r)];
    }
    if (r == 0) {
      acc.assign(x.begin(), x.end());
    } else {
      for (std::size_t i = 0; i < acc.size(); ++i) acc[i] = op(acc[i], x[i]);
    }
  }
  std::copy(acc.begin(), acc.end(), data.begin());
}

/// reduce to rank 0, then broadcast: every rank ends with the same bits.
template <transport T, class E, class Op = std::plus<>>
void allreduce(T& t, std::span<E> data, Op op = {}) {
  reduce(t, data, 0, op);
  broadcast(t, detail::writable_bytes(data), 0);
}

POSEIDON_NAMESPACE_END
