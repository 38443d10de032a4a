"""Pure-PyTorch reference of every ``afnet_kernels`` op.

These functions are the test oracle for the C++/CUDA kernels and the fallback
when the compiled library is missing. They are written for clarity, not speed,
and build every intermediate the kernels avoid (the shifted tensor, the
upsampled ample branch). Their signatures, padding semantics and index
validation (with the same messages) are those of ``afnet_kernels.ops``, so the
two modules can be swapped.

Layout convention: a clip batch of ``N`` videos with ``T`` frames is stored
frame-major as ``[N*T, C, H, W]``, row ``n*T + t``.

Index tensors: int64, ``-1`` is padding (a zero row or tile for gathers,
nothing for scatters). ``validate=True`` checks the other values with one host
read; ``validate=False`` reads nothing back (the functions stay traceable by
``torch.compile(fullgraph=True)`` and ``torch.export``) and leaves bad values to
PyTorch's own index checks.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = [
    "PADDING",
    "memory_format",
    "select_frames",
    "temporal_shift",
    "gather_frames",
    "scatter_frames",
    "scatter_frames_",
    "upsample_nearest",
    "blend_branches",
    "pool_branches",
    "cell_bounds",
    "cell_of_position",
    "gather_tiles",
    "scatter_tiles",
    "tile_valid_mask",
    "tile_extent_mask",
    "tile_of_pixel",
    "inverse_index",
]

PADDING = -1
Pair = Union[int, Sequence[int]]


# --- index validation (the messages of csrc/common/validate.h) -----------------------------


def _check_index(
    op: str, index: torch.Tensor, limit: int, limit_what: str, *, distinct: bool, noun: str = "row"
) -> None:
    """Raises at the first bad entry in index order: out of range, or repeated (``distinct``)."""
    first_seen = {}
    for k, value in enumerate(index.tolist()):
        if value == PADDING:
            continue
        if not 0 <= value < limit:
            raise RuntimeError(
                f"{op}: index[{k}]={value} is out of range: expected -1 (padding) or "
                f"0 <= index < {limit} ({limit_what})"
            )
        if distinct:
            if value in first_seen:
                raise RuntimeError(
                    f"{op}: index must be distinct (apart from -1 padding), got {noun} {value} "
                    f"at index[{first_seen[value]}] and index[{k}]"
                )
            first_seen[value] = k


def check_unpadded(op: str, index: torch.Tensor) -> None:
    """Raises if ``index`` holds a padding entry although the caller said it has none
    (``padded=False``). A host read, as every ``validate`` check."""
    padding = (index == PADDING).nonzero()
    if padding.numel():
        raise RuntimeError(
            f"{op}: index[{int(padding[0])}]=-1 is padding, but padded=False says the index has none; "
            f"pass padded=True (the default) for an index with -1 entries"
        )


def _check_num_selected(num_selected: int, count: int, rows: int) -> None:
    if num_selected < count:
        raise RuntimeError(
            f"select_frames: num_selected={num_selected} is smaller than the number of frames the "
            f"mask selects ({count} of {rows}); pass None, or a value >= {count} (entries past "
            f"{count} are -1 padding)"
        )


def _tile_rule(rows: int, grid: Tuple[int, int]) -> Tuple[int, str]:
    gh, gw = grid
    return rows * gh * gw, f"rows x Gh x Gw = {rows} x {gh} x {gw}"


def _pair(value: Pair, name: str) -> Tuple[int, int]:
    """``value`` as ``(height, width)``: one int for both, or two ints."""
    if isinstance(value, int):
        return value, value
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or 2 ints (height, width), got {value!r}")
    return pair  # type: ignore[return-value]


# --- layout ------------------------------------------------------------------------------------


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """The layout the ops return for input ``x``: channels_last when ``x`` is
    dense in it and not plain contiguous, contiguous otherwise."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _like(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out`` in the memory format of ``x`` (see ``memory_format``)."""
    fmt = memory_format(x)
    if out.numel() == 0:
        # An empty tensor counts as dense in every layout, so .contiguous() would keep whatever
        # strides it has; give it those of the format (copy_ keeps the autograd graph).
        return torch.empty_like(out, memory_format=fmt).copy_(out)
    return out.contiguous(memory_format=fmt)


def inverse_index(index: torch.Tensor, slots: int) -> torch.Tensor:
    """int64 ``[slots]``: the position ``k`` of each slot (row or cell) in ``index``, or -1.

    Built with tensor ops only (no host read): padding entries land in an extra slot that is
    dropped. For distinct indices; a repeated slot keeps one of its positions.
    """
    inverse = torch.full((slots + 1,), -1, dtype=torch.int64, device=index.device)
    target = torch.where(index == PADDING, slots, index)
    positions = torch.arange(index.numel(), dtype=torch.int64, device=index.device)
    return inverse.index_copy_(0, target, positions)[:slots]


# --- frames ------------------------------------------------------------------------------------


def select_frames(
    mask: torch.Tensor, num_selected: Optional[int] = None, *, validate: bool = True
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Indices of the selected frames.

    Args:
        mask: ``[N, T]``, bool or 0/1.
        num_selected: ``K'``, the length of ``index``; must be >= the number ``K`` of
            selected frames, and entries past ``K`` are -1 (padding-bucket mode).
            None: ``K' = K`` (a host read).
        validate: check ``num_selected >= K`` (a host read). Without it and with
            ``num_selected`` given, nothing is read back: the check still runs, at once on the
            CPU and as a device-side assert on CUDA (outside a traced graph).

    Returns:
        ``index``: int64 ``[K']``, the selected rows ``n*T + t`` in ascending order, then -1.
        ``inverse``: int64 ``[N*T]``, each row's position in ``index`` or -1.
    """
    if num_selected is not None and num_selected < 0:
        raise RuntimeError(f"select_frames: num_selected must be >= 0 (or None), got {num_selected}")
    flat = mask.reshape(-1) != 0
    rows = flat.numel()
    inverse = torch.where(flat, flat.cumsum(0) - 1, PADDING)
    if num_selected is None or validate:
        count = int(flat.sum())
        if num_selected is not None:
            _check_num_selected(num_selected, count, rows)
        length = count if num_selected is None else num_selected
    else:
        length = num_selected
        if not torch.compiler.is_compiling():
            # Never truncate silently: dropping selected rows would hand other rows F(0). As the
            # kernels do without validate, the check runs where the data is: at once on the CPU,
            # as a device-side assert on CUDA (no host sync). A traced graph (compile, export)
            # runs only with counts that are static by construction (budgets, fixed policies).
            torch._assert_async(
                flat.sum() <= num_selected,
                f"select_frames: num_selected={num_selected} is smaller than the number of frames the mask "
                f"selects (of {rows}); pass None, or a value >= that count",
            )
    # Position k holds the row whose inverse is k: the selected rows ascending, then -1. No sort,
    # so the graph exports to ONNX (which has no stable sort).
    index = inverse_index(inverse, rows)
    if length <= rows:
        return index[:length], inverse
    padding = torch.full((length - rows,), PADDING, dtype=torch.int64, device=mask.device)
    return torch.cat([index, padding]), inverse


def temporal_shift(x: torch.Tensor, num_segments: int, shift_div: int = 8) -> torch.Tensor:
    """TSM shift of ``x`` ``[N*T, C, H, W]`` within each video.

    Channels ``[0, C//div)`` take frame t+1, ``[C//div, 2*C//div)`` take t-1,
    with zeros at the clip edges; the rest are unchanged.
    """
    nt, c, h, w = x.shape
    fold = c // shift_div
    v = x.reshape(nt // num_segments, num_segments, c, h, w)
    out = torch.zeros_like(v)
    out[:, :-1, :fold] = v[:, 1:, :fold]
    out[:, 1:, fold : 2 * fold] = v[:, :-1, fold : 2 * fold]
    out[:, :, 2 * fold :] = v[:, :, 2 * fold :]
    return _like(out.reshape(nt, c, h, w), x)


def gather_frames(
    x: torch.Tensor,
    index: torch.Tensor,
    num_segments: Optional[int] = None,
    shift_div: int = 0,
    *,
    validate: bool = True,
    padded: bool = True,
) -> torch.Tensor:
    """Rows of ``x`` ``[N*T, C, H, W]`` at ``index`` ``[K]``, optionally TSM-shifted.

    Returns ``[K, C, H, W]`` equal to ``temporal_shift(x)[index]`` when ``shift_div > 0``,
    with zero rows for padding entries (-1). Repeated rows are allowed. ``padded=False``
    promises that ``index`` has no -1 entry (checked with ``validate``): the rows are then one
    ``index_select``, with no pass that zeroes padding rows (in an exported graph, a ``Where``
    over every gathered row, which costs onnxruntime about 5 % of an AF-ResNet50 forward).
    """
    if validate:
        if not padded:
            check_unpadded("gather_frames", index)
        _check_index("gather_frames", index, x.shape[0], "rows of x", distinct=False)
    if shift_div > 0:
        x = temporal_shift(x, num_segments, shift_div)
    if not padded:
        return _like(x.index_select(0, index), x)
    padding = index == PADDING
    if x.shape[0] == 0:  # only padding can be gathered from no rows
        return _like(x.new_zeros((index.numel(), *x.shape[1:])), x)
    rows = x.index_select(0, torch.where(padding, 0, index))
    return _like(torch.where(padding.view(-1, 1, 1, 1), 0, rows), x)


def _fill_view(fill: torch.Tensor) -> torch.Tensor:
    return fill.reshape(-1, 1, 1) if fill.dim() == 1 else fill


def scatter_frames(
    base: torch.Tensor,
    src: torch.Tensor,
    index: torch.Tensor,
    fill: Optional[torch.Tensor] = None,
    relu: bool = False,
    *,
    validate: bool = True,
) -> torch.Tensor:
    """Residual scatter of the computed frames.

    Row ``index[k]`` of the output is ``base[index[k]] + src[k]``; every other
    row is ``base + fill`` (``fill`` absent, ``[C]`` or ``[C, H, W]``). ReLU last.
    Padding entries (-1) of ``index`` and their rows of ``src`` are ignored.

    Args:
        base: ``[N*T, C, H, W]``.
        src: ``[K, C, H, W]``.
        index: int64 ``[K]``, distinct rows of ``base`` or -1.
    """
    return _scatter_frames("scatter_frames", base, src, index, fill, relu, validate)


def _scatter_frames(
    op: str,
    base: torch.Tensor,
    src: torch.Tensor,
    index: torch.Tensor,
    fill: Optional[torch.Tensor],
    relu: bool,
    validate: bool,
) -> torch.Tensor:
    """``scatter_frames``, with index errors reported as those of ``op``."""
    rows, channels, height, width = base.shape
    if validate:
        _check_index(op, index, rows, "rows of base", distinct=True)
    inverse = inverse_index(index, rows)
    # Row K of the table is what an unnamed row adds: the fill, or zeros.
    rest = src.new_zeros((1, channels, height, width))
    if fill is not None:
        rest = _fill_view(fill).expand(1, channels, height, width)
    table = torch.cat([src, rest.to(src.dtype)])
    added = table.index_select(0, torch.where(inverse < 0, src.shape[0], inverse))
    out = base + added
    return _like(torch.relu(out) if relu else out, base)


def scatter_frames_(
    base: torch.Tensor,
    src: torch.Tensor,
    index: torch.Tensor,
    fill: Optional[torch.Tensor] = None,
    relu: bool = False,
    *,
    validate: bool = True,
) -> torch.Tensor:
    """``scatter_frames`` written into ``base``, which is returned: ``base.copy_(scatter_frames(...))``.

    The result is computed before ``base`` is written, so ``src`` or ``fill`` may share memory
    with ``base``; a ``base`` whose elements share memory (an expanded view) cannot hold it.
    """
    # at::has_internal_overlap's "Yes" (csrc/common/checks.h): a dimension of stride 0 and size > 1.
    if any(stride == 0 and size > 1 for size, stride in zip(base.shape, base.stride())):
        raise RuntimeError(
            f"scatter_frames_: base has elements that share memory (an expanded or overlapping view "
            f"of shape {_sizes(base.shape)} and strides {_sizes(base.stride())}), so it cannot hold "
            f"the result; pass base.clone(), or use the out-of-place scatter_frames"
        )
    return base.copy_(_scatter_frames("scatter_frames_", base, src, index, fill, relu, validate))


def _sizes(values: Sequence[int]) -> str:
    """``[a, b, c]``, as c10 prints sizes and strides."""
    return "[" + ", ".join(str(v) for v in values) + "]"


# --- branch fusion -----------------------------------------------------------------------------


def upsample_nearest(ample: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Nearest upsampling exactly as ``F.interpolate(ample, size=size)``."""
    return F.interpolate(ample, size=size, mode="nearest")


def _theta_view(theta: torch.Tensor) -> torch.Tensor:
    return theta.reshape(theta.shape[0], theta.shape[1], 1, 1)


def blend_branches(
    ample: torch.Tensor, focal: torch.Tensor, theta: torch.Tensor, relu: bool = True
) -> torch.Tensor:
    """Dynamic fusion ``θ·up(ample) + (1−θ)·focal``, then ReLU if asked.

    Args:
        ample: ``[N*T, C, h, w]``, the ample branch at low resolution.
        focal: ``[N*T, C, H, W]``.
        theta: ``[N*T, C]`` or ``[N*T, C, 1, 1]``.

    Returns ``[N*T, C, H, W]``.
    """
    th = _theta_view(theta)
    # θ is per channel, so θ·up(a) = up(θ·a): the product at low resolution, one full-size pass
    # fewer (what an exported graph runs), the same values.
    out = upsample_nearest(th * ample, focal.shape[-2:]) + (1 - th) * focal
    return _like(torch.relu(out) if relu else out, focal)


def _nearest_counts(low: int, high: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``[low]``: how many of ``high`` nearest-upsampled positions copy each of ``low`` inputs
    (the mapping of ``F.interpolate(mode="nearest")`` itself, so it is exact)."""
    source = upsample_nearest(torch.arange(low, device=device, dtype=dtype).reshape(1, 1, low, 1), (high, 1))
    return torch.zeros(low, device=device, dtype=dtype).index_add_(0, source.reshape(-1).long(), torch.ones(high, device=device, dtype=dtype))


def pool_branches(ample: torch.Tensor, focal: torch.Tensor) -> torch.Tensor:
    """Pooled input of the fusion attention, ``mean_hw(up(ample) + focal)``, as ``[N*T, C]``.

    ``up(ample)`` is never built: its mean weighs each ample pixel by how many output pixels
    copy it."""
    height, width = focal.shape[-2:]
    wy = _nearest_counts(ample.shape[2], height, ample.device, ample.dtype)
    wx = _nearest_counts(ample.shape[3], width, ample.device, ample.dtype)
    ample_sum = ((ample * wx).sum(dim=3) * wy).sum(dim=2)
    return ample_sum / (height * width) + focal.mean(dim=(2, 3))


# --- spatial tiles -----------------------------------------------------------------------------
# An output grid H_out x W_out is cut into Gh x Gw cells; along an axis of length L with G cells,
# cell i covers [floor(i*L/G), floor((i+1)*L/G)). Cell ids are row*Gh*Gw + cy*Gw + cx. A tile is
# the input window a cell's outputs read through a conv of `stride` with `halo` pixels of reach.


def cell_bounds(length: int, cells: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """int64 ``[cells + 1]``: cell i covers ``[bounds[i], bounds[i + 1])`` of an axis of ``length``."""
    return torch.arange(cells + 1, device=device) * length // cells


def cell_size(length: int, cells: int) -> int:
    """The largest cell of an axis of ``length`` cut into ``cells``: ``ceil(length / cells)``."""
    return -(-length // cells)


def tile_size(length: int, cells: int, stride: int, halo: int) -> int:
    """Pixels along one axis of a ``gather_tiles`` tile: ``(cell_size - 1)*stride + 1 + 2*halo``."""
    return (cell_size(length, cells) - 1) * stride + 1 + 2 * halo


def _cells(index: torch.Tensor, grid: Tuple[int, int]):
    """``(padding, row, cy, cx)`` of every entry of ``index`` (padding entries read as cell 0)."""
    gh, gw = grid
    padding = index == PADDING
    cell = torch.where(padding, 0, index)
    row, in_row = cell // (gh * gw), cell % (gh * gw)
    return padding, row, in_row // gw, in_row % gw


def _tile_positions(
    index: torch.Tensor, grid: Tuple[int, int], out_size: Tuple[int, int], stride: int, halo: int
):
    """Input rows ``[K, Th]`` and columns ``[K, Tw]`` each tile reads, with the cell parts."""
    padding, row, cy, cx = _cells(index, grid)
    axes = []
    for length, cells, cell in zip(out_size, grid, (cy, cx)):
        origin = cell_bounds(length, cells, index.device)[cell] * stride - halo
        axes.append(origin[:, None] + torch.arange(tile_size(length, cells, stride, halo), device=index.device))
    return padding, row, axes[0], axes[1]


def _inside(padding: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, in_size: Tuple[int, int]) -> torch.Tensor:
    """bool ``[K, 1, Th, Tw]``: the tile pixels at input rows ``ys`` and columns ``xs`` that lie
    inside an image of ``in_size`` (none of a padding entry)."""
    in_y = (ys >= 0) & (ys < in_size[0])
    in_x = (xs >= 0) & (xs < in_size[1])
    return ((~padding)[:, None, None] & in_y[:, :, None] & in_x[:, None, :])[:, None]


def tile_valid_mask(
    index: torch.Tensor,
    grid: Pair,
    out_size: Pair,
    in_size: Pair,
    stride: int = 1,
    halo: int = 1,
) -> torch.Tensor:
    """Which pixels of ``gather_tiles``' tiles lie inside the input image.

    Built with tensor ops only (no host read). A bottleneck multiplies it into conv1's output
    on the tiles, since conv2's zero padding applies to conv1's output, not to its input.

    Args:
        index: int64 ``[K]`` cell ids (-1: padding, all False).
        grid, out_size, stride, halo: as for ``gather_tiles``.
        in_size: ``(H_in, W_in)`` of the input the tiles were gathered from.

    Returns bool ``[K, 1, Th, Tw]``.
    """
    grid, out_size, in_size = _pair(grid, "grid"), _pair(out_size, "out_size"), _pair(in_size, "in_size")
    padding, _, ys, xs = _tile_positions(index, grid, out_size, stride, halo)
    return _inside(padding, ys, xs, in_size)


def tile_extent_mask(index: torch.Tensor, grid: Pair, out_size: Pair) -> torch.Tensor:
    """Which pixels of ``scatter_tiles``' ``src`` tiles ``[K, C, Sh, Sw]`` fall inside their cell.

    Cells are smaller than ``Sh x Sw`` by a pixel where the grid does not divide the size;
    ``scatter_tiles`` ignores the pixels beyond. Returns bool ``[K, 1, Sh, Sw]`` (padding: False).
    """
    grid, out_size = _pair(grid, "grid"), _pair(out_size, "out_size")
    padding, _, cy, cx = _cells(index, grid)
    inside = []
    for length, cells, cell in zip(out_size, grid, (cy, cx)):
        bounds = cell_bounds(length, cells, index.device)
        extent = bounds[cell + 1] - bounds[cell]
        inside.append(torch.arange(cell_size(length, cells), device=index.device) < extent[:, None])
    return ((~padding)[:, None, None] & inside[0][:, :, None] & inside[1][:, None, :])[:, None]


def cell_of_position(length: int, cells: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """int64 ``[length]``: the cell of every position of an axis, ``((p + 1)*G - 1) // L`` (the
    largest ``i`` with ``cell_bounds[i] <= p``), as the kernels compute it."""
    return ((torch.arange(length, device=device) + 1) * cells - 1) // length


def _axis_cells(length: int, cells: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """The cell of every position of an axis and the position's offset inside its cell."""
    cell = cell_of_position(length, cells, device)
    return cell, torch.arange(length, device=device) - cell_bounds(length, cells, device)[cell]


def tile_of_pixel(index: torch.Tensor, grid: Pair, rows: int, out_size: Pair) -> torch.Tensor:
    """int64 ``[rows, H_out, W_out]``: the position in ``index`` of the cell covering each output
    pixel, or -1 where the cell is not in ``index``."""
    (gh, gw), (height, width) = _pair(grid, "grid"), _pair(out_size, "out_size")
    cy, _ = _axis_cells(height, gh, index.device)
    cx, _ = _axis_cells(width, gw, index.device)
    ids = (torch.arange(rows, device=index.device)[:, None, None] * gh + cy[:, None]) * gw + cx
    return inverse_index(index, rows * gh * gw)[ids]


def gather_tiles(
    x: torch.Tensor,
    index: torch.Tensor,
    grid: Pair,
    out_size: Pair,
    stride: int = 1,
    halo: int = 1,
    num_segments: Optional[int] = None,
    shift_div: int = 0,
    *,
    validate: bool = True,
) -> torch.Tensor:
    """Input tiles of the cells ``index`` names, zero outside the image, optionally TSM-shifted.

    Args:
        x: the block input ``[N*T, C, H_in, W_in]``.
        index: int64 ``[K]`` cell ids ``row*Gh*Gw + cy*Gw + cx`` (-1: a zero tile).
        grid: ``(Gh, Gw)`` cells of the block's output.
        out_size: ``(H_out, W_out)``, the block's output size.
        stride, halo: the conv the tiles feed; tile k starts at input row
            ``cell_start(cy)*stride - halo``.

    Returns ``[K, C, Th, Tw]``, ``Th = (ceil(H_out/Gh) - 1)*stride + 1 + 2*halo``.
    """
    grid, out_size = _pair(grid, "grid"), _pair(out_size, "out_size")
    rows, channels, height, width = x.shape
    if validate:
        limit, what = _tile_rule(rows, grid)
        _check_index("gather_tiles", index, limit, what, distinct=False, noun="cell")
    if shift_div > 0:
        x = temporal_shift(x, num_segments, shift_div)
    padding, row, ys, xs = _tile_positions(index, grid, out_size, stride, halo)
    count, tile_h, tile_w = index.numel(), ys.shape[1], xs.shape[1]
    if rows * height * width == 0:  # nothing to read: every tile is zeros
        return _like(x.new_zeros((count, channels, tile_h, tile_w)), x)
    valid = _inside(padding, ys, xs, (height, width))
    flat = (row[:, None, None] * height + ys.clamp(0, height - 1)[:, :, None]) * width + xs.clamp(
        0, width - 1
    )[:, None, :]
    pixels = x.permute(0, 2, 3, 1).reshape(-1, channels)
    tiles = pixels.index_select(0, flat.reshape(-1)).reshape(count, tile_h, tile_w, channels)
    return _like(torch.where(valid, tiles.permute(0, 3, 1, 2), 0), x)


def scatter_tiles(
    base: torch.Tensor,
    src: torch.Tensor,
    index: torch.Tensor,
    grid: Pair,
    fill: Optional[torch.Tensor] = None,
    relu: bool = False,
    *,
    validate: bool = True,
) -> torch.Tensor:
    """Residual scatter of computed cells.

    Each output pixel ``(r, y, x)`` is ``base + src[k][y - y0, x - x0]`` when its cell is
    ``index[k]`` (cell origin ``y0, x0``), else ``base + fill``; ReLU last. Pixels of ``src``
    beyond a smaller cell's extent are ignored.

    Args:
        base: ``[N*T, C, H_out, W_out]``.
        src: ``[K, C, Sh, Sw]``, ``Sh = ceil(H_out/Gh)``.
        index: int64 ``[K]`` distinct cell ids (or -1).
        grid: ``(Gh, Gw)``.
        fill: None, ``[C]`` or ``[C, H_out, W_out]``.
    """
    grid = _pair(grid, "grid")
    rows, channels, height, width = base.shape
    if validate:
        limit, what = _tile_rule(rows, grid)
        _check_index("scatter_tiles", index, limit, what, distinct=True, noun="cell")
    size_h, size_w = src.shape[2], src.shape[3]
    k = tile_of_pixel(index, grid, rows, (height, width))  # [R, H, W]
    _, dy = _axis_cells(height, grid[0], base.device)
    _, dx = _axis_cells(width, grid[1], base.device)
    # Tile K of the table is zeros, read by the pixels of cells not in index.
    table = torch.cat([src, src.new_zeros((1, channels, size_h, size_w))]).permute(0, 2, 3, 1)
    tile = torch.where(k < 0, src.shape[0], k)
    flat = (tile * size_h + dy[:, None]) * size_w + dx
    added = table.reshape(-1, channels).index_select(0, flat.reshape(-1))
    added = added.reshape(rows, height, width, channels).permute(0, 3, 1, 2)
    if fill is not None:
        added = torch.where((k >= 0)[:, None], added, _fill_view(fill))
    out = base + added
    return _like(torch.relu(out) if relu else out, base)
