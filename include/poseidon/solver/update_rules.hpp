// Caffe's update rules as per-element functors that run on the host and on the device, and the
// one pass over memory (normalise, regularise, rule, w -= step) that applies one to a parameter.
#pragma once

#include <poseidon/core/config.hpp>
#include <poseidon/core/context.hpp>
#include <poseidon/core/device.hpp>
#include <poseidon/math/blas.hpp>

#include <cmath>
#include <cstddef>
#include <type_traits>

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

/// Caffe's Normalize (g / iter_size) and Regularize (L2: + decay w; L1: + decay sign(w)) for one
/// parameter, as the solver configures them.
template <class T>
struct UpdatePrologue {
  T inv_iter_size = T(1);
  bool normalize = false;
  T decay = T(0);
  bool l1 = false;
};

/// The whole update of element i: Normalize (Norm), Regularize (Decay: 0 none, 1 L2, 2 L1), the
/// rule, the step left in the diff (as Caffe leaves it), and w -= step; Two: the rule keeps
/// history set 1 too. The cases are template parameters so that the loop over the elements has
/// no branches, which the CPU needs to vectorise it.
template <class T, class Rule, bool Two, int Decay, bool Norm>
struct FusedUpdateOp {
  T* w;
  T* g;
  T* h0;
  T* h1;
  T inv_iter_size, decay;
  Rule rule;
  POSEIDON_HOST_DEVICE void operator()(std::size_t i) const {
    T gi = g[i];
    if constexpr (Norm) gi = gi * inv_iter_size;
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
};

/// Runs op(i) for every i in [0, n) on device D.
template <class D>
struct FusedUpdate;

template <>
struct FusedUpdate<CPU> {
  template <class Op>
  static void run(DeviceContext<CPU>&, std::size_t n, const Op& op) {
    // Each thread works on its own copy: through the caller's object the compiler reloads the
    // pointers for every element and does not vectorise (AlexNet's SGD update at 1 thread: 116 ms
    // against 40 ms).
    Op local = op;
#pragma omp parallel for schedule(static) firstprivate(local) if (n > math::detail::omp_min_elements)
    for (std::size_t i = 0; i < n; ++i) local(i);
  }
};

// apply_fused_update's last choice: normalised or not.
template <class D, class T, class Rule, bool Two, int Decay>
void fused_update_case(DeviceContext<D>& ctx, std::size_t n, T* w, T* g, T* h0, T* h1, const UpdatePrologue<T>& pre,
                       const Rule& rule) {
  using Normalised = FusedUpdateOp<T, Rule, Two, Decay, true>;
  using AsIs = FusedUpdateOp<T, Rule, Two, Decay, false>;
  if (pre.normalize)
    FusedUpdate<D>::run(ctx, n, Normalised{w, g, h0, h1, pre.inv_iter_size, pre.decay, rule});
  else
    FusedUpdate<D>::run(ctx, n, AsIs{w, g, h0, h1, pre.inv_iter_size, pre.decay, rule});
}

/// One fused pass of `rule` over a parameter of n elements (w its data, g its diff, h0 and h1 its
/// history entries; h1 null for one-history rules), on the context's device.
template <class D, class T, class Rule>
void apply_fused_update(DeviceContext<D>& ctx, std::size_t n, T* w, T* g, T* h0, T* h1, const UpdatePrologue<T>& pre,
                        const Rule& rule) {
  const int decay = pre.decay == T(0) ? 0 : pre.l1 ? 2 : 1;
  auto with = [&](auto two) {
    constexpr bool Two = decltype(two)::value;
    if (decay == 0)
      fused_update_case<D, T, Rule, Two, 0>(ctx, n, w, g, h0, h1, pre, rule);
    else if (decay == 1)
      fused_update_case<D, T, Rule, Two, 1>(ctx, n, w, g, h0, h1, pre, rule);
    else
      fused_update_case<D, T, Rule, Two, 2>(ctx, n, w, g, h0, h1, pre, rule);
  };
  if (h1)
    with(std::true_type{});
  else
    with(std::false_type{});
}

}  // namespace detail
POSEIDON_NAMESPACE_END

#if defined(__CUDACC__) && defined(POSEIDON_WITH_CUDA)
#include <poseidon/solver/cuda/update_rules.cuh>
#endif
