// CUDA kernels of the tile ops: gather_tiles, its backward, scatter_tiles
// (geometry in common/tiles.h, shared with the CPU kernels).
//
// Each kernel walks images: the tiles of a [K, C, Th, Tw] tensor (the
// gathers) or the frames of the [R, C, H, W] output (the scatter).
// blockIdx.y/threadIdx.y pick the image and the x threads walk its elements,
// flattened (row_grid): a whole warp or more on a tile of a few hundred
// elements, where walking lines put 32 lanes on a 9-element tile row. In
// channels_last a thread moves a 16-byte pack of channels of one pixel.
//
// Index arithmetic: 64 bits for the base offset of an image (and of the frames
// a tile reads), 32 bits inside it, where the host checked that every image
// holds at most 2^31 - 1 elements. The divisions of the loops are FastDivmods
// by divisors fixed at launch (a multiply-high and a shift), and the cell
// arithmetic is the FastTileGrid that the CPU kernels run too; the host
// refuses sizes it cannot hold, with a message.
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

#include <optional>

#include "common/checks.h"
#include "common/indexing.h"
#include "common/tiles.h"
#include "cuda/index_checks.cuh"
#include "cuda/launch.cuh"

namespace afnet_kernels {
namespace cuda {
namespace {

// ---------------------------------------------------------------------------
// 32-bit images
// ---------------------------------------------------------------------------

// A dense [C, h, w] image (a tile, or a frame) in either layout. offset() is
// below C*h*w <= 2^31 - 1 (checked_image) for c < C, y < h, x < w, and so are
// its partial results.
struct Image {
  uint32_t channels, height, width;
  uint32_t numel;  // C*h*w
  bool channels_last;

  __device__ __forceinline__ uint32_t offset(uint32_t c, uint32_t y, uint32_t x) const {
    return channels_last ? (y * width + x) * channels + c : (c * height + y) * width + x;
  }
};

// The image [C, h, w] of a 4-D tensor's frames, checked to hold at most 2^31 - 1
// elements; `what` and `dims` name them in the message ("tiles", "C*Th*Tw").
// Sizes of 0 count as 1, so that every size fits 32 bits too, even in an empty image.
Image checked_image(const char* op, const char* what, const char* dims, int64_t C, int64_t h,
                    int64_t w, bool last) {
  const auto at_least_1 = [](int64_t v) { return v > 1 ? v : int64_t{1}; };
  const bool fits = product_fits_32(at_least_1(C), at_least_1(h)) &&
                    product_fits_32(at_least_1(C) * at_least_1(h), at_least_1(w));
  TORCH_CHECK(fits, op, ": ", what, " of more than 2^31 - 1 elements (", dims, " = ", C, "*", h,
              "*", w, ") are not supported by the CUDA kernels");
  return {static_cast<uint32_t>(C), static_cast<uint32_t>(h), static_cast<uint32_t>(w),
          static_cast<uint32_t>(C * h * w), last};
}

// Where pack p of an image lies (the N elements from element p*N): the channel
// of its first element and its pixel (y, x). In channels_last a pack is N
// channels of one pixel (N divides C); contiguous images move single elements.
struct ImageWalk {
  Image image;
  FastDivmod minor;  // channels_last: C/N, the packs of a pixel; contiguous: w
  FastDivmod major;  // channels_last: w; contiguous: h

  // p < numel/N: every dividend below is under numel <= 2^31 - 1.
  template <int N>
  __device__ __forceinline__ void locate(uint32_t p, uint32_t* c, uint32_t* y,
                                         uint32_t* x) const {
    if (image.channels_last) {
      uint32_t pack_in_pixel;
      const uint32_t pixel = minor.divmod(p, &pack_in_pixel);  // < h*w
      *c = pack_in_pixel * N;
      *y = major.divmod(pixel, x);
    } else {
      const uint32_t line = minor.divmod(p, x);  // c*h + y < C*h
      *c = major.divmod(line, y);
    }
  }
};

// The walk of a nonempty image in packs of N (N > 1 only in channels_last, N | C).
ImageWalk image_walk(const Image& image, int N) {
  TORCH_INTERNAL_ASSERT(image.numel > 0 && image.channels % N == 0 &&
                        (image.channels_last || N == 1));
  const uint32_t minor = image.channels_last ? image.channels / N : image.width;
  const uint32_t major = image.channels_last ? image.width : image.height;
  return {image, make_fast_divmod(minor), make_fast_divmod(major)};
}

// The op's cell geometry in 32 bits, or the reason it cannot be.
FastTileGrid checked_fast_grid(const char* op, const TileGrid& g) {
  const std::optional<FastTileGrid> fast = fast_tile_grid(g);
  TORCH_CHECK(fast.has_value(), op,
              ": the CUDA kernels compute cells in 32 bits: they need rows x Gh x Gw (",
              g.rows, " x ", g.y.cells, " x ", g.x.cells, "), Gh x H_out (", g.y.cells, " x ",
              g.y.length, ") and Gw x W_out (", g.x.cells, " x ", g.x.length,
              ") each at most 2^31 - 1");
  return *fast;
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

// ---------------------------------------------------------------------------
// What a tile reads
// ---------------------------------------------------------------------------

// The TSM shift of the gathers: t = row % T through `segments`, which is
// divided by T only when fold > 0 (and there are rows).
struct TileShift {
  FastDivmod segments;
  int64_t num_segments;
  int64_t fold;  // channels moved each way; 0: no shift
};

TileShift tile_shift(int64_t num_segments, int64_t fold, int64_t rows) {
  // T divides rows (check_segments), and rows <= the cell count <= 2^31 - 1
  // (checked_fast_grid), so T fits when it is used.
  const bool shifts = fold > 0 && rows > 0;
  return {make_fast_divmod(shifts ? static_cast<uint32_t>(num_segments) : 1u), num_segments, fold};
}

// TileWindow in the kernels' terms: tile pixel (ty, tx) in
// [y_begin, y_end) x [x_begin, x_end) reads input pixel (oy + ty, ox + tx) of
// the frame at element offset frames.of(c, fold) (-1: zeros); the rest of the
// tile is zeros.
struct TileReads {
  ShiftedRows frames;  // element offsets of the frames each TSM class reads
  int32_t oy, ox;
  uint32_t y_begin, y_end, x_begin, x_end;

  // The input element that tile element (c, ty, tx) reads, or -1 for a zero.
  // In the window oy + ty lies in [0, H_in) and ox + tx in [0, W_in), so the
  // 32-bit sums hold the true pixel and Image::offset stays below C*H_in*W_in.
  __device__ __forceinline__ int64_t source(uint32_t c, uint32_t ty, uint32_t tx, int64_t fold,
                                            const Image& frame) const {
    if (ty < y_begin || ty >= y_end || tx < x_begin || tx >= x_end) return -1;
    const int64_t base = frames.of(c, fold);
    if (base < 0) return -1;
    const uint32_t iy = static_cast<uint32_t>(oy + static_cast<int32_t>(ty));
    const uint32_t ix = static_cast<uint32_t>(ox + static_cast<int32_t>(tx));
    return base + frame.offset(c, iy, ix);
  }
};

// The reads of the tile of `cell` (a valid id or -1) over input frames `frame`.
//
// Ranges: the window's bounds lie in [0, Th] and [0, Tw], below 2^31 (a tile
// holds at most 2^31 - 1 elements). A window that is not empty along both axes
// has 1 <= H_in, W_in and oy in (-Th, H_in) (y_begin < y_end means -oy < Th
// and H_in - oy > 0), likewise ox, and H_in, W_in <= C*H_in*W_in <= 2^31 - 1:
// the origins fit int32. An empty window reads nothing and keeps zeros.
__device__ __forceinline__ TileReads tile_reads(const FastTileGrid& g, int64_t cell,
                                                const TileShift& shift, const Image& frame) {
  TileReads r{{kPadding, kPadding, kPadding}, 0, 0, 0, 0, 0, 0};
  const TileWindow w = tile_window(g, cell);
  if (w.y_begin >= w.y_end || w.x_begin >= w.x_end) return r;  // padding, or outside the input
  // w.row < rows <= 2^31 - 1 (a valid cell).
  const int64_t t = shift.fold > 0 ? shift.segments.mod(static_cast<uint32_t>(w.row)) : 0;
  const ShiftedRows rows = shifted_rows(w.row, t, shift.num_segments);
  const auto frame_offset = [&](int64_t row) { return row < 0 ? int64_t{-1} : row * frame.numel; };
  r.frames = {frame_offset(rows.next), frame_offset(rows.previous), frame_offset(rows.same)};
  r.oy = static_cast<int32_t>(w.oy);
  r.ox = static_cast<int32_t>(w.ox);
  r.y_begin = static_cast<uint32_t>(w.y_begin);
  r.y_end = static_cast<uint32_t>(w.y_end);
  r.x_begin = static_cast<uint32_t>(w.x_begin);
  r.x_end = static_cast<uint32_t>(w.x_end);
  return r;
}

// ---------------------------------------------------------------------------
// gather_tiles
// ---------------------------------------------------------------------------

// out[k] = the tile of cell index[k] of shift(x): one image per tile.
template <typename T, int N>
__global__ void gather_tiles_kernel(const T* __restrict__ x, const int64_t* __restrict__ index,
                                    T* __restrict__ out, int64_t count, FastTileGrid g,
                                    ImageWalk tile, Image frame, TileShift shift) {
  const uint32_t packs = tile.image.numel / N;
  for (int64_t k = grid_row_begin(); k < count; k += grid_row_stride()) {
    const TileReads reads = tile_reads(g, checked_cell(index, k, g.cell_count), shift, frame);
    T* out_tile = out + k * tile.image.numel;
    for (uint32_t p = grid_pack_begin(); p < packs; p += grid_pack_stride()) {
      uint32_t c, ty, tx;
      tile.locate<N>(p, &c, &ty, &tx);
      // A pack is N channels of one pixel: they share the pixel and the TSM class.
      const int64_t from = reads.source(c, ty, tx, shift.fold, frame);
      store_pack<N>(out_tile + p * N, from >= 0 ? load_pack<N>(x + from) : zero_pack<N, T>());
    }
  }
}

// Whether channels_last images can move as packs of `width` channels: C and the
// TSM fold multiples of the width (a pack never straddles a pixel or a class).
bool channel_packs_allow(bool last, int64_t channels, int64_t fold, int width) {
  return last && channels % width == 0 && fold % width == 0;
}

at::Tensor gather_tiles_cuda(const at::Tensor& x_in, const at::Tensor& index_in,
                             at::IntArrayRef grid, at::IntArrayRef out_size, int64_t stride,
                             int64_t halo, int64_t num_segments, int64_t shift_div,
                             bool validate) {
  constexpr const char* op = "gather_tiles";
  const TileGrid g = check_gather_tiles_args(x_in, index_in, grid, out_size, stride, halo,
                                             num_segments, shift_div);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::MemoryFormat format = memory_format_of(x_in);
  const at::Tensor x = dense_in(x_in, format);
  const at::Tensor index = index_in.contiguous();
  if (validate) validate_index_cuda(index, tile_index_rule(op, g, false));
  const int64_t count = index.size(0), C = x.size(1);
  at::Tensor out = at::empty({count, C, g.y.tile(), g.x.tile()}, x.options().memory_format(format));
  if (out.numel() == 0) return out;
  const bool last = format == at::MemoryFormat::ChannelsLast;
  const FastTileGrid fast = checked_fast_grid(op, g);
  const Image tile = checked_image(op, "tiles", "C*Th*Tw", C, g.y.tile(), g.x.tile(), last);
  const Image frame = checked_image(op, "frames of x", "C*H_in*W_in", C, x.size(2), x.size(3), last);
  const int64_t fold = shift_fold(C, shift_div);
  const TileShift shift = tile_shift(num_segments, fold, g.rows);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gather_tiles_cuda", [&] {
    constexpr int kWidth = pack_width<scalar_t>();
    const bool wide = channel_packs_allow(last, C, fold, kWidth) &&
                      all_aligned({x.data_ptr(), out.data_ptr()});
    with_pack_width<scalar_t>(wide, [&](auto width) {
      constexpr int N = decltype(width)::value;
      const RowGrid rg = row_grid(count, tile.numel / N);
      gather_tiles_kernel<scalar_t, N><<<rg.grid, rg.block, 0, c10::cuda::getCurrentCUDAStream()>>>(
          x.data_ptr<scalar_t>(), index.data_ptr<int64_t>(), out.data_ptr<scalar_t>(), count,
          fast, image_walk(tile, N), frame, shift);
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
                                             T* __restrict__ grad_x, int64_t count,
                                             FastTileGrid g, ImageWalk tile, Image frame,
                                             TileShift shift) {
  for (int64_t k = grid_row_begin(); k < count; k += grid_row_stride()) {
    const TileReads reads = tile_reads(g, checked_cell(index, k, g.cell_count), shift, frame);
    if (reads.y_begin >= reads.y_end) continue;  // padding, or outside the image
    const T* grad_tile = grad + k * tile.image.numel;
    for (uint32_t j = grid_pack_begin(); j < tile.image.numel; j += grid_pack_stride()) {
      uint32_t c, ty, tx;
      tile.locate<1>(j, &c, &ty, &tx);
      const int64_t to = reads.source(c, ty, tx, shift.fold, frame);
      if (to >= 0) gpuAtomicAddNoReturn(grad_x + to, grad_tile[j]);
    }
  }
}

at::Tensor gather_tiles_backward_cuda(const at::Tensor& grad_in, const at::Tensor& index_in,
                                      at::IntArrayRef grid, at::IntArrayRef out_size,
                                      at::IntArrayRef in_size, int64_t num_rows, int64_t stride,
                                      int64_t halo, int64_t num_segments, int64_t shift_div,
                                      bool validate) {
  constexpr const char* op = "_gather_tiles_backward";
  const TileGrid g = check_gather_tiles_backward_args(grad_in, index_in, grid, out_size, in_size,
                                                      num_rows, stride, halo, num_segments,
                                                      shift_div);
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const at::MemoryFormat format = memory_format_of(grad_in);
  const at::Tensor grad = dense_in(grad_in, format);
  const at::Tensor index = index_in.contiguous();
  if (validate) validate_index_cuda(index, tile_index_rule(op, g, false));
  const int64_t C = grad.size(1);
  // at::zeros would drop the memory format.
  at::Tensor grad_x = at::empty({num_rows, C, in_size[0], in_size[1]},
                                grad.options().memory_format(format)).zero_();
  if (grad_x.numel() == 0 || grad.numel() == 0) return grad_x;
  const bool last = format == at::MemoryFormat::ChannelsLast;
  const FastTileGrid fast = checked_fast_grid(op, g);
  const Image tile = checked_image(op, "tiles", "C*Th*Tw", C, g.y.tile(), g.x.tile(), last);
  const Image frame = checked_image(op, "frames of the input", "C*H_in*W_in", C, in_size[0],
                                    in_size[1], last);
  const TileShift shift = tile_shift(num_segments, shift_fold(C, shift_div), g.rows);
  const int64_t count = index.size(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "gather_tiles_backward_cuda", [&] {
    const RowGrid rg = row_grid(count, tile.numel);
    gather_tiles_backward_kernel<scalar_t><<<rg.grid, rg.block, 0, c10::cuda::getCurrentCUDAStream()>>>(
        grad.data_ptr<scalar_t>(), index.data_ptr<int64_t>(), grad_x.data_ptr<scalar_t>(), count,
        fast, image_walk(tile, 1), frame, shift);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_x;
}

// ---------------------------------------------------------------------------
// scatter_tiles
// ---------------------------------------------------------------------------

// out = base + (src pixel of the cell's tile, or fill), ReLU last: one image
// per output frame. `inverse` maps cell ids to positions in index (-1: not
// computed); `fill` is one frame laid out like base's frames, or null for none.
//
// Ranges: r < rows <= the cell count <= 2^31 - 1; (c, y, x) lie in the frame,
// so the cell ids are below the cell count; the pixel's cell spans at most
// (Sh, Sw) pixels from its start, so (c, dy, dx) lies in a src tile [C, Sh, Sw],
// which holds no more elements than a frame.
template <typename T, int N>
__global__ void scatter_tiles_kernel(const T* __restrict__ base, const T* __restrict__ src,
                                     const int64_t* __restrict__ inverse,
                                     const T* __restrict__ fill, bool relu, T* __restrict__ out,
                                     int64_t rows, FastTileGrid g, ImageWalk frame, Image tile) {
  const uint32_t packs = frame.image.numel / N;
  for (int64_t r = grid_row_begin(); r < rows; r += grid_row_stride()) {
    const int64_t frame_offset = r * frame.image.numel;
    const uint32_t row = static_cast<uint32_t>(r);
    for (uint32_t p = grid_pack_begin(); p < packs; p += grid_pack_stride()) {
      uint32_t c, y, x;
      frame.locate<N>(p, &c, &y, &x);
      const uint32_t cy = g.y.cell(y), cx = g.x.cell(x);
      const int64_t k = inverse[g.id(row, cy, cx)];
      const uint32_t j = p * N;
      const Pack<T, N> b = load_pack<N>(base + frame_offset + j);
      Pack<T, N> a;
      if (k >= 0) {
        a = load_pack<N>(src + k * tile.numel +
                         tile.offset(c, y - g.y.start(cy), x - g.x.start(cx)));
      } else if (fill != nullptr) {
        a = load_pack<N>(fill + j);
      } else {
        a = zero_pack<N, T>();
      }
      store_pack<N>(out + frame_offset + j, add_packs<N>(b, a, relu));
    }
  }
}

at::Tensor scatter_tiles_cuda(const at::Tensor& base_in, const at::Tensor& src_in,
                              const at::Tensor& index_in, at::IntArrayRef grid,
                              const std::optional<at::Tensor>& fill_in, bool relu, bool validate) {
  constexpr const char* op = "scatter_tiles";
  const TileGrid g = check_scatter_tiles_args(base_in, src_in, index_in, grid, fill_in);
  const c10::cuda::CUDAGuard guard(base_in.device());
  const at::MemoryFormat format = memory_format_of(base_in);
  const at::Tensor base = dense_in(base_in, format);
  const at::Tensor src = dense_in(src_in, format);
  const at::Tensor index = index_in.contiguous();
  const at::Tensor inverse = checked_inverse(index, tile_index_rule(op, g, true), validate);
  at::Tensor out = at::empty(base.sizes(), base.options().memory_format(format));
  if (out.numel() == 0) return out;
  const int64_t C = base.size(1), H = base.size(2), W = base.size(3);
  const at::Tensor fill = fill_frame(fill_in, base, format);
  const bool last = format == at::MemoryFormat::ChannelsLast;
  const FastTileGrid fast = checked_fast_grid(op, g);
  const Image frame = checked_image(op, "frames", "C*H_out*W_out", C, H, W, last);
  // Sh <= H_out and Sw <= W_out: a src tile holds no more than a frame.
  const Image tile = checked_image(op, "tiles", "C*Sh*Sw", C, g.y.size, g.x.size, last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, base.scalar_type(), "scatter_tiles_cuda", [&] {
    constexpr int kWidth = pack_width<scalar_t>();
    const scalar_t* fill_ptr = fill.defined() ? fill.data_ptr<scalar_t>() : nullptr;
    const bool wide = channel_packs_allow(last, C, 0, kWidth) &&
                      all_aligned({base.data_ptr(), src.data_ptr(), out.data_ptr(), fill_ptr});
    with_pack_width<scalar_t>(wide, [&](auto width) {
      constexpr int N = decltype(width)::value;
      const RowGrid rg = row_grid(base.size(0), frame.numel / N);
      scatter_tiles_kernel<scalar_t, N><<<rg.grid, rg.block, 0, c10::cuda::getCurrentCUDAStream()>>>(
          base.data_ptr<scalar_t>(), src.data_ptr<scalar_t>(), inverse.data_ptr<int64_t>(),
          fill_ptr, relu, out.data_ptr<scalar_t>(), base.size(0), fast, image_walk(frame, N),
          tile);
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
