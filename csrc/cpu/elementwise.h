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

// out[i] = finish(a[i]).
template <bool kRelu, typename scalar_t>
inline void copy_into(scalar_t* __restrict out, const scalar_t* __restrict a, int64_t n) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<scalar_t>(finish<kRelu>(opmath_t(a[i])));
}

// Sum of a[0..n) in opmath, in blocks whose partial sums go to `acc_t` (double
// for float), so long reductions keep their precision while the inner loop
// vectorizes.
template <typename acc_t, typename scalar_t>
inline acc_t sum_of(const scalar_t* __restrict a, int64_t n) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int64_t kBlock = 256;
  acc_t total = 0;
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t stop = std::min(n, start + kBlock);
    opmath_t part = 0;
#pragma omp simd reduction(+ : part)
    for (int64_t i = start; i < stop; ++i) part += opmath_t(a[i]);
    total += acc_t(part);
  }
  return total;
}

}  // namespace cpu
}  // namespace afnet_kernels
