// Geometry of spatial cells and tiles, shared by the CPU and CUDA tile kernels.
//
// A block's output grid H_out x W_out is cut into Gh x Gw cells. Along an axis
// of length L with G cells (1 <= G <= L), cell i covers [floor(i*L/G),
// floor((i+1)*L/G)): the bins' starts of adaptive pooling, without overlap,
// sizes differing by at most one. S = ceil(L/G) is the padded cell size.
//
// A tile is the input window a cell's outputs read through a conv of stride s
// and `halo` pixels of reach: it starts at cell_start*s - halo and spans
// (S-1)*s + 1 + 2*halo input pixels. Input pixels outside the image are zeros
// (the conv's zero padding).
//
// Cell ids are flat: row*Gh*Gw + cy*Gw + cx, row = n*T + t.
#pragma once

#include <cstdint>

#include "common/indexing.h"

namespace afnet_kernels {

AFNET_HOST_DEVICE int64_t cell_start(int64_t i, int64_t length, int64_t cells) {
  return i * length / cells;
}

// The cell covering position p: the largest i with cell_start(i) <= p, i.e.
// i*L < (p+1)*G.
AFNET_HOST_DEVICE int64_t cell_of(int64_t p, int64_t length, int64_t cells) {
  return ((p + 1) * cells - 1) / length;
}

// Cells and tiles along one axis.
struct AxisTiling {
  int64_t length;   // output length L
  int64_t cells;    // G
  int64_t size;     // S = ceil(L/G)
  int64_t stride;   // conv stride s
  int64_t halo;     // conv reach beyond the cell, in input pixels
  int64_t in_size;  // input length (pixels outside [0, in_size) read as zero)

  AFNET_HOST_DEVICE int64_t start(int64_t i) const { return cell_start(i, length, cells); }
  AFNET_HOST_DEVICE int64_t cell(int64_t p) const { return cell_of(p, length, cells); }
  // Input pixels of a tile.
  AFNET_HOST_DEVICE int64_t tile() const { return (size - 1) * stride + 1 + 2 * halo; }
  // Input position of the first tile pixel of cell i.
  AFNET_HOST_DEVICE int64_t origin(int64_t i) const { return start(i) * stride - halo; }
  // Tile positions of cell i that lie inside the input: [valid_begin, valid_end).
  AFNET_HOST_DEVICE int64_t valid_begin(int64_t i) const {
    const int64_t o = origin(i);
    const int64_t t = tile();
    return o >= 0 ? 0 : (-o < t ? -o : t);
  }
  AFNET_HOST_DEVICE int64_t valid_end(int64_t i) const {
    const int64_t end = in_size - origin(i);
    const int64_t t = tile();
    return end < 0 ? 0 : (end < t ? end : t);
  }
};

AFNET_HOST_DEVICE int64_t ceil_div_i64(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The cell grid of one op call: both axes and the rows.
struct TileGrid {
  AxisTiling y, x;
  int64_t rows;  // R = N*T

  AFNET_HOST_DEVICE int64_t cells_per_row() const { return y.cells * x.cells; }
  AFNET_HOST_DEVICE int64_t cell_count() const { return rows * cells_per_row(); }
  AFNET_HOST_DEVICE int64_t id(int64_t row, int64_t cy, int64_t cx) const {
    return (row * y.cells + cy) * x.cells + cx;
  }
  // Splits a (non-padding) cell id into its row and cell coordinates.
  AFNET_HOST_DEVICE void decode(int64_t cell_id, int64_t* row, int64_t* cy, int64_t* cx) const {
    const int64_t per_row = cells_per_row();
    *row = cell_id / per_row;
    const int64_t in_row = cell_id - *row * per_row;
    *cy = in_row / x.cells;
    *cx = in_row - *cy * x.cells;
  }
};

// The part of a tile that lies inside the input: tile pixel (ty, tx) with
// ty in [y_begin, y_end) and tx in [x_begin, x_end) reads input pixel
// (oy + ty, ox + tx) of row `row` (before any TSM shift); the rest of the tile
// is zeros. A padding entry reads nothing (row -1, empty ranges).
struct TileWindow {
  int64_t row;
  int64_t oy, ox;
  int64_t y_begin, y_end, x_begin, x_end;

  AFNET_HOST_DEVICE bool contains(int64_t ty, int64_t tx) const {
    return ty >= y_begin && ty < y_end && tx >= x_begin && tx < x_end;
  }
};

AFNET_HOST_DEVICE TileWindow tile_window(const TileGrid& g, int64_t cell_id) {
  TileWindow w{kPadding, 0, 0, 0, 0, 0, 0};
  if (cell_id == kPadding) return w;
  int64_t cy, cx;
  g.decode(cell_id, &w.row, &cy, &cx);
  w.oy = g.y.origin(cy);
  w.ox = g.x.origin(cx);
  w.y_begin = g.y.valid_begin(cy);
  w.y_end = g.y.valid_end(cy);
  w.x_begin = g.x.valid_begin(cx);
  w.x_end = g.x.valid_end(cx);
  return w;
}

// The grid of an op: output size (H_out, W_out) cut into (Gh, Gw) cells,
// tiles for a conv of `stride` and `halo` over an (H_in, W_in) input.
AFNET_HOST_DEVICE TileGrid make_tile_grid(int64_t rows, int64_t cells_h, int64_t cells_w,
                                          int64_t out_h, int64_t out_w, int64_t in_h,
                                          int64_t in_w, int64_t stride, int64_t halo) {
  return {{out_h, cells_h, ceil_div_i64(out_h, cells_h), stride, halo, in_h},
          {out_w, cells_w, ceil_div_i64(out_w, cells_w), stride, halo, in_w},
          rows};
}

}  // namespace afnet_kernels
