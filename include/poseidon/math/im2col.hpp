// im2col / col2im for 2-d convolution with padding, stride and dilation (Caffe's layout:
// the column buffer is (C * KH * KW) x (OH * OW), so convolution becomes one GEMM per group).
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/context.hpp>
#include <poseidon/core/error.hpp>

#include <cstddef>
#include <algorithm>
#include <cstring>

POSEIDON_NAMESPACE_BEGIN
namespace math {

/// The geometry of one 2-d convolution window sweep.
struct ConvGeometry {
  int channels = 0, height = 0, width = 0;
  int kernel_h = 1, kernel_w = 1;
  int pad_h = 0, pad_w = 0;
  int stride_h = 1, stride_w = 1;
  int dilation_h = 1, dilation_w = 1;

  [[nodiscard]] int out_h() const { return (height + 2 * pad_h - (dilation_h * (kernel_h - 1) + 1)) / stride_h + 1; }
  [[nodiscard]] int out_w() const { return (width + 2 * pad_w - (dilation_w * (kernel_w - 1) + 1)) / stride_w + 1; }
  [[nodiscard]] std::size_t col_rows() const {
    return static_cast<std::size_t>(channels) * static_cast<std::size_t>(kernel_h) * static_cast<std::size_t>(kernel_w);
  }
  [[nodiscard]] std::size_t col_cols() const {
    return static_cast<std::size_t>(out_h()) * static_cast<std::size_t>(out_w());
  }
};

namespace detail {
// Valid output columns [lo, hi) for kernel offset k: those whose input index
// o*stride - pad + k*dilation lies in [0, size). Computed once per row instead of per element.
inline void valid_range(int out, int size, int pad, int stride, int koff, int& lo, int& hi) {
  const int base = koff - pad;  // input index at o = 0
  lo = base >= 0 ? 0 : (-base + stride - 1) / stride;
  hi = (size - base + stride - 1) / stride;
  if (size - base <= 0) hi = 0;
  if (hi > out) hi = out;
  if (lo > hi) lo = hi;
}
}  // namespace detail

/// data (C x H x W) -> col (C*KH*KW x OH*OW)
template <class T>
void im2col(DeviceContext<CPU>&, const ConvGeometry& g, const T* data, T* col) {
  const int oh = g.out_h(), ow = g.out_w();
  const std::size_t plane = static_cast<std::size_t>(oh) * static_cast<std::size_t>(ow);
#pragma omp parallel for if (g.col_rows() * plane > (1u << 16))
  for (int c = 0; c < g.channels; ++c) {
    const T* img = data + static_cast<std::size_t>(c) * static_cast<std::size_t>(g.height) * static_cast<std::size_t>(g.width);
    for (int kh = 0; kh < g.kernel_h; ++kh) {
      int ylo, yhi;
      detail::valid_range(oh, g.height, g.pad_h, g.stride_h, kh * g.dilation_h, ylo, yhi);
      for (int kw = 0; kw < g.kernel_w; ++kw) {
        int xlo, xhi;
        detail::valid_range(ow, g.width, g.pad_w, g.stride_w, kw * g.dilation_w, xlo, xhi);
        T* out = col + ((static_cast<std::size_t>(c) * static_cast<std::size_t>(g.kernel_h) + static_cast<std::size_t>(kh)) *
                            static_cast<std::size_t>(g.kernel_w) + static_cast<std::size_t>(kw)) * plane;
        for (int y = 0; y < oh; ++y) {
          T* row = out + static_cast<std::size_t>(y) * static_cast<std::size_t>(ow);
          if (y < ylo || y >= yhi) {
            std::memset(row, 0, static_cast<std::size_t>(ow) * sizeof(T));
            continue;
          }
          const int iy = y * g.stride_h - g.pad_h + kh * g.dilation_h;
          const T* src = img + static_cast<std::size_t>(iy) * static_cast<std::size_t>(g.width);
          for (int x = 0; x < xlo; ++x) row[x] = T(0);
          const int ix0 = kw * g.dilation_w - g.pad_w;
          if (g.stride_w == 1) {
            if (xhi > xlo) std::memcpy(row + xlo, src + xlo + ix0, static_cast<std::size_t>(xhi - xlo) * sizeof(T));
          } else {
            for (int x = xlo; x < xhi; ++x) row[x] = src[x * g.stride_w + ix0];
          }
          for (int x = std::max(xhi, xlo); x < ow; ++x) row[x] = T(0);
        }
      }
    }
  }
}

/// col (C*KH*KW x OH*OW) -> data (C x H x W), accumulating overlaps; data is overwritten.
template <class T>
void col2im(DeviceContext<CPU>&, const ConvGeometry& g, const T* col, T* data) {
  const int oh = g.out_h(), ow = g.out_w();
  const std::size_t plane = static_cast<std::size_t>(oh) * static_cast<std::size_t>(ow);
  const std::size_t img_size = static_cast<std::size_t>(g.height) * static_cast<std::size_t>(g.width);
  // Channels are independent, so the parallel loop has no write conflicts.
#pragma omp parallel for if (g.col_rows() * plane > (1u << 16))
  for (int c = 0; c < g.channels; ++c) {
    T* img = data + static_cast<std::size_t>(c) * img_size;
    std::memset(img, 0, img_size * sizeof(T));
    for (int kh = 0; kh < g.kernel_h; ++kh) {
      int ylo, yhi;
      detail::valid_range(oh, g.height, g.pad_h, g.stride_h, kh * g.dilation_h, ylo, yhi);
      for (int kw = 0; kw < g.kernel_w; ++kw) {
        int xlo, xhi;
        detail::valid_range(ow, g.width, g.pad_w, g.stride_w, kw * g.dilation_w, xlo, xhi);
        const T* in = col + ((static_cast<std::size_t>(c) * static_cast<std::size_t>(g.kernel_h) + static_cast<std::size_t>(kh)) *
                                 static_cast<std::size_t>(g.kernel_w) + static_cast<std::size_t>(kw)) * plane;
        const int ix0 = kw * g.dilation_w - g.pad_w;
        for (int y = ylo; y < yhi; ++y) {
          const int iy = y * g.stride_h - g.pad_h + kh * g.dilation_h;
          T* dst = img + static_cast<std::size_t>(iy) * static_cast<std::size_t>(g.width);
          const T* row = in + static_cast<std::size_t>(y) * static_cast<std::size_t>(ow);
          for (int x = xlo; x < xhi; ++x) dst[x * g.stride_w + ix0] += row[x];
        }
      }
    }
  }
}

}  // namespace math
POSEIDON_NAMESPACE_END
