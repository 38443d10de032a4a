"""Typed wrappers, fake kernels and autograd of the ``afnet_kernels`` ops.

Each public function calls ``torch.ops.afnet_kernels.<name>`` (CPU kernels from
``_C``, CUDA kernels from ``_C_cuda``). When ``_C`` is missing they call the
pure-PyTorch ``afnet_kernels.reference`` instead (a warning was logged at
import). All ops are deterministic: every output element has one writer.

Layout convention: a clip batch of ``N`` videos with ``T`` frames is stored
frame-major as ``[N*T, C, H, W]``, row ``n*T + t``. Outputs keep the input's
memory format (contiguous or channels_last, see ``reference.memory_format``).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor

from afnet_kernels import reference
from afnet_kernels._loader import CPU_LIB, CUDA_LIB

__all__ = [
    "select_frames",
    "gather_frames",
    "scatter_frames",
    "blend_branches",
    "pool_branches",
    "trusted_indices",
]

_trusted = contextvars.ContextVar("afnet_kernels_trusted_indices", default=False)


@contextlib.contextmanager
def trusted_indices() -> Iterator[None]:
    """Skips the index range check of CUDA gather/scatter inside the block.

    The check costs one host sync per call. Use this only where the indices
    come from ``select_frames`` (always in range and distinct). The CUDA
    kernels never access memory out of bounds either way.
    """
    token = _trusted.set(True)
    try:
        yield
    finally:
        _trusted.reset(token)


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


def _check_index_range(op: str, index: Tensor, limit: int) -> None:
    """Range check of CUDA indices (the C++ entry points never sync)."""
    if (
        not index.is_cuda
        or index.dtype != torch.int64
        or index.numel() == 0
        or _trusted.get()
        or torch.compiler.is_compiling()
    ):
        return
    lo, hi = torch.stack(torch.aminmax(index)).tolist()
    if lo < 0 or hi >= limit:
        raise RuntimeError(
            f"{op}: index is out of range: expected 0 <= index < {limit}, got values in [{lo}, {hi}]"
        )


def select_frames(mask: Tensor, num_selected: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Indices of the selected frames.

    Args:
        mask: ``[N, T]``, bool or 0/1.
        num_selected: ``K`` if the caller knows it; on CUDA this avoids the one
            host sync (reading ``K``).

    Returns:
        ``index`` int64 ``[K]``: selected rows ``n*T + t``, ascending.
        ``inverse`` int64 ``[N*T]``: each row's position in ``index`` or -1.

    Equivalent PyTorch: ``afnet_kernels.reference.select_frames``.
    """
    if not _compiled(mask):
        return reference.select_frames(mask, num_selected)
    return torch.ops.afnet_kernels.select_frames(mask, num_selected)


def gather_frames(
    x: Tensor, index: Tensor, num_segments: Optional[int] = None, shift_div: int = 0
) -> Tensor:
    """Rows of ``x`` at ``index``, TSM-shifted on the fly when ``shift_div > 0``.

    Args:
        x: ``[N*T, C, H, W]``.
        index: int64 ``[K]`` (repeats allowed).
        num_segments: ``T``; required when ``shift_div > 0``.
        shift_div: channels ``[0, C//div)`` read frame t+1, ``[C//div, 2*C//div)``
            frame t-1, zeros at clip edges; 0 = no shift.

    Returns ``[K, C, H, W]`` = ``temporal_shift(x)[index]``, without building the
    shifted tensor. Differentiable in ``x``.

    Equivalent PyTorch: ``afnet_kernels.reference.gather_frames``.
    """
    if not _compiled(x):
        return reference.gather_frames(x, index, num_segments, shift_div)
    _check_index_range("gather_frames", index, x.shape[0] if x.dim() > 0 else 0)
    return torch.ops.afnet_kernels.gather_frames(x, index, num_segments or 0, shift_div)


def scatter_frames(
    base: Tensor,
    src: Tensor,
    index: Tensor,
    fill: Optional[Tensor] = None,
    relu: bool = False,
) -> Tensor:
    """Residual scatter: row ``index[k]`` = ``base[index[k]] + src[k]``, others ``base + fill``.

    Args:
        base: ``[N*T, C, H, W]``.
        src: ``[K, C, H, W]``.
        index: int64 ``[K]``, distinct rows of ``base``.
        fill: ``None``, ``[C]`` or ``[C, H, W]``, added to the rows not in ``index``.
        relu: apply ReLU last.

    Returns a new ``[N*T, C, H, W]`` tensor (inputs are not modified).
    Differentiable in ``base``, ``src`` and ``fill``.

    Equivalent PyTorch: ``afnet_kernels.reference.scatter_frames``.
    """
    if not _compiled(base):
        return reference.scatter_frames(base, src, index, fill, relu)
    _check_index_range("scatter_frames", index, base.shape[0] if base.dim() > 0 else 0)
    return torch.ops.afnet_kernels.scatter_frames(base, src, index, fill, relu)


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


def _empty(shape: Tuple[int, ...], like: Tensor, layout_of: Tensor) -> Tensor:
    fmt = reference.memory_format(layout_of) if len(shape) == 4 else torch.contiguous_format
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)


def _register_fakes() -> None:
    lib = "afnet_kernels::"

    @torch.library.register_fake(lib + "select_frames")
    def _select_fake(mask: Tensor, num_selected: Optional[int] = None) -> Tuple[Tensor, Tensor]:
        count = num_selected
        if count is None:
            count = torch.library.get_ctx().new_dynamic_size()
        index = mask.new_empty((count,), dtype=torch.int64)
        return index, mask.new_empty((mask.numel(),), dtype=torch.int64)

    @torch.library.register_fake(lib + "gather_frames")
    def _gather_fake(x: Tensor, index: Tensor, num_segments: int = 0, shift_div: int = 0) -> Tensor:
        return _empty((index.shape[0], *x.shape[1:]), x, x)

    @torch.library.register_fake(lib + "_gather_frames_backward")
    def _gather_backward_fake(
        grad: Tensor, index: Tensor, num_rows: int, num_segments: int, shift_div: int
    ) -> Tensor:
        return _empty((num_rows, *grad.shape[1:]), grad, grad)

    @torch.library.register_fake(lib + "scatter_frames")
    def _scatter_fake(
        base: Tensor, src: Tensor, index: Tensor, fill: Optional[Tensor] = None, relu: bool = False
    ) -> Tensor:
        return _empty(tuple(base.shape), base, base)

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


# --- autograd -------------------------------------------------------------------------------


def _gather_setup(ctx, inputs, output) -> None:
    x, index, num_segments, shift_div = inputs
    ctx.save_for_backward(index)
    ctx.geometry = (x.shape[0], num_segments, shift_div)


def _gather_backward(ctx, grad: Tensor):
    (index,) = ctx.saved_tensors
    num_rows, num_segments, shift_div = ctx.geometry
    grad_x = torch.ops.afnet_kernels._gather_frames_backward(
        grad, index, num_rows, num_segments, shift_div
    )
    return grad_x, None, None, None


def _gather_backward_setup(ctx, inputs, output) -> None:
    _, index, _, num_segments, shift_div = inputs
    ctx.save_for_backward(index)
    ctx.geometry = (num_segments, shift_div)


def _gather_backward_backward(ctx, grad: Tensor):
    # The backward is linear in grad; its adjoint is the forward gather.
    (index,) = ctx.saved_tensors
    num_segments, shift_div = ctx.geometry
    return torch.ops.afnet_kernels.gather_frames(grad, index, num_segments, shift_div), None, None, None, None


def _scatter_setup(ctx, inputs, output) -> None:
    base, _, index, fill, relu = inputs
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
        grad_src = torch.ops.afnet_kernels.gather_frames(grad, index, 0, 0)
    if ctx.fill_dim is not None and ctx.needs_input_grad[3]:
        # fill reaches exactly the rows that are not in index.
        keep = torch.ones(ctx.rows, dtype=grad.dtype, device=grad.device).index_fill_(0, index, 0)
        grad_fill = (grad * keep.view(-1, 1, 1, 1)).sum(0)
        if ctx.fill_dim == 1:
            grad_fill = grad_fill.sum((1, 2))
    grad_base = grad if ctx.needs_input_grad[0] else None
    return grad_base, grad_src, None, grad_fill, None


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


def _register_autograd() -> None:
    lib = "afnet_kernels::"
    pairs = {
        "gather_frames": (_gather_backward, _gather_setup),
        "_gather_frames_backward": (_gather_backward_backward, _gather_backward_setup),
        "scatter_frames": (_scatter_backward, _scatter_setup),
        "blend_branches": (_blend_backward, _blend_setup),
        "pool_branches": (_pool_backward, _pool_setup),
    }
    for name, (backward, setup) in pairs.items():
        torch.library.register_autograd(lib + name, backward, setup_context=setup)


if CPU_LIB.loaded:
    _register_fakes()
    _register_autograd()
