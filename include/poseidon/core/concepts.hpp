// The concepts that name Poseidon's roles (layer, transport, gradient_codec, sync_policy).
// Each says what a user-written type must provide; policies are plain structs.
#pragma once

#include <poseidon/core/config.hpp>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

// --- device -----------------------------------------------------------------
// requires: an empty tag type with static constexpr `name` and `is_gpu`.
// ensures: tensors, math and layers can be specialised on it.
template <class D>
concept device = std::is_empty_v<D> && requires {
  { D::name } -> std::convertible_to<std::string_view>;
  { D::is_gpu } -> std::convertible_to<bool>;
};

// --- layer ------------------------------------------------------------------
template <class D>
class DeviceContext;
template <class D, class T>
class Tensor;

// requires: device_type and value_type; Caffe's type string; setup, reshape, forward returning
// the weighted loss and backward, over vectors of tensor pointers on the layer's device; the
// learnable tensors. Every Layer<D, T> subclass models it (layers/layer.hpp).
// ensures: nets, solvers and the gradient checker can drive the type.
template <class L>
concept layer = requires(L& l, const L& cl, DeviceContext<typename L::device_type>& ctx,
                         const std::vector<Tensor<typename L::device_type, typename L::value_type>*>& tensors,
                         const std::vector<bool>& propagate_down) {
  typename L::device_type;
  typename L::value_type;
  { cl.type() } -> std::convertible_to<std::string_view>;
  l.setup(ctx, tensors, tensors);
  l.reshape(tensors, tensors);
  { l.forward(ctx, tensors, tensors) } -> std::convertible_to<typename L::value_type>;
  l.backward(ctx, tensors, propagate_down, tensors);
  l.blobs();
};

// --- transport (owned by comm/) ------------------------------------------------
// requires: rank() in [0, size()); isend(peer, tag, bytes) / irecv(peer, tag, bytes) start a
//   tagged transfer and return a movable Request (the bytes must stay alive until it completes);
//   test(req) never blocks; wait(req) and wait(req, timeout) block until done and return the
//   byte count, and throw poseidon::Error naming this rank, the peer and the tag (or the
//   collective) on failure, on a dead peer, or when the deadline passes.
// ensures: messages from one sender to one receiver with one tag are matched in send order;
//   a receive into a buffer smaller than the message fails rather than truncating silently.
template <class T>
concept transport = std::movable<typename T::Request> &&
    requires(T& t, const T& ct, typename T::Request& req, int peer, std::uint64_t tag,
             std::span<const std::byte> out, std::span<std::byte> in, std::chrono::milliseconds timeout) {
  { ct.rank() } -> std::convertible_to<int>;
  { ct.size() } -> std::convertible_to<int>;
  { t.isend(peer, tag, out) } -> std::same_as<typename T::Request>;
  { t.irecv(peer, tag, in) } -> std::same_as<typename T::Request>;
  { t.test(req) } -> std::same_as<bool>;
  { t.wait(req) } -> std::same_as<std::size_t>;
  { t.wait(req, timeout) } -> std::same_as<std::size_t>;
};
// --- end transport -------------------------------------------------------------

POSEIDON_NAMESPACE_END
