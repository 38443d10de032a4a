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

}  // namespace afnet_kernels
