// Plain loops the compiler vectorizes for the target's baseline ISA (-O3),
// shared by the CPU kernels. Arithmetic is done in opmath (float for Half and
// BFloat16), rounding once on store.
#pragma once

#include <ATen/OpMathType.h>

#include <algorithm>
#include <cstdint>

namespace afnet_kernels {
namespace cpu {

// ReLU that keeps NaN (as torch.relu does): std::max returns its first
// argument when the comparison is false.
template <bool kRelu, typename T>
inline T finish(T v) {
  if constexpr (kRelu) {
    return std::max(v, T(0));
  } else {
    return v;
  }
}

// out[i] = finish(a[i] + b[i]).
template <bool kRelu, typename scalar_t>
inline void add_into(scalar_t* __restrict out, const scalar_t* __restrict a,
                     const scalar_t* __restrict b, int64_t n) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<scalar_t>(finish<kRelu>(opmath_t(a[i]) + opmath_t(b[i])));
  }
}

// out[i] = finish(a[i] + s).
template <bool kRelu, typename scalar_t>
inline void add_scalar_into(scalar_t* __restrict out, const scalar_t* __restrict a,
                            at::opmath_type<scalar_t> s, int64_t n) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<scalar_t>(finish<kRelu>(opmath_t(a[i]) + s));
  }
}

// out[i] += a[i] (in opmath, rounded once per add): gradients summed into one buffer.
template <typename scalar_t>
inline void accumulate_into(scalar_t* __restrict out, const scalar_t* __restrict a, int64_t n) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<scalar_t>(opmath_t(out[i]) + opmath_t(a[i]));
}

// out[i] = finish(a[i]).
template <bool kRelu, typename scalar_t>
inline void copy_into(scalar_t* __restrict out, const scalar_t* __restrict a, int64_t n) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<scalar_t>(finish<kRelu>(opmath_t(a[i])));
}

// Sum of a[0..n) in opmath with kLanes independent partial sums (so the loop
// is not bound by the latency of one chain of adds and vectorizes), folded
// into `acc_t` (double for float) every kBlock elements to keep precision.
template <typename acc_t, typename scalar_t>
inline acc_t sum_of(const scalar_t* __restrict a, int64_t n) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int64_t kLanes = 16, kBlock = 512;
  acc_t total = 0;
  for (int64_t i = 0; i < n;) {
    const int64_t stop = std::min(n, i + kBlock);
    opmath_t lanes[kLanes] = {};
    for (; i + kLanes <= stop; i += kLanes) {
      for (int64_t l = 0; l < kLanes; ++l) lanes[l] += opmath_t(a[i + l]);
    }
    for (int64_t l = 0; i < stop; ++i, ++l) lanes[l] += opmath_t(a[i]);
    // Pairwise fold: a short dependency chain, unlike 16 sequential adds.
    for (int64_t width = kLanes / 2; width > 0; width /= 2) {
      for (int64_t l = 0; l < width; ++l) lanes[l] += lanes[l + width];
    }
    total += acc_t(lanes[0]);
  }
  return total;
}

}  // namespace cpu
}  // namespace afnet_kernels
