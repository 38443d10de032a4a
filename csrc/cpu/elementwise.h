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

// Aliasing contract of the helpers below: `out` may be `a` itself (an
// in-place update, e.g. scatter_frames_ writing into base), and otherwise no
// two of the ranges overlap. Each helper runs one of two loops in which every
// pointer is __restrict and none aliases another, so both vectorize without
// runtime overlap checks: the in-place loop reads and writes through one
// pointer, the other reads `a` and writes `out`. (Declaring `out` and `a`
// __restrict while they are the same pointer would be undefined behaviour.)
namespace loops {

template <bool kRelu, typename scalar_t>
inline void add_distinct(scalar_t* __restrict out, const scalar_t* __restrict a,
                         const scalar_t* __restrict b, int64_t n) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<scalar_t>(finish<kRelu>(opmath_t(a[i]) + opmath_t(b[i])));
  }
}

template <bool kRelu, typename scalar_t>
inline void add_in_place(scalar_t* __restrict io, const scalar_t* __restrict b, int64_t n) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t i = 0; i < n; ++i) {
    io[i] = static_cast<scalar_t>(finish<kRelu>(opmath_t(io[i]) + opmath_t(b[i])));
  }
}

template <bool kRelu, typename scalar_t>
inline void add_scalar_distinct(scalar_t* __restrict out, const scalar_t* __restrict a,
                                at::opmath_type<scalar_t> s, int64_t n) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<scalar_t>(finish<kRelu>(opmath_t(a[i]) + s));
  }
}

template <bool kRelu, typename scalar_t>
inline void add_scalar_in_place(scalar_t* __restrict io, at::opmath_type<scalar_t> s, int64_t n) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t i = 0; i < n; ++i) io[i] = static_cast<scalar_t>(finish<kRelu>(opmath_t(io[i]) + s));
}

template <bool kRelu, typename scalar_t>
inline void copy_distinct(scalar_t* __restrict out, const scalar_t* __restrict a, int64_t n) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<scalar_t>(finish<kRelu>(opmath_t(a[i])));
}

template <typename scalar_t>
inline void relu_in_place(scalar_t* __restrict io, int64_t n) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t i = 0; i < n; ++i) io[i] = static_cast<scalar_t>(finish<true>(opmath_t(io[i])));
}

}  // namespace loops

// out[i] = finish(a[i] + b[i]); out may be a (see the aliasing contract above).
template <bool kRelu, typename scalar_t>
inline void add_into(scalar_t* out, const scalar_t* a, const scalar_t* b, int64_t n) {
  if (out == a) {
    loops::add_in_place<kRelu>(out, b, n);
  } else {
    loops::add_distinct<kRelu>(out, a, b, n);
  }
}

// out[i] = finish(a[i] + s); out may be a.
template <bool kRelu, typename scalar_t>
inline void add_scalar_into(scalar_t* out, const scalar_t* a, at::opmath_type<scalar_t> s,
                            int64_t n) {
  if (out == a) {
    loops::add_scalar_in_place<kRelu>(out, s, n);
  } else {
    loops::add_scalar_distinct<kRelu>(out, a, s, n);
  }
}

// out[i] = finish(a[i]); out may be a (then only a ReLU has anything to do).
template <bool kRelu, typename scalar_t>
inline void copy_into(scalar_t* out, const scalar_t* a, int64_t n) {
  if (out != a) {
    loops::copy_distinct<kRelu>(out, a, n);
  } else if constexpr (kRelu) {
    loops::relu_in_place(out, n);
  }
}

// out[i] += a[i] (in opmath, rounded once per add): gradients summed into one buffer.
// out and a never overlap.
template <typename scalar_t>
inline void accumulate_into(scalar_t* __restrict out, const scalar_t* __restrict a, int64_t n) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<scalar_t>(opmath_t(out[i]) + opmath_t(a[i]));
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
