// Host-side argument validation shared by the CPU and CUDA implementations.
//
// Every message names the op and the argument and gives what was expected and
// what was received. These checks only look at metadata (shapes, dtypes,
// devices), so they never touch device memory; index *values* are checked by
// common/validate.h.
#pragma once

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <optional>

#include <cstdint>
#include <string>

#include "common/tiles.h"
#include "common/validate.h"

namespace afnet_kernels {

// ---------------------------------------------------------------------------
// Memory format
// ---------------------------------------------------------------------------

// The layout the op works in and returns: channels_last when `t` is dense in
// it and not plain contiguous, contiguous otherwise (a tensor dense in both,
// e.g. C == 1 or H == W == 1, counts as contiguous). The Python fake kernels
// apply the same rule, so fake and real strides agree.
inline at::MemoryFormat memory_format_of(const at::Tensor& t) {
  if (t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    return at::MemoryFormat::ChannelsLast;
  }
  return at::MemoryFormat::Contiguous;
}

// `t` made dense in `format` (no copy when it already is).
inline at::Tensor dense_in(const at::Tensor& t, at::MemoryFormat format) {
  return t.contiguous(format);
}

// ---------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------

inline void check_defined(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, got an undefined tensor");
}

inline void check_dim(const char* op, const at::Tensor& t, const char* name, int64_t dim,
                      const char* shape) {
  check_defined(op, t, name);
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must be ", dim, "-D ", shape, ", got ", t.dim(),
              "-D tensor of shape ", t.sizes());
}

inline void check_floating(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": ", name,
              " must be a floating-point tensor (Float, Double, Half or BFloat16), got ",
              t.scalar_type());
}

inline void check_same_device(const char* op, const at::Tensor& t, const char* name,
                              const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on the same device as ",
              ref_name, " (", ref.device(), "), got ", t.device());
}

inline void check_same_dtype(const char* op, const at::Tensor& t, const char* name,
                             const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name,
              " must have the same dtype as ", ref_name, " (", ref.scalar_type(), "), got ",
              t.scalar_type());
}

// t.size(dim) == ref.size(ref_dim), with a message naming both.
inline void check_same_size(const char* op, const at::Tensor& t, const char* name, int64_t dim,
                            const at::Tensor& ref, const char* ref_name, int64_t ref_dim,
                            const char* what) {
  TORCH_CHECK(t.size(dim) == ref.size(ref_dim), op, ": ", name, " must have ", what, "=",
              ref.size(ref_dim), " like ", ref_name, " (shape ", ref.sizes(), "), got ",
              t.size(dim), " (shape ", t.sizes(), ")");
}

// index: 1-D int64 on the device of `x`.
inline void check_index_tensor(const char* op, const at::Tensor& index, const at::Tensor& x,
                               const char* x_name) {
  check_dim(op, index, "index", 1, "[K]");
  TORCH_CHECK(index.scalar_type() == at::kLong, op, ": index must be int64 (Long), got ",
              index.scalar_type());
  check_same_device(op, index, "index", x, x_name);
}

inline void check_segments(const char* op, int64_t rows, const char* rows_name,
                           int64_t num_segments, int64_t shift_div) {
  TORCH_CHECK(num_segments >= 0, op, ": num_segments must be >= 0, got ", num_segments);
  TORCH_CHECK(shift_div >= 0, op, ": shift_div must be >= 0, got ", shift_div);
  TORCH_CHECK(shift_div == 0 || num_segments > 0, op,
              ": shift_div > 0 requires num_segments > 0 (the clip length T), got num_segments=",
              num_segments, " with shift_div=", shift_div);
  TORCH_CHECK(num_segments == 0 || rows % num_segments == 0, op, ": ", rows_name, "=", rows,
              " is not divisible by num_segments=", num_segments);
}

// Channels moved by the TSM shift in each direction (0 = no shift).
inline int64_t shift_fold(int64_t channels, int64_t shift_div) {
  return shift_div > 0 ? channels / shift_div : 0;
}

// ---------------------------------------------------------------------------
// Per-op checks
// ---------------------------------------------------------------------------

// mask [N, T] bool / integer / floating (nonzero = selected).
inline void check_select_args(const at::Tensor& mask, std::optional<int64_t> num_selected) {
  constexpr const char* op = "select_frames";
  check_dim(op, mask, "mask", 2, "[N, T]");
  TORCH_CHECK(mask.scalar_type() == at::kBool || at::isIntegralType(mask.scalar_type(), false) ||
                  at::isFloatingType(mask.scalar_type()),
              op, ": mask must be bool or 0/1 numbers, got ", mask.scalar_type());
  if (num_selected.has_value()) {
    TORCH_CHECK(*num_selected >= 0, op, ": num_selected must be >= 0 (or None), got ",
                *num_selected);
  }
}

// What every gather (frames or tiles) checks of its input: x 4-D `shape`
// floating, index [K] int64 on x's device, and the TSM shift over x's rows.
inline void check_gather_input(const char* op, const at::Tensor& x, const char* shape,
                               const at::Tensor& index, int64_t num_segments, int64_t shift_div) {
  check_dim(op, x, "x", 4, shape);
  check_floating(op, x, "x");
  check_index_tensor(op, index, x, "x");
  check_segments(op, x.size(0), "x.size(0)", num_segments, shift_div);
}

// What every gather backward checks: grad 4-D `shape` floating with one
// `noun` ("rows", "tiles") per index entry, summed into num_rows >= 0 rows.
inline void check_gather_grad(const char* op, const at::Tensor& grad, const char* shape,
                              const char* noun, const at::Tensor& index, int64_t num_rows,
                              int64_t num_segments, int64_t shift_div) {
  check_dim(op, grad, "grad", 4, shape);
  check_floating(op, grad, "grad");
  check_index_tensor(op, index, grad, "grad");
  TORCH_CHECK(grad.size(0) == index.size(0), op, ": grad has ", grad.size(0), " ", noun,
              " but index has ", index.size(0), " entries");
  TORCH_CHECK(num_rows >= 0, op, ": num_rows must be >= 0, got ", num_rows);
  check_segments(op, num_rows, "num_rows", num_segments, shift_div);
}

// x [N*T, C, H, W] floating, index [K] int64 on x's device.
inline void check_gather_args(const at::Tensor& x, const at::Tensor& index, int64_t num_segments,
                              int64_t shift_div) {
  check_gather_input("gather_frames", x, "[N*T, C, H, W]", index, num_segments, shift_div);
}

// grad [K, C, H, W], index [K] -> [num_rows, C, H, W].
inline void check_gather_backward_args(const at::Tensor& grad, const at::Tensor& index,
                                       int64_t num_rows, int64_t num_segments, int64_t shift_div) {
  check_gather_grad("_gather_frames_backward", grad, "[K, C, H, W]", "rows", index, num_rows,
                    num_segments, shift_div);
}

// fill None / [C] / [C, H, W] on base's device and dtype.
inline void check_fill(const char* op, const std::optional<at::Tensor>& fill,
                       const at::Tensor& base) {
  if (!fill.has_value() || !fill->defined()) return;
  const at::Tensor& f = *fill;
  check_same_device(op, f, "fill", base, "base");
  check_same_dtype(op, f, "fill", base, "base");
  const bool per_channel = f.dim() == 1 && f.size(0) == base.size(1);
  const bool per_element = f.dim() == 3 && f.size(0) == base.size(1) &&
                           f.size(1) == base.size(2) && f.size(2) == base.size(3);
  TORCH_CHECK(per_channel || per_element, op, ": fill must be [C]=[", base.size(1),
              "] or [C, H, W]=[", base.size(1), ", ", base.size(2), ", ", base.size(3),
              "] for base of shape ", base.sizes(), ", got shape ", f.sizes());
}

// base [N*T, C, H, W], src [K, C, H, W], index [K], fill None / [C] / [C, H, W]:
// the checks of scatter_frames and (op = "scatter_frames_") of its in-place twin.
inline void check_scatter_args(const char* op, const at::Tensor& base, const at::Tensor& src,
                               const at::Tensor& index, const std::optional<at::Tensor>& fill) {
  check_dim(op, base, "base", 4, "[N*T, C, H, W]");
  check_floating(op, base, "base");
  check_dim(op, src, "src", 4, "[K, C, H, W]");
  check_same_device(op, src, "src", base, "base");
  check_same_dtype(op, src, "src", base, "base");
  check_index_tensor(op, index, base, "base");
  TORCH_CHECK(src.size(0) == index.size(0), op, ": src has ", src.size(0),
              " rows but index has ", index.size(0), " entries");
  check_same_size(op, src, "src", 1, base, "base", 1, "C");
  check_same_size(op, src, "src", 2, base, "base", 2, "H");
  check_same_size(op, src, "src", 3, base, "base", 3, "W");
  check_fill(op, fill, base);
}

// scatter_frames_: the checks of scatter_frames, and a base that can hold the
// result (reference.py's scatter_frames_ raises the same message).
inline void check_scatter_inplace_args(const at::Tensor& base, const at::Tensor& src,
                                       const at::Tensor& index,
                                       const std::optional<at::Tensor>& fill) {
  constexpr const char* op = "scatter_frames_";
  check_scatter_args(op, base, src, index, fill);
  TORCH_CHECK(at::has_internal_overlap(base) != at::MemOverlap::Yes, op,
              ": base has elements that share memory (an expanded or overlapping view of shape ",
              base.sizes(), " and strides ", base.strides(),
              "), so it cannot hold the result; pass base.clone(), or use the out-of-place "
              "scatter_frames");
}

// Whether scatter_frames_ may write its rows straight into `base`: base is
// dense in its memory format (`base_dense`, what the kernel reads as base, is
// base itself) and shares no memory with what the kernel reads besides
// (`src_dense`, and `fill_read` or an undefined tensor), so that every element
// of base is read once and then written once, by the same thread, and no read
// sees a written value. Otherwise the kernel writes a dense tensor of its own
// and copies it into base: the same result, one more pass.
inline bool can_scatter_in_place(const at::Tensor& base, const at::Tensor& base_dense,
                                 const at::Tensor& src_dense, const at::Tensor& fill_read) {
  if (!base_dense.is_same(base)) return false;
  const auto shares_memory = [&](const at::Tensor& t) {
    return t.defined() && at::get_overlap_status(base, t) != at::MemOverlapStatus::No;
  };
  return !shares_memory(src_dense) && !shares_memory(fill_read);
}

// theta [N*T, C] or [N*T, C, 1, 1] on focal's device and dtype.
inline void check_theta(const char* op, const at::Tensor& theta, const at::Tensor& focal) {
  check_defined(op, theta, "theta");
  check_same_device(op, theta, "theta", focal, "focal");
  check_same_dtype(op, theta, "theta", focal, "focal");
  const bool ok = (theta.dim() == 2 || (theta.dim() == 4 && theta.size(2) == 1 &&
                                        theta.size(3) == 1)) &&
                  theta.size(0) == focal.size(0) && theta.size(1) == focal.size(1);
  TORCH_CHECK(ok, op, ": theta must be [N*T, C]=[", focal.size(0), ", ", focal.size(1),
              "] or [N*T, C, 1, 1], got shape ", theta.sizes());
}

// ample [N*T, C, h, w], focal [N*T, C, H, W] (h, w, H, W > 0 unless N*T*C == 0).
inline void check_branch_pair(const char* op, const at::Tensor& ample, const at::Tensor& focal) {
  check_dim(op, ample, "ample", 4, "[N*T, C, h, w]");
  check_dim(op, focal, "focal", 4, "[N*T, C, H, W]");
  check_floating(op, focal, "focal");
  check_same_device(op, ample, "ample", focal, "focal");
  check_same_dtype(op, ample, "ample", focal, "focal");
  check_same_size(op, ample, "ample", 0, focal, "focal", 0, "N*T");
  check_same_size(op, ample, "ample", 1, focal, "focal", 1, "C");
  TORCH_CHECK(focal.numel() == 0 || (ample.size(2) > 0 && ample.size(3) > 0), op,
              ": ample must have a non-empty spatial size to upsample from, got shape ",
              ample.sizes());
}

inline void check_blend_args(const at::Tensor& ample, const at::Tensor& focal,
                             const at::Tensor& theta) {
  constexpr const char* op = "blend_branches";
  check_branch_pair(op, ample, focal);
  check_theta(op, theta, focal);
}

inline void check_blend_backward_args(const at::Tensor& grad, const at::Tensor& out,
                                      const at::Tensor& ample, const at::Tensor& focal,
                                      const at::Tensor& theta) {
  constexpr const char* op = "_blend_branches_backward";
  check_branch_pair(op, ample, focal);
  check_theta(op, theta, focal);
  const auto check_like_focal = [&](const at::Tensor& t, const char* name) {
    check_dim(op, t, name, 4, "[N*T, C, H, W]");
    check_same_device(op, t, name, focal, "focal");
    check_same_dtype(op, t, name, focal, "focal");
    TORCH_CHECK(t.sizes() == focal.sizes(), op, ": ", name, " must have the shape of focal ",
                focal.sizes(), ", got ", t.sizes());
  };
  check_like_focal(grad, "grad");
  check_like_focal(out, "out");
}

inline void check_pool_args(const at::Tensor& ample, const at::Tensor& focal) {
  check_branch_pair("pool_branches", ample, focal);
}


// ---------------------------------------------------------------------------
// Index rules (values are checked by common/validate.h)
// ---------------------------------------------------------------------------

// Frame ops: index values name rows of a [rows, C, H, W] tensor.
inline IndexRule frame_index_rule(const char* op, int64_t rows, const char* rows_what,
                                  bool distinct) {
  return {op, "row", rows, rows_what, distinct};
}

// Tile ops: index values name cells row*Gh*Gw + cy*Gw + cx.
inline IndexRule tile_index_rule(const char* op, const TileGrid& grid, bool distinct) {
  const std::string what = "rows x Gh x Gw = " + std::to_string(grid.rows) + " x " +
                           std::to_string(grid.y.cells) + " x " + std::to_string(grid.x.cells);
  return {op, "cell", grid.cell_count(), what, distinct};
}

// ---------------------------------------------------------------------------
// Tile ops
// ---------------------------------------------------------------------------

// A pair argument (int[2] in the schema): exactly two values.
inline void check_pair(const char* op, at::IntArrayRef pair, const char* name) {
  TORCH_CHECK(pair.size() == 2, op, ": ", name, " must have 2 values (height, width), got ",
              pair.size(), " values ", pair);
}

// 1 <= grid <= out_size along both axes; stride >= 1; halo >= 0.
// `size_name` says where out_size comes from.
inline void check_tiling(const char* op, at::IntArrayRef grid, at::IntArrayRef out_size,
                         const char* size_name, int64_t stride, int64_t halo) {
  check_pair(op, grid, "grid");
  check_pair(op, out_size, size_name);
  TORCH_CHECK(out_size[0] >= 1 && out_size[1] >= 1, op, ": ", size_name,
              " must be >= 1 along both axes, got ", out_size);
  TORCH_CHECK(grid[0] >= 1 && grid[1] >= 1 && grid[0] <= out_size[0] && grid[1] <= out_size[1],
              op, ": grid must satisfy 1 <= grid <= ", size_name,
              " along both axes (at least one pixel per cell), got grid=", grid, " for ",
              size_name, "=", out_size);
  TORCH_CHECK(stride >= 1, op, ": stride must be >= 1, got ", stride);
  TORCH_CHECK(halo >= 0, op, ": halo must be >= 0, got ", halo);
}

// x [R, C, H_in, W_in], index [K] int64; returns the op's grid.
inline TileGrid check_gather_tiles_args(const at::Tensor& x, const at::Tensor& index,
                                        at::IntArrayRef grid, at::IntArrayRef out_size,
                                        int64_t stride, int64_t halo, int64_t num_segments,
                                        int64_t shift_div) {
  constexpr const char* op = "gather_tiles";
  check_gather_input(op, x, "[N*T, C, H_in, W_in]", index, num_segments, shift_div);
  check_tiling(op, grid, out_size, "out_size", stride, halo);
  return make_tile_grid(x.size(0), grid[0], grid[1], out_size[0], out_size[1], x.size(2),
                        x.size(3), stride, halo);
}

// grad [K, C, Th, Tw] -> [num_rows, C, H_in, W_in]; returns the op's grid.
inline TileGrid check_gather_tiles_backward_args(const at::Tensor& grad, const at::Tensor& index,
                                                 at::IntArrayRef grid, at::IntArrayRef out_size,
                                                 at::IntArrayRef in_size, int64_t num_rows,
                                                 int64_t stride, int64_t halo,
                                                 int64_t num_segments, int64_t shift_div) {
  constexpr const char* op = "_gather_tiles_backward";
  check_gather_grad(op, grad, "[K, C, Th, Tw]", "tiles", index, num_rows, num_segments, shift_div);
  check_tiling(op, grid, out_size, "out_size", stride, halo);
  check_pair(op, in_size, "in_size");
  TORCH_CHECK(in_size[0] >= 0 && in_size[1] >= 0, op, ": in_size must be >= 0, got ", in_size);
  const TileGrid g = make_tile_grid(num_rows, grid[0], grid[1], out_size[0], out_size[1],
                                    in_size[0], in_size[1], stride, halo);
  TORCH_CHECK(grad.size(2) == g.y.tile() && grad.size(3) == g.x.tile(), op,
              ": grad must have tiles of [Th, Tw]=[", g.y.tile(), ", ", g.x.tile(),
              "] for grid=", grid, ", out_size=", out_size, ", stride=", stride, ", halo=", halo,
              ", got shape ", grad.sizes());
  return g;
}

// base [R, C, H_out, W_out], src [K, C, Sh, Sw], index [K], fill None/[C]/[C, H_out, W_out].
inline TileGrid check_scatter_tiles_args(const at::Tensor& base, const at::Tensor& src,
                                         const at::Tensor& index, at::IntArrayRef grid,
                                         const std::optional<at::Tensor>& fill) {
  constexpr const char* op = "scatter_tiles";
  check_dim(op, base, "base", 4, "[N*T, C, H_out, W_out]");
  check_floating(op, base, "base");
  check_dim(op, src, "src", 4, "[K, C, Sh, Sw]");
  check_same_device(op, src, "src", base, "base");
  check_same_dtype(op, src, "src", base, "base");
  check_index_tensor(op, index, base, "base");
  const std::vector<int64_t> out_size = {base.size(2), base.size(3)};
  check_tiling(op, grid, out_size, "base's (H_out, W_out)", 1, 0);
  const TileGrid g = make_tile_grid(base.size(0), grid[0], grid[1], base.size(2), base.size(3),
                                    base.size(2), base.size(3), 1, 0);
  TORCH_CHECK(src.size(0) == index.size(0) && src.size(1) == base.size(1) &&
                  src.size(2) == g.y.size && src.size(3) == g.x.size,
              op, ": src must be [K, C, Sh, Sw]=[", index.size(0), ", ", base.size(1), ", ",
              g.y.size, ", ", g.x.size, "] (K index entries, base's C, Sh = ceil(H_out/Gh), "
              "Sw = ceil(W_out/Gw) for grid=", grid, "), got shape ", src.sizes());
  check_fill(op, fill, base);
  return g;
}

}  // namespace afnet_kernels
