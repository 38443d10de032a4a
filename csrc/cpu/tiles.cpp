// CPU tile ops: gather_tiles, its backward, and scatter_tiles (geometry in
// common/tiles.h, shared with CUDA).
//
// The gather copies tile windows (tile_window: the part of a tile inside the
// image), plane by plane (contiguous) or pixel by pixel with the TSM classes
// as runs of channels (channels_last). The scatter walks output pixel rows,
// each meeting one row of cells, in memory order.
//
// The cell arithmetic (tile_window, cell_of, cell_start) runs through the
// 32-bit FastTileGrid the CUDA kernels use whenever it holds the sizes
// (with_tile_geometry), so these kernels' tests check it too.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "common/checks.h"
#include "common/indexing.h"
#include "common/tiles.h"
#include "common/validate.h"
#include "cpu/elementwise.h"
#include "cpu/row_spans.h"
#include "cpu/slot_readers.h"

namespace afnet_kernels {
namespace cpu {
namespace {

// Calls fn(task) for tasks [0, tasks) in parallel, about kSpanGrain elements per thread step.
template <typename Fn>
void parallel_tasks(int64_t tasks, int64_t task_numel, const Fn& fn) {
  if (tasks == 0 || task_numel == 0) return;
  const int64_t grain = std::max<int64_t>(1, kSpanGrain / task_numel);
  at::parallel_for(0, tasks, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t task = lo; task < hi; ++task) fn(task);
  });
}

// Runs fn(E{}) with an unsigned integer type E of `item` bytes: the gather only
// moves elements, so one instantiation serves every dtype of that size.
template <typename Fn>
void with_element_bits(int64_t item, const Fn& fn) {
  switch (item) {
    case 2: fn(uint16_t{}); break;
    case 4: fn(uint32_t{}); break;
    case 8: fn(uint64_t{}); break;
    default: TORCH_CHECK(false, "afnet_kernels: unsupported element size ", item);
  }
}

// Runs fn(geometry) with the FastTileGrid of g when it holds g's sizes (the
// CUDA kernels' arithmetic), else with g itself (64 bits). Both offer
// tile_window(geometry, id), .y/.x.start(i), .y/.x.cell(p) and .id(row, cy, cx).
template <typename Fn>
void with_tile_geometry(const TileGrid& g, const Fn& fn) {
  if (const std::optional<FastTileGrid> fast = fast_tile_grid(g)) {
    fn(*fast);
  } else {
    fn(g);
  }
}

// ---------------------------------------------------------------------------
// gather_tiles
// ---------------------------------------------------------------------------

// Copies the window of one tile and zeros the rest: `width` elements at each
// of the th x tw tile pixels, which lie `pixel` elements apart (contiguous: one
// channel plane, width = pixel = 1; channels_last: a run of channels of each
// pixel, pixel = C). `image` points at the window's origin (its input pixel
// (oy, ox), which may lie outside the image: only in-window offsets are
// read); `reads` false zeros the whole tile.
template <typename E>
void copy_window(E* tile, const E* image, const TileWindow& w, int64_t th, int64_t tw,
                 int64_t image_w, int64_t width, int64_t pixel, bool reads) {
  for (int64_t ty = 0; ty < th; ++ty) {
    E* line = tile + ty * tw * pixel;
    const bool inside = reads && ty >= w.y_begin && ty < w.y_end;
    const int64_t begin = inside ? w.x_begin : tw, end = inside ? w.x_end : tw;
    if (width == pixel) {  // whole pixels: three runs
      std::fill(line, line + begin * pixel, E(0));
      if (inside) {
        const E* in = image + ty * image_w * pixel;
        std::copy(in + begin * pixel, in + end * pixel, line + begin * pixel);
      }
      std::fill(line + end * pixel, line + tw * pixel, E(0));
      continue;
    }
    for (int64_t tx = 0; tx < tw; ++tx) {
      if (tx >= begin && tx < end) {
        std::copy_n(image + (ty * image_w + tx) * pixel, width, line + tx * pixel);
      } else {
        std::fill_n(line + tx * pixel, width, E(0));
      }
    }
  }
}

at::Tensor gather_tiles_cpu(const at::Tensor& x_in, const at::Tensor& index_in,
                            at::IntArrayRef grid, at::IntArrayRef out_size, int64_t stride,
                            int64_t halo, int64_t num_segments, int64_t shift_div,
                            bool /*validate: the CPU reads the values anyway*/) {
  const TileGrid g = check_gather_tiles_args(x_in, index_in, grid, out_size, stride, halo,
                                             num_segments, shift_div);
  const auto format = memory_format_of(x_in);
  const at::Tensor x = x_in.contiguous(format);
  const at::Tensor index = index_in.contiguous();
  const int64_t count = index.size(0);
  const int64_t* idx = index.data_ptr<int64_t>();
  validate_index(tile_index_rule("gather_tiles", g, false), idx, count);

  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t th = g.y.tile(), tw = g.x.tile();
  at::Tensor out = at::empty({count, C, th, tw}, x.options().memory_format(format));
  const int64_t fold = shift_fold(C, shift_div);
  const bool last = format == at::MemoryFormat::ChannelsLast;
  with_element_bits(x.element_size(), [&](auto tag) {
    using E = decltype(tag);
    const E* xp = static_cast<const E*>(x.const_data_ptr());
    E* op = static_cast<E*>(out.data_ptr());
    // Input element (row, c) at the window's origin (it may lie outside the
    // image: only in-window offsets from it are read).
    const auto origin = [&](const TileWindow& w, int64_t row, int64_t c) {
      return last ? xp + ((row * H + w.oy) * W + w.ox) * C + c
                  : xp + ((row * C + c) * H + w.oy) * W + w.ox;
    };
    // Task k: a whole tile, in runs of channels read from one source row: one channel plane
    // at a time (contiguous), or a TSM class of channels at every pixel (channels_last).
    with_tile_geometry(g, [&](const auto& geometry) {
      parallel_tasks(count, C * th * tw, [&](int64_t k) {
        const TileWindow w = tile_window(geometry, idx[k]);
        const ShiftedRows sources =
            shifted_rows(w.row, fold > 0 && w.row >= 0 ? w.row % num_segments : 0, num_segments);
        for (int64_t c = 0; c < C;) {
          const int64_t stop = !last ? c + 1 : fold > 0 ? shift_class_end(c, fold, C) : C;
          const int64_t from = sources.of(c, fold);
          E* tile = last ? op + k * th * tw * C + c : op + (k * C + c) * th * tw;
          copy_window(tile, from < 0 ? xp : origin(w, from, c), w, th, tw, W,
                      last ? stop - c : 1, last ? C : 1, from >= 0);
          c = stop;
        }
      });
    });
  });
  return out;
}

// ---------------------------------------------------------------------------
// _gather_tiles_backward
// ---------------------------------------------------------------------------

// grad_x = the sum of every tile's gradient at the input pixels it read. One
// task owns one input row, and adds the tiles that read it in a fixed order
// (cell id, then index position), so the result is deterministic.
at::Tensor gather_tiles_backward_cpu(const at::Tensor& grad_in, const at::Tensor& index_in,
                                     at::IntArrayRef grid, at::IntArrayRef out_size,
                                     at::IntArrayRef in_size, int64_t num_rows, int64_t stride,
                                     int64_t halo, int64_t num_segments, int64_t shift_div,
                                     bool /*validate*/) {
  const TileGrid g = check_gather_tiles_backward_args(grad_in, index_in, grid, out_size, in_size,
                                                      num_rows, stride, halo, num_segments,
                                                      shift_div);
  const auto format = memory_format_of(grad_in);
  const at::Tensor grad = grad_in.contiguous(format);
  const at::Tensor index = index_in.contiguous();
  const int64_t count = index.size(0);
  const int64_t* idx = index.data_ptr<int64_t>();
  validate_index(tile_index_rule("_gather_tiles_backward", g, false), idx, count);
  const SlotReaders readers(idx, count, g.cell_count());

  const int64_t C = grad.size(1), H = in_size[0], W = in_size[1];
  const int64_t th = g.y.tile(), tw = g.x.tile();
  // at::zeros would drop the memory format.
  at::Tensor out = at::empty({num_rows, C, H, W}, grad.options().memory_format(format)).zero_();
  const int64_t fold = shift_fold(C, shift_div);
  const bool last = format == at::MemoryFormat::ChannelsLast;
  if (out.numel() == 0 || count == 0) return out;

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad.scalar_type(), "_gather_tiles_backward_cpu", [&] {
        const scalar_t* gp = grad.const_data_ptr<scalar_t>();
        scalar_t* xp = out.data_ptr<scalar_t>();
        // Adds tile k's window at channels [c0, c1) into input row r.
        const auto add_tile = [&](int64_t r, int64_t k, const TileWindow& w, int64_t c0,
                                  int64_t c1) {
          for (int64_t ty = w.y_begin; ty < w.y_end; ++ty) {
            const int64_t iy = w.oy + ty;
            if (last) {
              for (int64_t tx = w.x_begin; tx < w.x_end; ++tx) {
                accumulate_into(xp + ((r * H + iy) * W + w.ox + tx) * C + c0,
                    gp + ((k * th + ty) * tw + tx) * C + c0, c1 - c0);
              }
            } else {
              for (int64_t c = c0; c < c1; ++c) {
                accumulate_into(xp + ((r * C + c) * H + iy) * W + w.ox + w.x_begin,
                    gp + ((k * C + c) * th + ty) * tw + w.x_begin, w.x_end - w.x_begin);
              }
            }
          }
        };
        with_tile_geometry(g, [&](const auto& geometry) {
          at::parallel_for(0, num_rows, 1, [&](int64_t lo, int64_t hi) {
            for (int64_t r = lo; r < hi; ++r) {
              for (int64_t c0 = 0; c0 < C;) {
                const int64_t c1 = fold > 0 ? shift_class_end(c0, fold, C) : C;
                // The row whose tiles read row r at these channels.
                const int64_t reader = shifted_target_row(r, c0, fold, num_segments);
                for (int64_t cell = 0; reader >= 0 && cell < g.cells_per_row(); ++cell) {
                  const int64_t id = reader * g.cells_per_row() + cell;
                  const TileWindow w = tile_window(geometry, id);
                  for (int64_t j = readers.start[id]; j < readers.start[id + 1]; ++j) {
                    add_tile(r, readers.order[j], w, c0, c1);
                  }
                }
                c0 = c1;
              }
            }
          });
        });
      });
  return out;
}

// ---------------------------------------------------------------------------
// scatter_tiles
// ---------------------------------------------------------------------------

// out = base + (src tile pixel of the cell, or fill), ReLU last. Each output
// pixel row meets one row of cells; the positions in index of those cells come
// from the inverse map of cell ids, so every output element has one writer.
template <typename scalar_t, bool kRelu, typename Geometry>
void scatter_tile_rows(at::Tensor& out, const at::Tensor& base, const at::Tensor& src,
                       const std::vector<int64_t>& inverse, const std::optional<at::Tensor>& fill,
                       const TileGrid& g, const Geometry& geometry, bool last) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t C = base.size(1), H = base.size(2), W = base.size(3);
  const int64_t sh = g.y.size, sw = g.x.size;
  const scalar_t* bp = base.const_data_ptr<scalar_t>();
  const scalar_t* sp = src.const_data_ptr<scalar_t>();
  const scalar_t* fp = fill ? fill->const_data_ptr<scalar_t>() : nullptr;
  const bool per_channel = fill && fill->dim() == 1;
  scalar_t* op = out.data_ptr<scalar_t>();
  std::vector<int64_t> x_start(g.x.cells + 1);
  for (int64_t cx = 0; cx <= g.x.cells; ++cx) x_start[cx] = geometry.x.start(cx);

  // `count` elements from output offset o: base + (src at s, or the fill at
  // frame offset f, of `channel` when contiguous).
  const auto segment = [&](int64_t o, int64_t count, const scalar_t* s, int64_t f,
                           int64_t channel) {
    scalar_t* out_p = op + o;
    const scalar_t* base_p = bp + o;
    if (s != nullptr) {
      add_into<kRelu>(out_p, base_p, s, count);
    } else if (fp == nullptr) {
      copy_into<kRelu>(out_p, base_p, count);
    } else if (!per_channel) {
      add_into<kRelu>(out_p, base_p, fp + f, count);
    } else if (last) {
      for (int64_t p = 0; p < count; p += C) add_into<kRelu>(out_p + p, base_p + p, fp, C);
    } else {
      add_scalar_into<kRelu>(out_p, base_p, static_cast<opmath_t>(fp[channel]), count);
    }
  };
  if (last) {
    // Task: one output pixel row (r, y); each cell it meets is one run of n*C elements.
    parallel_tasks(base.size(0) * H, W * C, [&](int64_t task) {
      const int64_t r = task / H, y = task % H;
      const int64_t cy = geometry.y.cell(y), dy = y - geometry.y.start(cy);
      for (int64_t cx = 0; cx < g.x.cells; ++cx) {
        const int64_t k = inverse[geometry.id(r, cy, cx)];
        const int64_t x0 = x_start[cx], n = x_start[cx + 1] - x0;
        const int64_t o = ((r * H + y) * W + x0) * C;
        segment(o, n * C, k >= 0 ? sp + (k * sh + dy) * sw * C : nullptr, (y * W + x0) * C, 0);
      }
    });
    return;
  }
  // Contiguous: one task per channel plane (r, c). The whole plane gets the fill first, one
  // long vectorized run, then the computed cells overwrite their part, row by row. Runs of a
  // cell's width alone (often 2-7 elements) were 5-10x slower than channels_last.
  parallel_tasks(base.size(0) * C, H * W, [&](int64_t task) {
    const int64_t r = task / C, c = task % C;
    const int64_t plane = (r * C + c) * H * W;
    segment(plane, H * W, nullptr, c * H * W, c);
    for (int64_t cy = 0; cy < g.y.cells; ++cy) {
      for (int64_t cx = 0; cx < g.x.cells; ++cx) {
        const int64_t k = inverse[geometry.id(r, cy, cx)];
        if (k < 0) continue;
        const int64_t x0 = x_start[cx], n = x_start[cx + 1] - x0;
        const int64_t y0 = geometry.y.start(cy), y1 = geometry.y.start(cy + 1);
        for (int64_t y = y0, dy = 0; y < y1; ++y, ++dy) {
          segment(plane + y * W + x0, n, sp + ((k * C + c) * sh + dy) * sw, 0, c);
        }
      }
    }
  });
}

at::Tensor scatter_tiles_cpu(const at::Tensor& base_in, const at::Tensor& src_in,
                             const at::Tensor& index_in, at::IntArrayRef grid,
                             const std::optional<at::Tensor>& fill_in, bool relu,
                             bool /*validate: building the inverse checks every value*/) {
  const TileGrid g = check_scatter_tiles_args(base_in, src_in, index_in, grid, fill_in);
  const auto format = memory_format_of(base_in);
  const at::Tensor base = base_in.contiguous(format);
  const at::Tensor src = src_in.contiguous(format);
  const at::Tensor index = index_in.contiguous();
  const std::vector<int64_t> inverse = host_inverse(tile_index_rule("scatter_tiles", g, true),
                                                    index.data_ptr<int64_t>(), index.size(0));
  std::optional<at::Tensor> fill;
  if (fill_in.has_value() && fill_in->defined()) fill = fill_in_row_layout(*fill_in, format);
  at::Tensor out = at::empty_like(base, base.options().memory_format(format));
  const bool last = format == at::MemoryFormat::ChannelsLast;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, base.scalar_type(), "scatter_tiles_cpu", [&] {
        with_tile_geometry(g, [&](const auto& geometry) {
          if (relu) {
            scatter_tile_rows<scalar_t, true>(out, base, src, inverse, fill, g, geometry, last);
          } else {
            scatter_tile_rows<scalar_t, false>(out, base, src, inverse, fill, g, geometry, last);
          }
        });
      });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(afnet_kernels, CPU, m) {
  m.impl("gather_tiles", &gather_tiles_cpu);
  m.impl("_gather_tiles_backward", &gather_tiles_backward_cpu);
  m.impl("scatter_tiles", &scatter_tiles_cpu);
}

}  // namespace cpu
}  // namespace afnet_kernels

// Test hook, no op (tests/test_tile_ops.py calls it through ctypes): q[i] = n[i] / d and
// r[i] = n[i] % d by the FastDivmod of the tile kernels, for count dividends. Returns 0, or -1
// (computing nothing further) for a divisor or dividend outside [1 or 0, 2^31 - 1].
extern "C" __attribute__((visibility("default"))) int afnet_kernels_fast_divmod(
    const int64_t* n, int64_t count, int64_t d, int64_t* q, int64_t* r) {
  using afnet_kernels::kMaxIndex32;
  if (d < 1 || d > kMaxIndex32) return -1;
  const afnet_kernels::FastDivmod divider = afnet_kernels::make_fast_divmod(static_cast<uint32_t>(d));
  for (int64_t i = 0; i < count; ++i) {
    if (n[i] < 0 || n[i] > kMaxIndex32) return -1;
    uint32_t rem = 0;
    q[i] = divider.divmod(static_cast<uint32_t>(n[i]), &rem);
    r[i] = rem;
  }
  return 0;
}
