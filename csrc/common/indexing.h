// Index arithmetic shared by the CPU and CUDA kernels. Both backends call these
// functions, so the CPU tests exercise the exact logic the GPU runs.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define AFNET_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define AFNET_HOST_DEVICE inline
#endif

namespace afnet_kernels {

// Row of x that feeds channel c of output row `row` under the TSM shift, or -1
// for a zero (clip edge). fold = C / shift_div; fold == 0 means no shift.
// Channels [0, fold) read frame t+1, [fold, 2*fold) read frame t-1.
AFNET_HOST_DEVICE int64_t shifted_source_row(int64_t row, int64_t c, int64_t fold,
                                             int64_t num_segments) {
  if (c < fold) {
    const int64_t t = row % num_segments;
    return t + 1 < num_segments ? row + 1 : -1;
  }
  if (c < 2 * fold) {
    const int64_t t = row % num_segments;
    return t > 0 ? row - 1 : -1;
  }
  return row;
}

// Inverse of shifted_source_row: the output row that reads source row `row` at
// channel c, or -1 if none does. Used by the backward scatter-add.
AFNET_HOST_DEVICE int64_t shifted_target_row(int64_t row, int64_t c, int64_t fold,
                                             int64_t num_segments) {
  if (c < fold) {
    const int64_t t = row % num_segments;
    return t > 0 ? row - 1 : -1;
  }
  if (c < 2 * fold) {
    const int64_t t = row % num_segments;
    return t + 1 < num_segments ? row + 1 : -1;
  }
  return row;
}

// Source index of nearest-neighbour upsampling along one axis, bit-exact with
// F.interpolate(mode="nearest", size=...) on CPU and CUDA: PyTorch computes the
// scale in float and floors, with shortcuts for the identity and factor 2.
AFNET_HOST_DEVICE int64_t nearest_source_index(int64_t dst, int64_t in_size, int64_t out_size) {
  if (out_size == in_size) return dst;
  if (out_size == 2 * in_size) return dst >> 1;
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  const int64_t src = static_cast<int64_t>(floorf(static_cast<float>(dst) * scale));
  return src < in_size - 1 ? src : in_size - 1;
}

// First output index whose nearest source is >= src, so the outputs that read
// input `src` are [nearest_target_begin(src), nearest_target_begin(src + 1)).
// The backward of the upsampling and the pooling of up(ample) use it to visit
// each input's preimage without building the upsampled tensor.
AFNET_HOST_DEVICE int64_t nearest_target_begin(int64_t src, int64_t in_size, int64_t out_size) {
  if (out_size == in_size) return src;
  if (out_size == 2 * in_size) return 2 * src;
  // Exact-arithmetic guess; the float rounding inside nearest_source_index can
  // move the true boundary by a step, which the two walks below correct (the
  // map is monotone, so they stop at the first output reading >= src).
  int64_t dst = src * out_size / in_size;
  if (dst > out_size) dst = out_size;
  while (dst > 0 && nearest_source_index(dst - 1, in_size, out_size) >= src) --dst;
  while (dst < out_size && nearest_source_index(dst, in_size, out_size) < src) ++dst;
  return dst;
}

}  // namespace afnet_kernels
