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
//
// The geometry comes in two forms: TileGrid, in 64 bits, and FastTileGrid, its
// divisions in 32 bits by divisors fixed when the op is called (FastDivmod: a
// multiply-high and a shift instead of a division). The CUDA kernels use the
// fast form and refuse sizes it cannot hold; the CPU kernels use it whenever it
// holds the sizes (short of 2^31 cells, always), so the CPU tests run the cell
// arithmetic the GPU runs, and fall back to TileGrid otherwise.
#pragma once

#include <cstdint>
#include <optional>

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
  AFNET_HOST_DEVICE int64_t origin(int64_t i) const { return origin_at(start(i)); }
  // Tile positions of cell i that lie inside the input: [valid_begin, valid_end).
  AFNET_HOST_DEVICE int64_t valid_begin(int64_t i) const { return valid_begin_at(origin(i)); }
  AFNET_HOST_DEVICE int64_t valid_end(int64_t i) const { return valid_end_at(origin(i)); }

  // The same from the cell's start s (output position) or its tile's origin o
  // (input position): no division, for either form of the geometry.
  AFNET_HOST_DEVICE int64_t origin_at(int64_t s) const { return s * stride - halo; }
  AFNET_HOST_DEVICE int64_t valid_begin_at(int64_t o) const {
    const int64_t t = tile();
    return o >= 0 ? 0 : (-o < t ? -o : t);
  }
  AFNET_HOST_DEVICE int64_t valid_end_at(int64_t o) const {
    const int64_t end = in_size - o;
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

// The window of the tile of the cell of row `row` that starts at output pixel
// (y_start, x_start).
AFNET_HOST_DEVICE TileWindow tile_window_at(const TileGrid& g, int64_t row, int64_t y_start,
                                            int64_t x_start) {
  TileWindow w;
  w.row = row;
  w.oy = g.y.origin_at(y_start);
  w.ox = g.x.origin_at(x_start);
  w.y_begin = g.y.valid_begin_at(w.oy);
  w.y_end = g.y.valid_end_at(w.oy);
  w.x_begin = g.x.valid_begin_at(w.ox);
  w.x_end = g.x.valid_end_at(w.ox);
  return w;
}

AFNET_HOST_DEVICE TileWindow tile_window(const TileGrid& g, int64_t cell_id) {
  if (cell_id == kPadding) return TileWindow{kPadding, 0, 0, 0, 0, 0, 0};
  int64_t row, cy, cx;
  g.decode(cell_id, &row, &cy, &cx);
  return tile_window_at(g, row, g.y.start(cy), g.x.start(cx));
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


// ---------------------------------------------------------------------------
// The geometry in 32 bits
// ---------------------------------------------------------------------------

// The bound of every dividend, divisor and index of the 32-bit arithmetic.
constexpr int64_t kMaxIndex32 = 2147483647;  // 2^31 - 1

// n / d and n % d for 0 <= n <= 2^31 - 1 and a divisor 1 <= d <= 2^31 - 1
// fixed in advance (make_fast_divmod), as a multiply-high, an add and a shift
// (Granlund & Montgomery 1994; PyTorch's IntDivider). With s = ceil(log2 d)
// and m = floor(2^32 * (2^s - d) / d) + 1 (< 2^32), M = 2^32 + m is
// floor(2^(32+s) / d) + 1 = (2^(32+s) + e) / d with 0 < e <= d, so
// n*M / 2^(32+s) = n/d + n*e / (d * 2^(32+s)), and the error term is below
// 1/d because n*e < 2^32 * 2^s: the floor is n / d. That floor equals
// (mulhi(n, m) + n) >> s, mulhi(n, m) = floor(n*m / 2^32) < n, so the sum
// stays below 2^32 while n < 2^31. The host takes mulhi from a 64-bit product,
// the device from __umulhi: the same value, so the CPU tests check the
// arithmetic the GPU runs.
struct FastDivmod {
  uint32_t divisor;
  uint32_t multiplier;
  uint32_t shift;

  AFNET_HOST_DEVICE uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t high = __umulhi(n, multiplier);
#else
    const uint32_t high = static_cast<uint32_t>((static_cast<uint64_t>(n) * multiplier) >> 32);
#endif
    return (high + n) >> shift;
  }
  AFNET_HOST_DEVICE uint32_t mod(uint32_t n) const { return n - div(n) * divisor; }
  // Returns n / d and stores n % d in *rem.
  AFNET_HOST_DEVICE uint32_t divmod(uint32_t n, uint32_t* rem) const {
    const uint32_t q = div(n);
    *rem = n - q * divisor;
    return q;
  }
};

// The FastDivmod of d, 1 <= d <= 2^31 - 1 (the caller checks). Host code.
inline FastDivmod make_fast_divmod(uint32_t d) {
  uint32_t shift = 0;
  while ((uint64_t{1} << shift) < d) ++shift;
  // 2^s - d < 2^(s-1) <= 2^30, so the product stays below 2^62.
  const uint64_t magic = ((uint64_t{1} << 32) * ((uint64_t{1} << shift) - d)) / d + 1;
  return {d, static_cast<uint32_t>(magic), shift};
}

// cell_start and cell_of of one axis in 32 bits. Valid while G * L <= 2^31 - 1,
// which bounds both dividends: i * L <= G * L for i <= G, and
// (p + 1) * G - 1 < L * G for p < L.
struct FastAxis {
  uint32_t length;  // L
  uint32_t cells;   // G
  FastDivmod by_length, by_cells;

  // cell_start(i) = i * L / G, for i <= G.
  AFNET_HOST_DEVICE uint32_t start(uint32_t i) const { return by_cells.div(i * length); }
  // cell_of(p) = ((p + 1) * G - 1) / L, for p < L.
  AFNET_HOST_DEVICE uint32_t cell(uint32_t p) const { return by_length.div((p + 1) * cells - 1); }
};

// TileGrid with its divisions in 32 bits (fast_tile_grid says when it holds
// the sizes): cell ids below rows * Gh * Gw <= 2^31 - 1, axes as FastAxis.
struct FastTileGrid {
  TileGrid grid;  // the same geometry in 64 bits: sizes, and tile arithmetic without division
  FastAxis y, x;
  FastDivmod by_row_cells;  // Gh * Gw
  FastDivmod by_x_cells;    // Gw
  uint32_t cell_count;      // rows * Gh * Gw

  // TileGrid::decode of a cell id < cell_count.
  AFNET_HOST_DEVICE void decode(uint32_t cell_id, uint32_t* row, uint32_t* cy,
                                uint32_t* cx) const {
    uint32_t in_row;
    *row = by_row_cells.divmod(cell_id, &in_row);
    *cy = by_x_cells.divmod(in_row, cx);
  }
  // TileGrid::id of a cell (row < rows, cy < Gh, cx < Gw): below cell_count, as are
  // the partial results.
  AFNET_HOST_DEVICE uint32_t id(uint32_t row, uint32_t cy, uint32_t cx) const {
    return (row * y.cells + cy) * x.cells + cx;
  }
};

// Whether a * b <= 2^31 - 1, for a, b >= 0, without overflow.
inline bool product_fits_32(int64_t a, int64_t b) {
  return a >= 0 && b >= 0 && (b == 0 || a <= kMaxIndex32 / b);
}

// The 32-bit form of g, or nothing when it cannot hold g's sizes: it needs
// rows * Gh * Gw cells and Gh * H_out, Gw * W_out (the dividends of cell_start
// and cell_of) at most 2^31 - 1. Host code.
inline std::optional<FastTileGrid> fast_tile_grid(const TileGrid& g) {
  const auto axis_fits = [](const AxisTiling& a) {
    return a.cells >= 1 && a.length >= 1 && product_fits_32(a.cells, a.length);
  };
  if (!axis_fits(g.y) || !axis_fits(g.x)) return std::nullopt;
  const int64_t per_row = g.y.cells * g.x.cells;  // both below 2^31: no overflow
  if (per_row > kMaxIndex32 || !product_fits_32(g.rows, per_row)) return std::nullopt;
  const auto axis = [](const AxisTiling& a) {
    const auto length = static_cast<uint32_t>(a.length), cells = static_cast<uint32_t>(a.cells);
    return FastAxis{length, cells, make_fast_divmod(length), make_fast_divmod(cells)};
  };
  return FastTileGrid{g,
                      axis(g.y),
                      axis(g.x),
                      make_fast_divmod(static_cast<uint32_t>(per_row)),
                      make_fast_divmod(static_cast<uint32_t>(g.x.cells)),
                      static_cast<uint32_t>(g.rows * per_row)};
}

// tile_window through the 32-bit divisions: cell_id is -1 or below cell_count.
AFNET_HOST_DEVICE TileWindow tile_window(const FastTileGrid& g, int64_t cell_id) {
  if (cell_id == kPadding) return TileWindow{kPadding, 0, 0, 0, 0, 0, 0};
  uint32_t row, cy, cx;
  g.decode(static_cast<uint32_t>(cell_id), &row, &cy, &cx);
  return tile_window_at(g.grid, row, g.y.start(cy), g.x.start(cx));
}

// ---------------------------------------------------------------------------
// TSM shift of a tile
// ---------------------------------------------------------------------------

// What the three TSM channel classes of output row `row` read, as
// shifted_source_row gives it: channels [0, fold) row + 1, [fold, 2*fold)
// row - 1, the rest `row` (-1: zeros, at a clip edge or for padding). It takes
// t = row % num_segments from the caller, so that a kernel divides once per
// tile rather than once per channel.
struct ShiftedRows {
  int64_t next, previous, same;

  AFNET_HOST_DEVICE int64_t of(int64_t c, int64_t fold) const {
    return c < fold ? next : (c < 2 * fold ? previous : same);
  }
};

AFNET_HOST_DEVICE ShiftedRows shifted_rows(int64_t row, int64_t t, int64_t num_segments) {
  if (row < 0) return ShiftedRows{kPadding, kPadding, kPadding};
  return ShiftedRows{t + 1 < num_segments ? row + 1 : kPadding, t > 0 ? row - 1 : kPadding, row};
}

}  // namespace afnet_kernels
