// Caffe's update rules as per-element functors that run on the host and on the device, and the
// one pass over memory (normalise, regularise, rule, w -= step) that applies one to a parameter.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/context.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/math/blas.hpp>

#include <cmath>
#include <cstddef>

POSEIDON_NAMESPACE_BEGIN
namespace detail {

// std::sqrt on the host; CUDA's overloads of ::sqrt for float and double on the device.
template <class T>
POSEIDON_HOST_DEVICE inline T update_sqrt(T x) {
#if defined(__CUDA_ARCH__)
  return ::sqrt(x);
#else
  return std::sqrt(x);
#endif
}

// Each rule maps the normalised, regularised gradient g and the element's history entries (h0,
// h1; updated in place) to the step to subtract, with the operations in the order of the solver's
// step-by-step compute_update_value (sgd.hpp), so that both paths round alike.

/// SGD: h = lr g + m h; step = h.
template <class T>
struct SgdRule {
  T rate, momentum;
  POSEIDON_HOST_DEVICE T operator()(T g, T& h, T&) const {
    h = rate * g + momentum * h;
    return h;
  }
};

/// Nesterov: h_new = lr g + m h; step = (1 + m) h_new - m h_old.
template <class T>
struct NesterovRule {
  T rate, momentum;
  POSEIDON_HOST_DEVICE T operator()(T g, T& h, T&) const {
    const T old = h;
    h = rate * g + momentum * h;
    return (T(1) + momentum) * h - momentum * old;
  }
};

/// AdaGrad: h += g^2; step = lr (g / (sqrt(h) + delta)).
template <class T>
struct AdaGradRule {
  T rate, delta;
  POSEIDON_HOST_DEVICE T operator()(T g, T& h, T&) const {
    h = g * g + h;
    return rate * (g / (update_sqrt(h) + delta));
  }
};

/// RMSProp: h = (1 - decay) g^2 + decay h; step = lr (g / (sqrt(h) + delta)).
template <class T>
struct RMSPropRule {
  T rate, decay, delta;
  POSEIDON_HOST_DEVICE T operator()(T g, T& h, T&) const {
    h = (T(1) - decay) * (g * g) + decay * h;
    return rate * (g / (update_sqrt(h) + delta));
  }
};

/// AdaDelta: hg = (1 - m) g^2 + m hg; dx = g sqrt((delta + hu) / (delta + hg));
/// hu = (1 - m) dx^2 + m hu; step = lr dx.
template <class T>
struct AdaDeltaRule {
  T rate, momentum, delta;
  POSEIDON_HOST_DEVICE T operator()(T g, T& hg, T& hu) const {
    hg = (T(1) - momentum) * (g * g) + momentum * hg;
    const T dx = g * update_sqrt((delta + hu) / (delta + hg));
    hu = (T(1) - momentum) * (dx * dx) + momentum * hu;
    return rate * dx;
  }
};

/// Adam: m = (1 - b1) g + b1 m; v = (1 - b2) g^2 + b2 v; step = (lr corr) (m / (sqrt(v) + eps)),
/// corr = sqrt(1 - b2^t) / (1 - b1^t) computed once per step by the solver.
template <class T>
struct AdamRule {
  T rate_corrected, beta1, beta2, delta;
  POSEIDON_HOST_DEVICE T operator()(T g, T& m, T& v) const {
    m = (T(1) - beta1) * g + beta1 * m;
    v = (T(1) - beta2) * (g * g) + beta2 * v;
    return rate_corrected * (m / (update_sqrt(v) + delta));
  }
};

/// Caffe's Normalize (g / iter_size) and Regularize (L2: + decay w; L1: + decay sign(w)).
template <class T>
struct UpdatePrologue {
  T inv_iter_size = T(1);
  bool normalize = false;
  T decay = T(0);
  bool l1 = false;
  POSEIDON_HOST_DEVICE T operator()(T g, T w) const {
    if (normalize) g = g * inv_iter_size;
    if (decay != T(0)) {
      const T r = l1 ? static_cast<T>((T(0) < w) - (w < T(0))) : w;
      g = decay * r + g;
    }
    return g;
  }
};

/// The whole update of element i: prologue, rule, the step left in the diff (as Caffe leaves
/// it), and w -= step. h1 is null for one-history rules.
template <class T, class Rule>
struct FusedUpdateOp {
  T* w;
  T* g;
  T* h0;
  T* h1;
  UpdatePrologue<T> pre;
  Rule rule;
  POSEIDON_HOST_DEVICE void operator()(std::size_t i) const {
    T a = h0[i];
    T b = h1 ? h1[i] : T(0);
    const T step = rule(pre(g[i], w[i]), a, b);
    h0[i] = a;
    if (h1) h1[i] = b;
    g[i] = step;
    w[i] = w[i] - step;
  }
};

/// Runs a FusedUpdateOp over n elements on device D.
template <class D, class T>
struct FusedUpdate;

// On the CPU the loop is instantiated per case (one or two histories, no / L2 / L1 decay,
// normalised or not) over local pointers, so that it has no per-element branches and the compiler
// can vectorise it; through the op's members it ran 3x slower (AlexNet's SGD update: 116 ms
// against 36 ms at 1 thread).
template <class T>
struct FusedUpdate<CPU, T> {
  template <class Rule>
  static void run(DeviceContext<CPU>&, std::size_t n, const FusedUpdateOp<T, Rule>& op) {
    const UpdatePrologue<T>& pre = op.pre;
    const int decay = pre.decay == T(0) ? 0 : pre.l1 ? 2 : 1;
    if (op.h1)
      dispatch<true>(n, op, decay);
    else
      dispatch<false>(n, op, decay);
  }

 private:
  template <bool Two, class Rule>
  static void dispatch(std::size_t n, const FusedUpdateOp<T, Rule>& op, int decay) {
    const bool norm = op.pre.normalize;
    if (decay == 0) norm ? loop<Two, 0, true>(n, op) : loop<Two, 0, false>(n, op);
    else if (decay == 1) norm ? loop<Two, 1, true>(n, op) : loop<Two, 1, false>(n, op);
    else norm ? loop<Two, 2, true>(n, op) : loop<Two, 2, false>(n, op);
  }

  // Decay: 0 none, 1 L2, 2 L1; the arithmetic is UpdatePrologue's and FusedUpdateOp's.
  template <bool Two, int Decay, bool Norm, class Rule>
  static void loop(std::size_t n, const FusedUpdateOp<T, Rule>& op) {
    T* w = op.w;
    T* g = op.g;
    T* h0 = op.h0;
    T* h1 = op.h1;
    const T inv = op.pre.inv_iter_size, decay = op.pre.decay;
    const Rule rule = op.rule;
#pragma omp parallel for schedule(static) if (n > math::detail::omp_min_elements)
    for (std::size_t i = 0; i < n; ++i) {
      T gi = g[i];
      if constexpr (Norm) gi = gi * inv;
      if constexpr (Decay == 1) gi = decay * w[i] + gi;
      if constexpr (Decay == 2) gi = decay * static_cast<T>((T(0) < w[i]) - (w[i] < T(0))) + gi;
      T a = h0[i];
      T b = T(0);
      if constexpr (Two) b = h1[i];
      const T step = rule(gi, a, b);
      h0[i] = a;
      if constexpr (Two) h1[i] = b;
      g[i] = step;
      w[i] = w[i] - step;
    }
  }
};

}  // namespace detail
POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/solver/cuda/update_rules.cuh>
#endif
