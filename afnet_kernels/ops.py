"""Typed wrappers, fake kernels and autograd of the ``afnet_kernels`` ops.

Each public function calls ``torch.ops.afnet_kernels.<name>`` (CPU kernels from
``_C``, CUDA kernels from ``_C_cuda``). When ``_C`` is missing they call the
pure-PyTorch ``afnet_kernels.reference`` instead (a warning was logged at
import).

Layout convention: a clip batch of ``N`` videos with ``T`` frames is stored
frame-major as ``[N*T, C, H, W]``, row ``n*T + t``. Outputs keep the input's
memory format (contiguous or channels_last, see ``reference.memory_format``).

Index tensors are int64; ``-1`` is padding: gathers return zeros for it and
scatters ignore it. ``validate=True`` (the default) checks every other value
(range; distinctness for scatters) and raises the same message on CPU, on
CUDA and in the reference; on CUDA it costs one device->host read.
``validate=False`` means the caller vouches for the values (e.g. indices made
by ``select_frames``): CUDA reads nothing back, and a bad value stops the
kernel with a device-side assert, as PyTorch's own CUDA index ops do. The CPU
always validates (it reads the values anyway).

``scatter_frames_`` is the one op that writes into an input (``base``) and the one without
autograd: it refuses inputs that require grad while grad mode is on.

Determinism: every op is deterministic on the CPU. On CUDA every op is
deterministic except two backward passes that add with atomics: the gather
backward (``_gather_frames_backward``) when the index repeats a row, and the
tile gather backward (``_gather_tiles_backward``), whose tiles overlap in their
halos.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from afnet_kernels import reference
from afnet_kernels._loader import CPU_LIB, CUDA_LIB

__all__ = [
    "select_frames",
    "gather_frames",
    "scatter_frames",
    "scatter_frames_",
    "blend_branches",
    "pool_branches",
    "gather_tiles",
    "scatter_tiles",
]

Pair = Union[int, Sequence[int]]


def _compiled(t: Tensor) -> bool:
    """True to run the compiled op, False to fall back to the reference."""
    if not CPU_LIB.loaded:
        return False
    if t.is_cuda and not CUDA_LIB.loaded:
        raise RuntimeError(
            "afnet_kernels: got CUDA tensors but the CUDA kernels are not available: "
            f"{CUDA_LIB.reason}"
        )
    return True


def _pair_list(value: Pair, name: str) -> List[int]:
    return list(reference._pair(value, name))


def select_frames(
    mask: Tensor, num_selected: Optional[int] = None, *, validate: bool = True
) -> Tuple[Tensor, Tensor]:
    """Indices of the selected frames.

    Args:
        mask: ``[N, T]``, bool or 0/1.
        num_selected: the length ``K'`` of ``index`` if the caller knows a bound: at least
            the number ``K`` of selected frames; entries past ``K`` are -1 (padding-bucket
            mode, for static shapes). None: ``K' = K``, read from the device on CUDA.
        validate: check ``num_selected >= K``. On CUDA this is a host read; with
            ``validate=False`` and ``num_selected`` given the op reads nothing back.

    Returns:
        ``index`` int64 ``[K']``: selected rows ``n*T + t``, ascending, then -1.
        ``inverse`` int64 ``[N*T]``: each row's position in ``index`` or -1.

    Equivalent PyTorch: ``afnet_kernels.reference.select_frames``.
    """
    if not _compiled(mask):
        return reference.select_frames(mask, num_selected, validate=validate)
    return torch.ops.afnet_kernels.select_frames(mask, num_selected, validate)


def gather_frames(
    x: Tensor,
    index: Tensor,
    num_segments: Optional[int] = None,
    shift_div: int = 0,
    *,
    validate: bool = True,
    padded: bool = True,
) -> Tensor:
    """Rows of ``x`` at ``index``, TSM-shifted on the fly when ``shift_div > 0``.

    Args:
        x: ``[N*T, C, H, W]``.
        index: int64 ``[K]``; repeats allowed (as ``index_select``), -1 gives a zero row.
        num_segments: ``T``; required when ``shift_div > 0``.
        shift_div: channels ``[0, C//div)`` read frame t+1, ``[C//div, 2*C//div)``
            frame t-1, zeros at clip edges; 0 = no shift.
        validate: see the module docstring.
        padded: False promises that ``index`` has no -1 entry (checked with ``validate``). The
            kernels do the same work either way; the reference then skips zeroing padding rows.

    Returns ``[K, C, H, W]`` = ``temporal_shift(x)[index]``, without building the
    shifted tensor. Differentiable in ``x``.

    Equivalent PyTorch: ``afnet_kernels.reference.gather_frames``.
    """
    if not _compiled(x):
        return reference.gather_frames(x, index, num_segments, shift_div, validate=validate, padded=padded)
    if validate and not padded:
        reference.check_unpadded("gather_frames", index)
    return torch.ops.afnet_kernels.gather_frames(x, index, num_segments or 0, shift_div, validate)


def scatter_frames(
    base: Tensor,
    src: Tensor,
    index: Tensor,
    fill: Optional[Tensor] = None,
    relu: bool = False,
    *,
    validate: bool = True,
) -> Tensor:
    """Residual scatter: row ``index[k]`` = ``base[index[k]] + src[k]``, others ``base + fill``.

    Args:
        base: ``[N*T, C, H, W]``.
        src: ``[K, C, H, W]``.
        index: int64 ``[K]``, distinct rows of ``base``; -1 entries (and their ``src``
            rows) are ignored.
        fill: ``None``, ``[C]`` or ``[C, H, W]``, added to the rows not in ``index``.
        relu: apply ReLU last (NaN stays NaN, as ``torch.relu``).
        validate: see the module docstring.

    Returns a new ``[N*T, C, H, W]`` tensor (inputs are not modified); every output
    element has one writer, so the result is deterministic. Differentiable in
    ``base``, ``src`` and ``fill``.

    Equivalent PyTorch: ``afnet_kernels.reference.scatter_frames``.
    """
    if not _compiled(base):
        return reference.scatter_frames(base, src, index, fill, relu, validate=validate)
    return torch.ops.afnet_kernels.scatter_frames(base, src, index, fill, relu, validate)


def scatter_frames_(
    base: Tensor,
    src: Tensor,
    index: Tensor,
    fill: Optional[Tensor] = None,
    relu: bool = False,
    *,
    validate: bool = True,
) -> Tensor:
    """In-place residual scatter: ``scatter_frames`` written into ``base``, which it returns.

    Row ``index[k]`` of ``base`` becomes ``base[index[k]] + src[k]``, every other row
    ``base + fill``, then ReLU if asked: one pass over ``base`` and no new tensor, for a
    ``base`` (a block's shortcut) that is dead after the scatter. Without ``fill`` and
    ``relu`` the rows not in ``index`` are not touched.

    Args:
        base: ``[N*T, C, H, W]``, overwritten with the result. When it is not dense in its
            memory format (a slice with gaps), or shares memory with ``src`` or ``fill``, the
            result is computed densely and copied into it (one more pass); a ``base`` whose
            elements share memory (an expanded view) is refused.
        src: ``[K, C, H, W]``.
        index: int64 ``[K]``, distinct rows of ``base``; -1 entries (and their ``src``
            rows) are ignored.
        fill: ``None``, ``[C]`` or ``[C, H, W]``, added to the rows not in ``index``.
        relu: apply ReLU last (NaN stays NaN, as ``torch.relu``).
        validate: see the module docstring; a bad index raises before ``base`` is written.

    Returns ``base``. Inputs other than ``base`` are not modified; every element has one
    writer (deterministic). An inference op without autograd: with grad mode on, an input
    that requires grad raises (use ``scatter_frames``, which is differentiable).
    ``torch.compile`` functionalizes the mutation.

    Equivalent PyTorch: ``afnet_kernels.reference.scatter_frames_``.
    """
    _refuse_grad("scatter_frames_", base=base, src=src, fill=fill)
    if not _compiled(base):
        return reference.scatter_frames_(base, src, index, fill, relu, validate=validate)
    return torch.ops.afnet_kernels.scatter_frames_(base, src, index, fill, relu, validate)


def _refuse_grad(op: str, **tensors: Optional[Tensor]) -> None:
    """Raises for an input that requires grad while grad mode is on: ``op`` has no autograd,
    and the gradient through it would be silently wrong."""
    if not torch.is_grad_enabled():
        return
    for name, tensor in tensors.items():
        if tensor is not None and tensor.requires_grad:
            raise RuntimeError(
                f"{op}: {name} requires grad, but {op} is an in-place inference op without "
                f"autograd; use the out-of-place scatter_frames (differentiable), or call {op} "
                f"under torch.no_grad() or torch.inference_mode()"
            )


def blend_branches(ample: Tensor, focal: Tensor, theta: Tensor, relu: bool = True) -> Tensor:
    """Dynamic fusion ``θ·up(ample) + (1−θ)·focal``, then ReLU if asked.

    Args:
        ample: ``[N*T, C, h, w]``, upsampled (nearest, as ``F.interpolate(size=(H, W))``)
            on the fly; ``up(ample)`` is never built.
        focal: ``[N*T, C, H, W]``.
        theta: ``[N*T, C]`` or ``[N*T, C, 1, 1]``.

    Returns ``[N*T, C, H, W]`` in focal's memory format.

    Equivalent PyTorch: ``afnet_kernels.reference.blend_branches``.
    """
    if not _compiled(focal):
        return reference.blend_branches(ample, focal, theta, relu)
    return torch.ops.afnet_kernels.blend_branches(ample, focal, theta, relu)


def pool_branches(ample: Tensor, focal: Tensor) -> Tensor:
    """Pooled input of the fusion attention, ``mean_hw(up(ample) + focal)``.

    Args:
        ample: ``[N*T, C, h, w]``.
        focal: ``[N*T, C, H, W]``.

    Returns ``[N*T, C]``.

    Equivalent PyTorch: ``afnet_kernels.reference.pool_branches``.
    """
    if not _compiled(focal):
        return reference.pool_branches(ample, focal)
    return torch.ops.afnet_kernels.pool_branches(ample, focal)


def gather_tiles(
    x: Tensor,
    index: Tensor,
    grid: Pair,
    out_size: Pair,
    stride: int = 1,
    halo: int = 1,
    num_segments: Optional[int] = None,
    shift_div: int = 0,
    *,
    validate: bool = True,
) -> Tensor:
    """Input tiles of spatial cells (block + halo), zero outside the image, TSM shift fused.

    The block's output ``H_out x W_out`` is cut into ``Gh x Gw`` cells; along an axis of
    length ``L`` with ``G`` cells, cell ``i`` covers ``[floor(i*L/G), floor((i+1)*L/G))``.
    Tile ``k`` is the input window the outputs of cell ``index[k]`` read through a conv of
    ``stride`` with ``halo`` pixels of reach (1 for a 3x3 conv).

    Args:
        x: the block input ``[N*T, C, H_in, W_in]``.
        index: int64 ``[K]`` cell ids ``row*Gh*Gw + cy*Gw + cx`` (repeats allowed; -1 gives
            a zero tile).
        grid: ``(Gh, Gw)`` (or one int for both), ``1 <= G <= out_size``.
        out_size: ``(H_out, W_out)`` of the block.
        stride, halo: the conv; tile k starts at input pixel ``cell_start*stride - halo``.
        num_segments, shift_div: the TSM shift, as for ``gather_frames``.
        validate: see the module docstring.

    Returns ``[K, C, Th, Tw]``, ``Th = (ceil(H_out/Gh) - 1)*stride + 1 + 2*halo``.
    Differentiable in ``x`` (the overlapping tiles' gradients add up).

    Equivalent PyTorch: ``afnet_kernels.reference.gather_tiles``.
    """
    grid_, out_size_ = _pair_list(grid, "grid"), _pair_list(out_size, "out_size")
    if not _compiled(x):
        return reference.gather_tiles(
            x, index, grid_, out_size_, stride, halo, num_segments, shift_div, validate=validate
        )
    return torch.ops.afnet_kernels.gather_tiles(
        x, index, grid_, out_size_, stride, halo, num_segments or 0, shift_div, validate
    )


def scatter_tiles(
    base: Tensor,
    src: Tensor,
    index: Tensor,
    grid: Pair,
    fill: Optional[Tensor] = None,
    relu: bool = False,
    *,
    validate: bool = True,
) -> Tensor:
    """Residual scatter of computed cells: the tile counterpart of ``scatter_frames``.

    Each output pixel ``(r, y, x)`` is ``base + src[k][y - y0, x - x0]`` when its cell is
    ``index[k]`` (cell origin ``y0, x0``), else ``base + fill``; then ReLU if asked.

    Args:
        base: ``[N*T, C, H_out, W_out]``.
        src: ``[K, C, Sh, Sw]``, ``Sh = ceil(H_out/Gh)``; pixels beyond a smaller cell's
            extent are ignored.
        index: int64 ``[K]`` distinct cell ids; -1 entries (and their tiles) are ignored.
        grid: ``(Gh, Gw)`` (or one int for both).
        fill: ``None``, ``[C]`` or ``[C, H_out, W_out]``.
        relu: apply ReLU last.
        validate: see the module docstring.

    Returns a new ``[N*T, C, H_out, W_out]`` tensor; every output element has one writer
    (deterministic). Differentiable in ``base``, ``src`` and ``fill``.

    Equivalent PyTorch: ``afnet_kernels.reference.scatter_tiles``.
    """
    grid_ = _pair_list(grid, "grid")
    if not _compiled(base):
        return reference.scatter_tiles(base, src, index, grid_, fill, relu, validate=validate)
    return torch.ops.afnet_kernels.scatter_tiles(base, src, index, grid_, fill, relu, validate)


# --- fake kernels (torch.compile, torch.export) ----------------------------------------------


def _empty(shape: Tuple[int, ...], like: Tensor, layout_of: Tensor) -> Tensor:
    fmt = reference.memory_format(layout_of) if len(shape) == 4 else torch.contiguous_format
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)


def _tile_shape(grid: Sequence[int], out_size: Sequence[int], stride: int, halo: int) -> Tuple[int, int]:
    """``(Th, Tw)`` of ``gather_tiles``."""
    return tuple(reference.tile_size(length, cells, stride, halo) for cells, length in zip(grid, out_size))  # type: ignore[return-value]


def _register_fakes() -> None:
    lib = "afnet_kernels::"

    @torch.library.register_fake(lib + "select_frames")
    def _select_fake(
        mask: Tensor, num_selected: Optional[int] = None, validate: bool = True
    ) -> Tuple[Tensor, Tensor]:
        count = num_selected
        if count is None:
            count = torch.library.get_ctx().new_dynamic_size()
        index = mask.new_empty((count,), dtype=torch.int64)
        return index, mask.new_empty((mask.numel(),), dtype=torch.int64)

    @torch.library.register_fake(lib + "gather_frames")
    def _gather_fake(
        x: Tensor, index: Tensor, num_segments: int = 0, shift_div: int = 0, validate: bool = True
    ) -> Tensor:
        return _empty((index.shape[0], *x.shape[1:]), x, x)

    @torch.library.register_fake(lib + "_gather_frames_backward")
    def _gather_backward_fake(
        grad: Tensor, index: Tensor, num_rows: int, num_segments: int, shift_div: int, validate: bool = True
    ) -> Tensor:
        return _empty((num_rows, *grad.shape[1:]), grad, grad)

    @torch.library.register_fake(lib + "scatter_frames")
    def _scatter_fake(
        base: Tensor,
        src: Tensor,
        index: Tensor,
        fill: Optional[Tensor] = None,
        relu: bool = False,
        validate: bool = True,
    ) -> Tensor:
        return _empty(tuple(base.shape), base, base)

    @torch.library.register_fake(lib + "scatter_frames_")
    def _scatter_inplace_fake(
        base: Tensor,
        src: Tensor,
        index: Tensor,
        fill: Optional[Tensor] = None,
        relu: bool = False,
        validate: bool = True,
    ) -> Tensor:
        return base

    @torch.library.register_fake(lib + "blend_branches")
    def _blend_fake(ample: Tensor, focal: Tensor, theta: Tensor, relu: bool = True) -> Tensor:
        return _empty(tuple(focal.shape), focal, focal)

    @torch.library.register_fake(lib + "_blend_branches_backward")
    def _blend_backward_fake(
        grad: Tensor, out: Tensor, ample: Tensor, focal: Tensor, theta: Tensor, relu: bool
    ) -> Tuple[Tensor, Tensor, Tensor]:
        # The CPU/CUDA kernels compute in focal's layout for all three.
        return (
            _empty(tuple(ample.shape), ample, focal),
            _empty(tuple(focal.shape), focal, focal),
            torch.empty(theta.shape, dtype=theta.dtype, device=theta.device),
        )

    @torch.library.register_fake(lib + "pool_branches")
    def _pool_fake(ample: Tensor, focal: Tensor) -> Tensor:
        return focal.new_empty((focal.shape[0], focal.shape[1]))

    @torch.library.register_fake(lib + "gather_tiles")
    def _gather_tiles_fake(
        x: Tensor,
        index: Tensor,
        grid: Sequence[int],
        out_size: Sequence[int],
        stride: int = 1,
        halo: int = 1,
        num_segments: int = 0,
        shift_div: int = 0,
        validate: bool = True,
    ) -> Tensor:
        tile_h, tile_w = _tile_shape(grid, out_size, stride, halo)
        return _empty((index.shape[0], x.shape[1], tile_h, tile_w), x, x)

    @torch.library.register_fake(lib + "_gather_tiles_backward")
    def _gather_tiles_backward_fake(
        grad: Tensor,
        index: Tensor,
        grid: Sequence[int],
        out_size: Sequence[int],
        in_size: Sequence[int],
        num_rows: int,
        stride: int,
        halo: int,
        num_segments: int,
        shift_div: int,
        validate: bool = True,
    ) -> Tensor:
        return _empty((num_rows, grad.shape[1], in_size[0], in_size[1]), grad, grad)

    @torch.library.register_fake(lib + "scatter_tiles")
    def _scatter_tiles_fake(
        base: Tensor,
        src: Tensor,
        index: Tensor,
        grid: Sequence[int],
        fill: Optional[Tensor] = None,
        relu: bool = False,
        validate: bool = True,
    ) -> Tensor:
        return _empty(tuple(base.shape), base, base)


# --- autograd -------------------------------------------------------------------------------
# The backward passes call the ops with validate=False: the forward either checked the same
# index or ran under the caller's word, so a second check would only add a CUDA host read.


def _gather_setup(ctx, inputs, output) -> None:
    x, index, num_segments, shift_div, _ = inputs
    ctx.save_for_backward(index)
    ctx.geometry = (x.shape[0], num_segments, shift_div)


def _gather_backward(ctx, grad: Tensor):
    (index,) = ctx.saved_tensors
    num_rows, num_segments, shift_div = ctx.geometry
    grad_x = torch.ops.afnet_kernels._gather_frames_backward(
        grad, index, num_rows, num_segments, shift_div, False
    )
    return grad_x, None, None, None, None


def _gather_backward_setup(ctx, inputs, output) -> None:
    _, index, _, num_segments, shift_div, _ = inputs
    ctx.save_for_backward(index)
    ctx.geometry = (num_segments, shift_div)


def _gather_backward_backward(ctx, grad: Tensor):
    # The backward is linear in grad; its adjoint is the forward gather.
    (index,) = ctx.saved_tensors
    num_segments, shift_div = ctx.geometry
    grad_grad = torch.ops.afnet_kernels.gather_frames(grad, index, num_segments, shift_div, False)
    return grad_grad, None, None, None, None, None


def _grad_fill(grad: Tensor, untouched: Tensor, fill_dim: int) -> Tensor:
    """The fill's gradient: ``grad`` summed over the elements the fill reached, where
    ``untouched`` (broadcastable to ``grad``) is True."""
    grad_fill = torch.where(untouched, grad, 0).sum(0)
    return grad_fill.sum((1, 2)) if fill_dim == 1 else grad_fill


def _scatter_setup(ctx, inputs, output) -> None:
    base, _, index, fill, relu, _ = inputs
    ctx.relu = relu
    ctx.fill_dim = None if fill is None else fill.dim()
    ctx.rows = base.shape[0]
    ctx.save_for_backward(index, output if relu else None)


def _scatter_backward(ctx, grad: Tensor):
    index, out = ctx.saved_tensors
    if ctx.relu:
        grad = torch.ops.aten.threshold_backward(grad, out, 0)
    grad_src = grad_fill = None
    if ctx.needs_input_grad[1]:
        grad_src = torch.ops.afnet_kernels.gather_frames(grad, index, 0, 0, False)
    if ctx.fill_dim is not None and ctx.needs_input_grad[3]:
        # fill reaches exactly the rows that are not in index.
        untouched = reference.inverse_index(index, ctx.rows) < 0
        grad_fill = _grad_fill(grad, untouched.view(-1, 1, 1, 1), ctx.fill_dim)
    grad_base = grad if ctx.needs_input_grad[0] else None
    return grad_base, grad_src, None, grad_fill, None, None


def _blend_setup(ctx, inputs, output) -> None:
    ample, focal, theta, relu = inputs
    ctx.relu = relu
    ctx.save_for_backward(ample, focal, theta, output)


def _blend_backward(ctx, grad: Tensor):
    ample, focal, theta, out = ctx.saved_tensors
    grad_ample, grad_focal, grad_theta = torch.ops.afnet_kernels._blend_branches_backward(
        grad, out, ample, focal, theta, ctx.relu
    )
    return grad_ample, grad_focal, grad_theta, None


def _pool_setup(ctx, inputs, output) -> None:
    ample, focal = inputs
    ctx.ample_shape = tuple(ample.shape)
    ctx.focal_shape = tuple(focal.shape)
    ctx.formats = (reference.memory_format(ample), reference.memory_format(focal))


def _pool_backward(ctx, grad: Tensor):
    rows, channels, height, width = ctx.focal_shape
    ample_format, focal_format = ctx.formats
    per_pixel = (grad / (height * width)).reshape(rows, channels, 1, 1).expand(ctx.focal_shape)
    grad_ample = torch.ops.aten.upsample_nearest2d_backward(
        per_pixel, [height, width], list(ctx.ample_shape), None, None
    ).contiguous(memory_format=ample_format)
    grad_focal = per_pixel.contiguous(memory_format=focal_format)
    return grad_ample, grad_focal


def _gather_tiles_setup(ctx, inputs, output) -> None:
    x, index, grid, out_size, stride, halo, num_segments, shift_div, _ = inputs
    ctx.save_for_backward(index)
    ctx.geometry = (list(grid), list(out_size), [x.shape[2], x.shape[3]], x.shape[0], stride, halo,
                    num_segments, shift_div)


def _gather_tiles_backward(ctx, grad: Tensor):
    (index,) = ctx.saved_tensors
    grad_x = torch.ops.afnet_kernels._gather_tiles_backward(grad, index, *ctx.geometry, False)
    return grad_x, None, None, None, None, None, None, None, None


def _gather_tiles_backward_setup(ctx, inputs, output) -> None:
    _, index, grid, out_size, _, _, stride, halo, num_segments, shift_div, _ = inputs
    ctx.save_for_backward(index)
    ctx.geometry = (list(grid), list(out_size), stride, halo, num_segments, shift_div)


def _gather_tiles_backward_backward(ctx, grad: Tensor):
    # Linear in grad; its adjoint is the forward gather.
    (index,) = ctx.saved_tensors
    grad_grad = torch.ops.afnet_kernels.gather_tiles(grad, index, *ctx.geometry, False)
    return (grad_grad,) + (None,) * 10


def _scatter_tiles_setup(ctx, inputs, output) -> None:
    base, _, index, grid, fill, relu, _ = inputs
    ctx.relu = relu
    ctx.fill_dim = None if fill is None else fill.dim()
    ctx.grid = list(grid)
    ctx.save_for_backward(index, output if relu else None)


def _scatter_tiles_backward(ctx, grad: Tensor):
    index, out = ctx.saved_tensors
    if ctx.relu:
        grad = torch.ops.aten.threshold_backward(grad, out, 0)
    rows, _, height, width = grad.shape
    grad_src = grad_fill = None
    if ctx.needs_input_grad[1]:
        # The cells' own pixels (stride 1, no halo); a smaller cell's tile pixels beyond its
        # extent read the next cell here but reached nothing in the forward.
        tiles = torch.ops.afnet_kernels.gather_tiles(
            grad, index, ctx.grid, [height, width], 1, 0, 0, 0, False
        )
        grad_src = torch.where(reference.tile_extent_mask(index, ctx.grid, (height, width)), tiles, 0)
    if ctx.fill_dim is not None and ctx.needs_input_grad[4]:
        untouched = reference.tile_of_pixel(index, ctx.grid, rows, (height, width)) < 0
        grad_fill = _grad_fill(grad, untouched[:, None], ctx.fill_dim)
    grad_base = grad if ctx.needs_input_grad[0] else None
    return grad_base, grad_src, None, None, grad_fill, None, None


def _register_autograd() -> None:
    lib = "afnet_kernels::"
    pairs = {
        "gather_frames": (_gather_backward, _gather_setup),
        "_gather_frames_backward": (_gather_backward_backward, _gather_backward_setup),
        "scatter_frames": (_scatter_backward, _scatter_setup),
        "blend_branches": (_blend_backward, _blend_setup),
        "pool_branches": (_pool_backward, _pool_setup),
        "gather_tiles": (_gather_tiles_backward, _gather_tiles_setup),
        "_gather_tiles_backward": (_gather_tiles_backward_backward, _gather_tiles_backward_setup),
        "scatter_tiles": (_scatter_tiles_backward, _scatter_tiles_setup),
    }
    for name, (backward, setup) in pairs.items():
        torch.library.register_autograd(lib + name, backward, setup_context=setup)


# --- scatter_frames_: no autograd, a version bump ---------------------------------------------
# Autograd: a kernel that refuses inputs requiring grad and otherwise runs the op below autograd,
# torch's guidance for a non-differentiable op (without it, the autograd fallback would let a
# backward pass through the mutation with a wrong gradient and only a warning).
# ADInplaceOrView: bumps base's version counter, as torch.library.custom_op does for the inputs it
# mutates, so that autograd notices when a tensor it saved was overwritten.

_LIB = torch.library.Library("afnet_kernels", "IMPL") if CPU_LIB.loaded else None


def _scatter_inplace_autograd(
    keyset,
    base: Tensor,
    src: Tensor,
    index: Tensor,
    fill: Optional[Tensor] = None,
    relu: bool = False,
    validate: bool = True,
) -> Tensor:
    _refuse_grad("scatter_frames_", base=base, src=src, fill=fill)
    return torch.ops.afnet_kernels.scatter_frames_.default.redispatch(
        keyset & torch._C._after_autograd_keyset, base, src, index, fill, relu, validate
    )


def _scatter_inplace_version(
    keyset,
    base: Tensor,
    src: Tensor,
    index: Tensor,
    fill: Optional[Tensor] = None,
    relu: bool = False,
    validate: bool = True,
) -> Tensor:
    torch.autograd.graph.increment_version(base)
    return torch.ops.afnet_kernels.scatter_frames_.default.redispatch(
        keyset & torch._C._after_ADInplaceOrView_keyset, base, src, index, fill, relu, validate
    )


def _register_inplace_keys() -> None:
    _LIB.impl("scatter_frames_", _scatter_inplace_autograd, "Autograd", with_keyset=True)
    _LIB.impl("scatter_frames_", _scatter_inplace_version, "ADInplaceOrView", with_keyset=True)


if CPU_LIB.loaded:
    _register_fakes()
    _register_autograd()
    _register_inplace_keys()
