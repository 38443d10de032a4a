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

// The index value that marks a padding entry: gathers produce zeros for it and
// scatters ignore it (padding-bucket mode of select_frames).
constexpr int64_t kPadding = -1;

AFNET_HOST_DEVICE bool in_range(int64_t value, int64_t limit) { return value >= 0 && value < limit; }

// ---------------------------------------------------------------------------
// Frame layout
// ---------------------------------------------------------------------------

// Where element j of a frame lies. A frame is one dense block of C*H*W
// elements in both layouts: channel planes of H*W (contiguous) or H*W pixels
// of C channels (channels_last). `offset_t` is 32-bit on CUDA (cheap division)
// and 64-bit on the CPU; the arithmetic is the same.
template <typename offset_t>
struct FrameLayout {
  offset_t channels;
  offset_t pixels;  // H*W
  bool channels_last;

  AFNET_HOST_DEVICE offset_t channel(offset_t j) const {
    return channels_last ? j % channels : j / pixels;
  }
  // The pixel (y*W + x) of element j.
  AFNET_HOST_DEVICE offset_t pixel(offset_t j) const {
    return channels_last ? j / channels : j % pixels;
  }

  // One past the last element of the run that starts at j and stays at
  // channels < channel_end: the end of the channel plane (contiguous) or of
  // the channels of j's pixel (channels_last).
  AFNET_HOST_DEVICE offset_t channel_run_end(offset_t j, offset_t channel_end) const {
    return channels_last ? j - j % channels + channel_end : channel_end * pixels;
  }
};

// ---------------------------------------------------------------------------
// Temporal shift (TSM)
// ---------------------------------------------------------------------------

// First channel after c's TSM class: [0, fold), [fold, 2*fold), [2*fold, C).
AFNET_HOST_DEVICE int64_t shift_class_end(int64_t c, int64_t fold, int64_t channels) {
  return c < fold ? fold : (c < 2 * fold ? 2 * fold : channels);
}

// Row of x that feeds channel c of output row `row` under the TSM shift, or -1
// for a zero (clip edge, or a padding row). fold = C / shift_div; fold == 0
// means no shift. Channels [0, fold) read frame t+1, [fold, 2*fold) read t-1.
AFNET_HOST_DEVICE int64_t shifted_source_row(int64_t row, int64_t c, int64_t fold,
                                             int64_t num_segments) {
  if (row < 0) return kPadding;
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

// ---------------------------------------------------------------------------
// select_frames and inverse indices
// ---------------------------------------------------------------------------

// Position in `index` of a row whose inclusive prefix count of selected rows is
// `count` (and `before` for the row above): count - 1 when the row is selected,
// -1 otherwise.
AFNET_HOST_DEVICE int64_t selected_position(int64_t count, int64_t before) {
  return count != before ? count - 1 : -1;
}

// What entering one index entry into an inverse map found.
enum IndexStatus : int64_t {
  kIndexOk = 0,
  kIndexOutOfRange = 1,
  kIndexRepeated = 2,  // bit flags: a status word ORs them over all entries
};

// Stores max(*slot, k) and returns the old *slot: an atomicMax on the device,
// where entries are entered concurrently; a plain read-modify-write on the host.
AFNET_HOST_DEVICE int64_t exchange_max(int64_t* slot, int64_t k) {
#if defined(__CUDA_ARCH__)
  return static_cast<int64_t>(
      atomicMax(reinterpret_cast<long long*>(slot), static_cast<long long>(k)));
#else
  const int64_t before = *slot;
  if (k > before) *slot = k;
  return before;
#endif
}

// Enters entry k (value `value`) of an index into `inverse` [slots]
// (initialized to -1): inverse[value] becomes the largest k naming it, so the
// result does not depend on the order entries are entered in. Padding entries
// are skipped. `*previous` receives the slot's old value: the other entry
// naming the same slot, if any.
AFNET_HOST_DEVICE int64_t enter_inverse(int64_t* inverse, int64_t slots, int64_t k, int64_t value,
                                        int64_t* previous) {
  *previous = -1;
  if (value == kPadding) return kIndexOk;
  if (!in_range(value, slots)) return kIndexOutOfRange;
  *previous = exchange_max(inverse + value, k);
  return *previous == -1 ? kIndexOk : kIndexRepeated;
}

// ---------------------------------------------------------------------------
// Nearest upsampling
// ---------------------------------------------------------------------------

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

// Number of upsampled positions along one axis that read input `src`.
AFNET_HOST_DEVICE int64_t preimage_size(int64_t src, int64_t in_size, int64_t out_size) {
  return nearest_target_begin(src + 1, in_size, out_size) -
         nearest_target_begin(src, in_size, out_size);
}

}  // namespace afnet_kernels
