// Building blocks shared by the CUDA kernels: 16-byte packs, the row grid the
// elementwise kernels walk, warp and column reductions, and the split grid of
// the channels_last reductions.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/util/Exception.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <initializer_list>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>

#include "common/indexing.h"

namespace afnet_kernels {
namespace cuda {

constexpr int kThreads = 256;
constexpr int kPackBytes = 16;

// Elements of T in one 16-byte access.
template <typename T>
constexpr int pack_width() {
  return kPackBytes / static_cast<int>(sizeof(T));
}

// N consecutive elements moved as one access (16 bytes when N = pack_width).
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <int N, typename T>
__device__ __forceinline__ Pack<T, N> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, N>*>(p);
}

template <int N, typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, N>& pack) {
  *reinterpret_cast<Pack<T, N>*>(p) = pack;
}

template <int N, typename T>
__device__ __forceinline__ Pack<T, N> zero_pack() {
  Pack<T, N> pack;
#pragma unroll
  for (int i = 0; i < N; ++i) pack.v[i] = static_cast<T>(0.0f);
  return pack;
}

// ReLU that lets NaN through, as torch.relu does.
template <typename A>
__device__ __forceinline__ A relu_keep_nan(A v) {
  return v < A(0) ? A(0) : v;
}

// a + b element by element in opmath (rounded once), then ReLU when `relu`:
// the epilogue of the scatters.
template <int N, typename T>
__device__ __forceinline__ Pack<T, N> add_packs(const Pack<T, N>& a, const Pack<T, N>& b,
                                                bool relu) {
  using acc_t = at::opmath_type<T>;
  Pack<T, N> out;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const acc_t sum = static_cast<acc_t>(a.v[i]) + static_cast<acc_t>(b.v[i]);
    out.v[i] = static_cast<T>(relu ? relu_keep_nan(sum) : sum);
  }
  return out;
}

// Gradient through a ReLU given its output, as torch's threshold_backward:
// zero where out <= 0 (NaN outputs pass the gradient).
template <typename A>
__device__ __forceinline__ A relu_grad(A grad, A out) {
  return out <= A(0) ? A(0) : grad;
}

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Frames are addressed with 32-bit offsets on the device (see checked_frame_numel).
using Layout = FrameLayout<uint32_t>;

// C*H*W of a [rows, C, H, W] tensor. Kernels address inside a frame with
// 32-bit offsets (row bases are 64-bit), so a frame must stay below 2^31.
inline uint32_t checked_frame_numel(const at::Tensor& t, const char* op) {
  const int64_t numel = t.size(1) * t.size(2) * t.size(3);
  TORCH_CHECK(numel <= std::numeric_limits<int32_t>::max(), op,
              ": frames of more than 2^31 - 1 elements (C*H*W = ", numel,
              ") are not supported by the CUDA kernels");
  return static_cast<uint32_t>(numel);
}

// A scatter's fill as one frame [1, C, H, W] of base, dense in `format` ([C]
// broadcast over the pixels: one frame's worth of work, so that the kernels
// read it in packs at a frame's offsets); undefined when there is no fill.
inline at::Tensor fill_frame(const std::optional<at::Tensor>& fill, const at::Tensor& base,
                             at::MemoryFormat format) {
  if (!fill.has_value() || !fill->defined()) return at::Tensor();
  const int64_t C = base.size(1), H = base.size(2), W = base.size(3);
  const at::Tensor frame = fill->dim() == 1 ? fill->reshape({1, C, 1, 1}).expand({1, C, H, W})
                                            : fill->unsqueeze(0);
  return frame.contiguous(format);
}

inline bool is_aligned(const void* p, int bytes) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0;
}

// Whether every pointer allows 16-byte accesses.
inline bool all_aligned(std::initializer_list<const void*> pointers) {
  for (const void* p : pointers) {
    if (!is_aligned(p, kPackBytes)) return false;
  }
  return true;
}

// Runs launch(std::integral_constant<int, width>) with the 16-byte pack width
// of T when `wide`, else with single elements.
template <typename T, typename Launch>
void with_pack_width(bool wide, const Launch& launch) {
  if (wide) {
    launch(std::integral_constant<int, pack_width<T>()>{});
  } else {
    launch(std::integral_constant<int, 1>{});
  }
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid of the elementwise row kernels: blockIdx.y/threadIdx.y walk rows,
// blockIdx.x/threadIdx.x walk the packs of a row. Short rows share a block so
// that no thread idles on a frame of a few packs.
//
// The 32-bit pack loop cannot wrap: with row_packs <= 2^31 - 1 and bx a power
// of two, gx * bx is the multiple of bx just at or above row_packs, at most
// 2^31, so p + grid_pack_stride() < 2^31 + 2^31 for p < row_packs.
struct RowGrid {
  dim3 grid;
  dim3 block;
};

inline RowGrid row_grid(int64_t rows, int64_t row_packs) {
  int bx = 32;
  while (bx < kThreads && bx < row_packs) bx <<= 1;
  const int by = kThreads / bx;
  const int64_t gx = std::min<int64_t>(ceil_div(row_packs, bx), std::numeric_limits<int32_t>::max());
  const int64_t gy = std::min<int64_t>(ceil_div(rows, by), 65535);
  return {dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), dim3(bx, by)};
}

__device__ __forceinline__ int64_t grid_row_begin() {
  return static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y;
}
__device__ __forceinline__ int64_t grid_row_stride() {
  return static_cast<int64_t>(gridDim.y) * blockDim.y;
}
__device__ __forceinline__ uint32_t grid_pack_begin() { return blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ uint32_t grid_pack_stride() { return gridDim.x * blockDim.x; }

// SMs of the current device. Torch reads each device's properties once and
// keeps them (a call_once per device, thread-safe), so a launch costs no
// driver query.
inline int multiprocessor_count() {
  return at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
}

// Grid of the channels_last reductions over pixels: a block covers one frame,
// a tile of channel packs (threadIdx.x) and one of `splits` chunks of the
// pixels (threadIdx.y strides within the chunk). blockIdx.x = row * tiles +
// tile, blockIdx.y = split. Splits keep the machine busy when rows * tiles is
// small; each writes its own partial sums, added in a fixed order afterwards.
struct PixelGrid {
  dim3 grid;
  dim3 block;
  int64_t tiles;
  uint32_t splits;
};

inline PixelGrid pixel_grid(int64_t rows, int64_t channel_packs, int64_t pixels) {
  int bx = 1;
  while (bx < 32 && bx < channel_packs) bx <<= 1;
  const int by = kThreads / bx;
  const int64_t tiles = ceil_div(channel_packs, bx);
  const int64_t blocks = rows * tiles;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(),
              "afnet_kernels: too many frames x channel tiles for one launch: ", blocks);
  const int64_t wanted = ceil_div(4 * multiprocessor_count(), std::max<int64_t>(blocks, 1));
  const int64_t useful = std::max<int64_t>(1, ceil_div(pixels, by));
  const int64_t splits = std::max<int64_t>(1, std::min<int64_t>({wanted, useful, 65535}));
  return {dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(splits)), dim3(bx, by), tiles,
          static_cast<uint32_t>(splits)};
}

// [begin, end) of chunk `split` when `total` items are cut into `splits` chunks.
__device__ __forceinline__ void split_range(uint32_t total, uint32_t splits, uint32_t split,
                                            uint32_t& begin, uint32_t& end) {
  const uint32_t chunk = (total + splits - 1) / splits;
  begin = min(total, split * chunk);
  end = min(total, begin + chunk);
}

// Sums acc[0..N) over threadIdx.y (fixed order, deterministic) and lets the
// threads of row threadIdx.y == 0 write the N sums to out[0..N) when `active`.
// Every thread of the block must call it.
template <int N, typename A>
__device__ __forceinline__ void sum_over_block_rows(const A (&acc)[N], bool active, A* out) {
  __shared__ A buffer[kThreads * N];
  const uint32_t slot = (threadIdx.y * blockDim.x + threadIdx.x) * N;
#pragma unroll
  for (int i = 0; i < N; ++i) buffer[slot + i] = acc[i];
  __syncthreads();
  if (threadIdx.y == 0 && active) {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      A total = A(0);
      for (uint32_t y = 0; y < blockDim.y; ++y) total += buffer[(y * blockDim.x + threadIdx.x) * N + i];
      out[i] = total;
    }
  }
}

// out[i] = (sum over splits of partial[split][i]) / divisor, in split order.
template <typename T, typename A>
__global__ void sum_splits_kernel(const A* __restrict__ partial, int64_t count, uint32_t splits,
                                  A divisor, T* __restrict__ out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    A total = A(0);
    for (uint32_t s = 0; s < splits; ++s) total += partial[s * count + i];
    out[i] = static_cast<T>(total / divisor);
  }
}

inline unsigned flat_blocks(int64_t count) {
  return static_cast<unsigned>(std::min<int64_t>(ceil_div(count, kThreads), 65535 * 16));
}

}  // namespace cuda
}  // namespace afnet_kernels
