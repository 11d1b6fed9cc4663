// BatchStaging<D, T>: the host memory a data layer assembles a batch in, and the copy of that
// batch into a top blob. On CUDA (data/cuda/staging.cuh) it is pinned and copied asynchronously.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/context.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/core/error.hpp>
#include <poseidon/core/tensor.hpp>

#include <cstddef>
#include <span>
#include <vector>

POSEIDON_NAMESPACE_BEGIN
namespace detail {

/// Use: `auto h = staging.host(n);` write n values, then `staging.upload(top, ctx)`; or hand
/// ready values to `staging.upload(values, top, ctx)`.
/// host() may wait for the previous upload to have read the memory; the span it returns is
/// valid until the next host() call.
template <class D, class T>
class BatchStaging {
  POSEIDON_NO_KERNEL(D, "BatchStaging");
};

template <class T>
class BatchStaging<CPU, T> {
 public:
  [[nodiscard]] std::span<T> host(std::size_t n) {
    values_.resize(n);
    return values_;
  }
  /// Copies the first dst.count() staged values into dst's data.
  void upload(Tensor<CPU, T>& dst, DeviceContext<CPU>&) {
    POSEIDON_CHECK(dst.count() <= values_.size(), "BatchStaging::upload: ", values_.size(),
                   " values staged for a blob of shape ", dst.shape_string());
    dst.copy_data_from_host(std::span<const T>(values_).first(dst.count()));
  }
  /// Copies `values` (dst.count() of them, from any host memory) into dst's data.
  void upload(std::span<const T> values, Tensor<CPU, T>& dst, DeviceContext<CPU>&) { dst.copy_data_from_host(values); }

 private:
  std::vector<T> values_;
};

}  // namespace detail
POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/data/cuda/staging.cuh>
#endif
