// CUDA kernels of the tile ops: gather_tiles, its backward, scatter_tiles
// (geometry in common/tiles.h, shared with the CPU kernels).
//
// The kernels walk lines, as the CPU ones do: one tile (or output) row of one
// channel in the contiguous layout, or of all C channels in channels_last,
// where a pixel's channels are adjacent in the tile and in the image and so
// move as 16-byte packs. Offsets are 64-bit.
//
// gather_tiles and scatter_tiles write every output element once
// (deterministic; scatter_tiles walks the output through an inverse map of
// cell ids). The gather backward adds the overlapping tiles with atomics, so
// its sums have no fixed order.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>
#include <optional>

#include "common/checks.h"
#include "common/indexing.h"
#include "common/tiles.h"
#include "cuda/index_checks.cuh"
#include "cuda/launch.cuh"

namespace afnet_kernels {
namespace cuda {
namespace {

// Lines of a [K, C, Th, Tw] tile tensor or a [R, C, H, W] output: (k, c, ty) of
// Tw elements (contiguous) or (k, ty) of Tw*C elements (channels_last).
struct Lines {
  int64_t count;
  uint32_t numel;        // elements per line
  int64_t per_image;     // lines per tile / frame: Th (or H), times C when contiguous
  int64_t height;        // Th or H
  int64_t channels;      // C
  bool channels_last;

  // Splits a line id into the tile / frame, the channel (contiguous) and the row in it.
  __device__ __forceinline__ void split(int64_t line, int64_t* image, int64_t* channel,
                                        int64_t* y) const {
    *y = line % height;
    *image = line / per_image;
    *channel = channels_last ? 0 : (line / height) % channels;
  }
  // The element's position along the line (a pixel) and its channel.
  __device__ __forceinline__ void position(uint32_t j, int64_t line_channel, int64_t* x,
                                           int64_t* c) const {
    *x = channels_last ? j / channels : j;
    *c = channels_last ? j % channels : line_channel;
  }
};

Lines lines_of(int64_t images, int64_t channels, int64_t height, int64_t width, bool last,
               const char* op) {
  const int64_t numel = last ? width * channels : width;
  TORCH_CHECK(numel <= std::numeric_limits<int32_t>::max(), op,
              ": rows of more than 2^31 - 1 elements are not supported by the CUDA kernels");
  const int64_t per_image = last ? height : height * channels;
  return {images * per_image, static_cast<uint32_t>(numel), per_image, height, channels, last};
}

// Element offset of (row, c, y, x) in a dense [rows, C, H, W] tensor.
__device__ __forceinline__ int64_t offset_of(int64_t row, int64_t c, int64_t y, int64_t x,
                                             int64_t C, int64_t H, int64_t W, bool last) {
  return last ? ((row * H + y) * W + x) * C + c : ((row * C + c) * H + y) * W + x;
}

// The cell id of index entry k, asserting its range (validate=False); a bad
// value reads as padding, so nothing is touched out of bounds.
__device__ __forceinline__ int64_t checked_cell(const int64_t* index, int64_t k, int64_t cells) {
  const int64_t cell = index[k];
  const bool valid = in_range(cell, cells);
  CUDA_KERNEL_ASSERT_MSG(valid || cell == kPadding,
                         "afnet_kernels: tile index value out of range (validate=False)");
  return valid ? cell : kPadding;
}

// The input element tile pixel (ty, tx) reads at channel c, or -1 for a zero.
__device__ __forceinline__ int64_t tile_source(const TileWindow& w, int64_t ty, int64_t tx,
                                               int64_t c, int64_t fold, int64_t num_segments,
                                               int64_t C, int64_t H, int64_t W, bool last) {
  if (!w.contains(ty, tx)) return -1;
  const int64_t from = shifted_source_row(w.row, c, fold, num_segments);
  return from < 0 ? -1 : offset_of(from, c, w.oy + ty, w.ox + tx, C, H, W, last);
}

// ---------------------------------------------------------------------------
// gather_tiles
// ---------------------------------------------------------------------------

template <typename T, int N>
__global__ void gather_tiles_kernel(const T* __restrict__ x, const int64_t* __restrict__ index,
                                    T* __restrict__ out, TileGrid g, Lines lines, int64_t H,
                                    int64_t W, int64_t fold, int64_t num_segments) {
  const uint32_t line_packs = lines.numel / N;
  for (int64_t line = grid_row_begin(); line < lines.count; line += grid_row_stride()) {
    int64_t k, line_c, ty;
    lines.split(line, &k, &line_c, &ty);
    const TileWindow window = tile_window(g, checked_cell(index, k, g.cell_count()));
    T* out_line = out + line * lines.numel;
    for (uint32_t p = grid_pack_begin(); p < line_packs; p += grid_pack_stride()) {
      const uint32_t j = p * N;
      int64_t tx, c;
      lines.position(j, line_c, &tx, &c);
      // A pack is N channels of one pixel: they share the pixel and the TSM class.
      const int64_t from = tile_source(window, ty, tx, c, fold, num_segments, lines.channels, H,
                                       W, lines.channels_last);
      store_pack<N>(out_line + j, from >= 0 ? load_pack<N>(x + from) : zero_pack<N, T>());
    }
  }
}

// Whether channels_last lines can move as packs of `width` channels: C and the
// TSM fold multiples of the width (a pack never straddles a pixel or a class).
bool channel_packs_allow(bool last, int64_t channels, int64_t fold, int width) {
  return last && channels % width == 0 && fold % width == 0;
}

at::Tensor gather_tiles_cuda(const at::Tensor& x_in, const at::Tensor& index_in,
                             at::IntArrayRef grid, at::IntArrayRef out_size, int64_t stride,
                             int64_t halo, int64_t num_segments, int64_t shift_div,
                             bool validate) {
  const TileGrid g = check_gather_tiles_args(x_in, index_in, grid, out_size, stride, halo,
                                             num_segments, shift_div);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::MemoryFormat format = memory_format_of(x_in);
  const at::Tensor x = dense_in(x_in, format);
  const at::Tensor index = index_in.contiguous();
  if (validate) validate_index_cuda(index, tile_index_rule("gather_tiles", g, false));
  const int64_t count = index.size(0), C = x.size(1);
  at::Tensor out = at::empty({count, C, g.y.tile(), g.x.tile()}, x.options().memory_format(format));
  if (out.numel() == 0) return out;
  const bool last = format == at::MemoryFormat::ChannelsLast;
  const Lines lines = lines_of(count, C, g.y.tile(), g.x.tile(), last, "gather_tiles");
  const int64_t fold = shift_fold(C, shift_div);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gather_tiles_cuda", [&] {
    constexpr int kWidth = pack_width<scalar_t>();
    const bool wide = channel_packs_allow(last, C, fold, kWidth) &&
                      all_aligned({x.data_ptr(), out.data_ptr()});
    with_pack_width<scalar_t>(wide, [&](auto width) {
      constexpr int N = decltype(width)::value;
      const RowGrid rg = row_grid(lines.count, lines.numel / N);
      gather_tiles_kernel<scalar_t, N><<<rg.grid, rg.block, 0, c10::cuda::getCurrentCUDAStream()>>>(
          x.data_ptr<scalar_t>(), index.data_ptr<int64_t>(), out.data_ptr<scalar_t>(), g, lines,
          x.size(2), x.size(3), fold, num_segments);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

// ---------------------------------------------------------------------------
// _gather_tiles_backward
// ---------------------------------------------------------------------------

// grad_x[source of tile element] += grad[tile element], with atomics: the
// tiles overlap in their halos (and repeat when the index repeats a cell).
template <typename T>
__global__ void gather_tiles_backward_kernel(const T* __restrict__ grad,
                                             const int64_t* __restrict__ index,
                                             T* __restrict__ grad_x, TileGrid g, Lines lines,
                                             int64_t H, int64_t W, int64_t fold,
                                             int64_t num_segments) {
  for (int64_t line = grid_row_begin(); line < lines.count; line += grid_row_stride()) {
    int64_t k, line_c, ty;
    lines.split(line, &k, &line_c, &ty);
    const TileWindow window = tile_window(g, checked_cell(index, k, g.cell_count()));
    if (ty < window.y_begin || ty >= window.y_end) continue;  // padding, or outside the image
    const T* grad_line = grad + line * lines.numel;
    for (uint32_t j = grid_pack_begin(); j < lines.numel; j += grid_pack_stride()) {
      int64_t tx, c;
      lines.position(j, line_c, &tx, &c);
      const int64_t to = tile_source(window, ty, tx, c, fold, num_segments, lines.channels, H, W,
                                     lines.channels_last);
      if (to >= 0) gpuAtomicAddNoReturn(grad_x + to, grad_line[j]);
    }
  }
}

at::Tensor gather_tiles_backward_cuda(const at::Tensor& grad_in, const at::Tensor& index_in,
                                      at::IntArrayRef grid, at::IntArrayRef out_size,
                                      at::IntArrayRef in_size, int64_t num_rows, int64_t stride,
                                      int64_t halo, int64_t num_segments, int64_t shift_div,
                                      bool validate) {
  const TileGrid g = check_gather_tiles_backward_args(grad_in, index_in, grid, out_size, in_size,
                                                      num_rows, stride, halo, num_segments,
                                                      shift_div);
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const at::MemoryFormat format = memory_format_of(grad_in);
  const at::Tensor grad = dense_in(grad_in, format);
  const at::Tensor index = index_in.contiguous();
  if (validate) validate_index_cuda(index, tile_index_rule("_gather_tiles_backward", g, false));
  const int64_t C = grad.size(1);
  // at::zeros would drop the memory format.
  at::Tensor grad_x = at::empty({num_rows, C, in_size[0], in_size[1]},
                                grad.options().memory_format(format)).zero_();
  if (grad_x.numel() == 0 || grad.numel() == 0) return grad_x;
  const bool last = format == at::MemoryFormat::ChannelsLast;
  const Lines lines = lines_of(index.size(0), C, g.y.tile(), g.x.tile(), last,
                               "_gather_tiles_backward");
  const int64_t fold = shift_fold(C, shift_div);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "gather_tiles_backward_cuda", [&] {
    const RowGrid rg = row_grid(lines.count, lines.numel);
    gather_tiles_backward_kernel<scalar_t><<<rg.grid, rg.block, 0, c10::cuda::getCurrentCUDAStream()>>>(
        grad.data_ptr<scalar_t>(), index.data_ptr<int64_t>(), grad_x.data_ptr<scalar_t>(), g,
        lines, in_size[0], in_size[1], fold, num_segments);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_x;
}

// ---------------------------------------------------------------------------
// scatter_tiles
// ---------------------------------------------------------------------------

// out = base + (src pixel of the cell's tile, or fill), ReLU last. `inverse`
// maps cell ids to positions in index (-1: not computed); `fill` is one frame
// laid out like base's frames, or null for none.
template <typename T, int N>
__global__ void scatter_tiles_kernel(const T* __restrict__ base, const T* __restrict__ src,
                                     const int64_t* __restrict__ inverse,
                                     const T* __restrict__ fill, bool relu, T* __restrict__ out,
                                     TileGrid g, Lines lines) {
  const uint32_t line_packs = lines.numel / N;
  const int64_t C = lines.channels;
  for (int64_t line = grid_row_begin(); line < lines.count; line += grid_row_stride()) {
    int64_t r, line_c, y;
    lines.split(line, &r, &line_c, &y);
    const int64_t cy = g.y.cell(y);
    const int64_t dy = y - g.y.start(cy);
    const int64_t line_offset = line * lines.numel;
    const int64_t frame_offset = (line % lines.per_image) * lines.numel;  // in a fill frame
    for (uint32_t p = grid_pack_begin(); p < line_packs; p += grid_pack_stride()) {
      const uint32_t j = p * N;
      int64_t x, c;
      lines.position(j, line_c, &x, &c);
      const int64_t cx = g.x.cell(x);
      const int64_t k = inverse[g.id(r, cy, cx)];
      const Pack<T, N> b = load_pack<N>(base + line_offset + j);
      Pack<T, N> a;
      if (k >= 0) {
        a = load_pack<N>(src + offset_of(k, c, dy, x - g.x.start(cx), C, g.y.size, g.x.size,
                                         lines.channels_last));
      } else if (fill != nullptr) {
        a = load_pack<N>(fill + frame_offset + j);
      } else {
        a = zero_pack<N, T>();
      }
      store_pack<N>(out + line_offset + j, add_packs<N>(b, a, relu));
    }
  }
}

at::Tensor scatter_tiles_cuda(const at::Tensor& base_in, const at::Tensor& src_in,
                              const at::Tensor& index_in, at::IntArrayRef grid,
                              const std::optional<at::Tensor>& fill_in, bool relu, bool validate) {
  const TileGrid g = check_scatter_tiles_args(base_in, src_in, index_in, grid, fill_in);
  const c10::cuda::CUDAGuard guard(base_in.device());
  const at::MemoryFormat format = memory_format_of(base_in);
  const at::Tensor base = dense_in(base_in, format);
  const at::Tensor src = dense_in(src_in, format);
  const at::Tensor index = index_in.contiguous();
  const at::Tensor inverse = checked_inverse(index, tile_index_rule("scatter_tiles", g, true), validate);
  at::Tensor out = at::empty(base.sizes(), base.options().memory_format(format));
  if (out.numel() == 0) return out;
  const int64_t C = base.size(1), H = base.size(2), W = base.size(3);
  const at::Tensor fill = fill_frame(fill_in, base, format);
  const bool last = format == at::MemoryFormat::ChannelsLast;
  const Lines lines = lines_of(base.size(0), C, H, W, last, "scatter_tiles");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, base.scalar_type(), "scatter_tiles_cuda", [&] {
    constexpr int kWidth = pack_width<scalar_t>();
    const scalar_t* fill_ptr = fill.defined() ? fill.data_ptr<scalar_t>() : nullptr;
    const bool wide = channel_packs_allow(last, C, 0, kWidth) &&
                      all_aligned({base.data_ptr(), src.data_ptr(), out.data_ptr(), fill_ptr});
    with_pack_width<scalar_t>(wide, [&](auto width) {
      constexpr int N = decltype(width)::value;
      const RowGrid rg = row_grid(lines.count, lines.numel / N);
      scatter_tiles_kernel<scalar_t, N><<<rg.grid, rg.block, 0, c10::cuda::getCurrentCUDAStream()>>>(
          base.data_ptr<scalar_t>(), src.data_ptr<scalar_t>(), inverse.data_ptr<int64_t>(),
          fill_ptr, relu, out.data_ptr<scalar_t>(), g, lines);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace afnet_kernels

TORCH_LIBRARY_IMPL(afnet_kernels, CUDA, m) {
  m.impl("gather_tiles", &afnet_kernels::cuda::gather_tiles_cuda);
  m.impl("_gather_tiles_backward", &afnet_kernels::cuda::gather_tiles_backward_cuda);
  m.impl("scatter_tiles", &afnet_kernels::cuda::scatter_tiles_cuda);
}
