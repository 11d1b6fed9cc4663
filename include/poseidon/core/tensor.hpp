// Tensor<D, T>: Caffe's Blob on device D — a shape plus two same-sized arrays, data and diff,
// in device memory that can be shared between tensors (views, in-place layers).
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/memory.hpp>
#include <poseidon/core/shape.hpp>

#include <cstddef>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

POSEIDON_NAMESPACE_BEGIN

template <class D, class T = float>
class Tensor {
  static_assert(std::is_arithmetic_v<T>, "Tensor<D, T>: T must be an arithmetic type");

 public:
  using device_type = D;
  using value_type = T;

  Tensor() = default;
  explicit Tensor(const Shape& shape) { reshape(shape); }
  Tensor(std::initializer_list<int> dims) { reshape(Shape(dims)); }

  // Copying a Tensor shares its memory (Caffe passes Blob pointers; a copy that silently
  // duplicated device memory would hide large allocations). Use clone() for a deep copy.
  Tensor(const Tensor&) = default;
  Tensor& operator=(const Tensor&) = default;
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;

  /// Changes the shape. Memory is reallocated (and zeroed) only when the new count exceeds
  /// the capacity; otherwise the existing contents stay (Caffe's Blob::Reshape).
  void reshape(const Shape& shape) {
    shape_ = shape;
    count_ = shape.count();
    if (count_ > capacity_) {
      capacity_ = count_;
      data_ = std::make_shared<Buffer<D>>(capacity_ * sizeof(T));
      diff_ = std::make_shared<Buffer<D>>(capacity_ * sizeof(T));
      data_->zero();
      diff_->zero();
    }
  }
  void reshape(std::initializer_list<int> dims) { reshape(Shape(dims)); }
  template <class D2, class T2>
  void reshape_like(const Tensor<D2, T2>& other) {
    reshape(other.shape());
  }

  [[nodiscard]] const Shape& shape() const { return shape_; }
  [[nodiscard]] int shape(int axis) const { return shape_[axis]; }
  [[nodiscard]] int num_axes() const { return shape_.num_axes(); }
  [[nodiscard]] std::size_t count() const { return count_; }
  [[nodiscard]] std::size_t count(int start, int end) const { return shape_.count(start, end); }
  [[nodiscard]] std::size_t count(int start) const { return shape_.count(start); }
  [[nodiscard]] std::size_t capacity() const { return capacity_; }
  [[nodiscard]] int canonical_axis(int axis) const { return shape_.canonical_axis(axis); }
  [[nodiscard]] std::string shape_string() const { return shape_.str() + " (" + std::to_string(count_) + ")"; }

  // Caffe's legacy 4-d accessors: missing trailing axes read as 1.
  [[nodiscard]] int num() const { return legacy_shape(0); }
  [[nodiscard]] int channels() const { return legacy_shape(1); }
  [[nodiscard]] int height() const { return legacy_shape(2); }
  [[nodiscard]] int width() const { return legacy_shape(3); }

  /// Flat index of (n, c, h, w) in an up-to-4-d tensor (row-major).
  [[nodiscard]] std::size_t offset(int n, int c = 0, int h = 0, int w = 0) const {
    return ((static_cast<std::size_t>(n) * static_cast<std::size_t>(channels()) + static_cast<std::size_t>(c)) *
                static_cast<std::size_t>(height()) +
            static_cast<std::size_t>(h)) *
               static_cast<std::size_t>(width()) +
           static_cast<std::size_t>(w);
  }
  /// Flat index of a prefix of indices (remaining axes taken as 0).
  [[nodiscard]] std::size_t offset(const std::vector<int>& index) const {
    POSEIDON_CHECK(static_cast<int>(index.size()) <= num_axes(), "Tensor::offset: ", index.size(),
                   " indices for shape ", shape_.str());
    std::size_t off = 0;
    for (int i = 0; i < num_axes(); ++i) {
      off *= static_cast<std::size_t>(shape_[i]);
      if (static_cast<std::size_t>(i) < index.size()) off += static_cast<std::size_t>(index[static_cast<std::size_t>(i)]);
    }
    return off;
  }

  /// Device pointers (host pointers for CPU). Null for an empty tensor.
  [[nodiscard]] T* data() { return ptr(data_); }
  [[nodiscard]] const T* data() const { return ptr(data_); }
  [[nodiscard]] T* diff() { return ptr(diff_); }
  [[nodiscard]] const T* diff() const { return ptr(diff_); }

  /// Spans over host memory; CPU tensors only (a CUDA span would invite host dereferences).
  [[nodiscard]] std::span<T> data_span()
    requires is_cpu_v<D>
  {
    return {data(), count_};
  }
  [[nodiscard]] std::span<const T> data_span() const
    requires is_cpu_v<D>
  {
    return {data(), count_};
  }
  [[nodiscard]] std::span<T> diff_span()
    requires is_cpu_v<D>
  {
    return {diff(), count_};
  }
  [[nodiscard]] std::span<const T> diff_span() const
    requires is_cpu_v<D>
  {
    return {diff(), count_};
  }

  /// Makes this tensor use other's data (or diff) memory; the counts must match.
  void share_data(const Tensor& other) {
    POSEIDON_CHECK(count_ == other.count_, "Tensor::share_data: count ", count_, " vs ", other.count_);
    data_ = other.data_;
    capacity_ = std::min(capacity_, other.capacity_);
  }
  void share_diff(const Tensor& other) {
    POSEIDON_CHECK(count_ == other.count_, "Tensor::share_diff: count ", count_, " vs ", other.count_);
    diff_ = other.diff_;
    capacity_ = std::min(capacity_, other.capacity_);
  }
  [[nodiscard]] bool shares_data_with(const Tensor& other) const { return data_ && data_ == other.data_; }

  /// A tensor of another shape (same count) over the same data and diff memory.
  [[nodiscard]] Tensor view(const Shape& shape) const {
    POSEIDON_CHECK(shape.count() == count_, "Tensor::view: shape ", shape.str(), " has ", shape.count(),
                   " elements, tensor has ", count_);
    Tensor t(*this);
    t.shape_ = shape;
    return t;
  }

  /// A deep copy on the same device.
  [[nodiscard]] Tensor clone() const {
    Tensor t(shape_);
    copy_bytes<D, D>(t.data(), data(), count_ * sizeof(T));
    copy_bytes<D, D>(t.diff(), diff(), count_ * sizeof(T));
    return t;
  }

  // ---- explicit transfers (work on every device) ----------------------------
  /// Copies host values into data; size must equal count().
  void copy_data_from_host(std::span<const T> host) {
    POSEIDON_CHECK(host.size() == count_, "Tensor::copy_data_from_host: ", host.size(),
                   " values for a tensor of shape ", shape_string());
    copy_bytes<D, CPU>(data(), host.data(), count_ * sizeof(T));
  }
  void copy_diff_from_host(std::span<const T> host) {
    POSEIDON_CHECK(host.size() == count_, "Tensor::copy_diff_from_host: ", host.size(),
                   " values for a tensor of shape ", shape_string());
    copy_bytes<D, CPU>(diff(), host.data(), count_ * sizeof(T));
  }
  [[nodiscard]] std::vector<T> data_to_host() const {
    std::vector<T> v(count_);
    copy_bytes<CPU, D>(v.data(), data(), count_ * sizeof(T));
    return v;
  }
  [[nodiscard]] std::vector<T> diff_to_host() const {
    std::vector<T> v(count_);
    copy_bytes<CPU, D>(v.data(), diff(), count_ * sizeof(T));
    return v;
  }
  /// Copies data (and diff when with_diff) from a tensor on any device; reshapes to match.
  template <class D2>
  void copy_from(const Tensor<D2, T>& src, bool with_diff = false) {
    reshape(src.shape());
    copy_bytes<D, D2>(data(), src.data(), count_ * sizeof(T));
    if (with_diff) copy_bytes<D, D2>(diff(), src.diff(), count_ * sizeof(T));
  }

  void zero_data() { zero(data_); }
  void zero_diff() { zero(diff_); }

 private:
  T* ptr(const std::shared_ptr<Buffer<D>>& b) const { return b ? static_cast<T*>(b->get()) : nullptr; }
  void zero(const std::shared_ptr<Buffer<D>>& b) {
    if (b && count_) Allocator<D>::zero(b->get(), count_ * sizeof(T));
  }
  [[nodiscard]] int legacy_shape(int axis) const {
    POSEIDON_CHECK(num_axes() <= 4, "legacy 4-d accessor on a ", num_axes(), "-d tensor ", shape_.str());
    return axis < num_axes() ? shape_[axis] : 1;
  }

  Shape shape_;
  std::size_t count_ = 0;
  std::size_t capacity_ = 0;
  std::shared_ptr<Buffer<D>> data_;
  std::shared_ptr<Buffer<D>> diff_;
};

POSEIDON_NAMESPACE_END
