// The concepts that name Poseidon's roles (layer, transport, gradient_codec, sync_policy).
// Each says what a user-written type must provide; policies are plain structs.
#pragma once

#include <poseidon/core/config.hpp>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <span>
#include <string_view>
#include <type_traits>

POSEIDON_NAMESPACE_BEGIN

// --- device -----------------------------------------------------------------
// requires: an empty tag type with static constexpr `name` and `is_gpu`.
// ensures: tensors, math and layers can be specialised on it.
template <class D>
concept device = std::is_empty_v<D> && requires {
  { D::name } -> std::convertible_to<std::string_view>;
  { D::is_gpu } -> std::convertible_to<bool>;
};

// --- transport (owned by comm/) ------------------------------------------------
// --- end transport -------------------------------------------------------------

POSEIDON_NAMESPACE_END
