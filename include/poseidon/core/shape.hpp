// Shape: the dimensions of a tensor (N-d; N,C,H,W by convention for images), with Caffe's
// axis rules (negative axes count from the end) and overflow-checked element counts.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/error.hpp>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

class Shape {
 public:
  /// Caffe's limit; keeps every index computation in int range on both devices.
  static constexpr int max_axes = 32;

  Shape() = default;
  Shape(std::initializer_list<int> dims) : dims_(dims) { validate(); }
  explicit Shape(std::vector<int> dims) : dims_(std::move(dims)) { validate(); }

  [[nodiscard]] int num_axes() const { return static_cast<int>(dims_.size()); }
  [[nodiscard]] const std::vector<int>& dims() const { return dims_; }
  [[nodiscard]] int operator[](int axis) const { return dims_[static_cast<std::size_t>(canonical_axis(axis))]; }

  /// Product of all dimensions (1 for a scalar shape with no axes).
  [[nodiscard]] std::size_t count() const { return count(0, num_axes()); }
  /// Product of dimensions [start, end).
  [[nodiscard]] std::size_t count(int start, int end) const {
    POSEIDON_CHECK(0 <= start && start <= end && end <= num_axes(), "Shape::count(", start, ", ", end,
                   ") out of range for shape ", str());
    std::size_t n = 1;
    for (int i = start; i < end; ++i) n *= static_cast<std::size_t>(dims_[static_cast<std::size_t>(i)]);
    return n;
  }
  [[nodiscard]] std::size_t count(int start) const { return count(start, num_axes()); }

  /// Maps a possibly negative axis to [0, num_axes); throws when out of range.
  [[nodiscard]] int canonical_axis(int axis) const {
    POSEIDON_CHECK(axis >= -num_axes() && axis < num_axes(), "axis ", axis, " out of range for shape ",
                   str(), " (", num_axes(), " axes)");
    return axis < 0 ? axis + num_axes() : axis;
  }

  [[nodiscard]] std::string str() const {
    std::string s = "(";
    for (std::size_t i = 0; i < dims_.size(); ++i) {
      if (i) s += ',';
      s += std::to_string(dims_[i]);
    }
    s += ')';
    return s;
  }

  friend bool operator==(const Shape&, const Shape&) = default;

 private:
  void validate() const {
    POSEIDON_CHECK(num_axes() <= max_axes, "shape has ", num_axes(), " axes; at most ", max_axes);
    std::size_t n = 1;
    for (int d : dims_) {
      POSEIDON_CHECK(d >= 0, "shape ", str(), " has a negative dimension");
      if (d && n > static_cast<std::size_t>(std::numeric_limits<int>::max()) / static_cast<std::size_t>(d))
        detail::raise("shape ", str(), " has more than INT_MAX elements");
      n *= static_cast<std::size_t>(d);
    }
  }
  std::vector<int> dims_;
};

POSEIDON_NAMESPACE_END
