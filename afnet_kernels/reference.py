"""Pure-PyTorch reference of every ``afnet_kernels`` op.

These functions are the test oracle for the C++/CUDA kernels and the fallback
when the compiled library is missing. They are written for clarity, not speed,
and build every intermediate the kernels avoid (the shifted tensor, the
upsampled ample branch).

Layout convention: a clip batch of ``N`` videos with ``T`` frames is stored
frame-major as ``[N*T, C, H, W]``, row ``n*T + t``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "memory_format",
    "select_frames",
    "temporal_shift",
    "gather_frames",
    "scatter_frames",
    "upsample_nearest",
    "blend_branches",
    "pool_branches",
]


def select_frames(
    mask: torch.Tensor, num_selected: Optional[int] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Indices of the selected frames.

    Args:
        mask: ``[N, T]``, bool or 0/1.
        num_selected: accepted for parity with the compiled op; the reference
            always counts the selected frames itself.

    Returns:
        ``index``: int64 ``[K]``, the selected rows ``n*T + t`` in ascending order.
        ``inverse``: int64 ``[N*T]``, each row's position in ``index`` or -1.
    """
    flat = mask.reshape(-1) != 0
    index = torch.nonzero(flat).reshape(-1)
    inverse = torch.full(flat.shape, -1, dtype=torch.int64, device=mask.device)
    inverse[index] = torch.arange(index.numel(), device=mask.device)
    return index, inverse


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """The layout the ops return for input ``x``: channels_last when ``x`` is
    dense in it and not plain contiguous, contiguous otherwise."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _like(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out`` in the memory format of ``x`` (see ``memory_format``)."""
    return out.contiguous(memory_format=memory_format(x))


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
) -> torch.Tensor:
    """Rows of ``x`` ``[N*T, C, H, W]`` at ``index`` ``[K]``, optionally TSM-shifted.

    Returns ``[K, C, H, W]`` equal to ``temporal_shift(x)[index]`` when ``shift_div > 0``.
    """
    if shift_div > 0:
        x = temporal_shift(x, num_segments, shift_div)
    return _like(x.index_select(0, index), x)


def _fill_view(fill: torch.Tensor) -> torch.Tensor:
    return fill.reshape(-1, 1, 1) if fill.dim() == 1 else fill


def scatter_frames(
    base: torch.Tensor,
    src: torch.Tensor,
    index: torch.Tensor,
    fill: Optional[torch.Tensor] = None,
    relu: bool = False,
) -> torch.Tensor:
    """Residual scatter of the computed frames.

    Row ``index[k]`` of the output is ``base[index[k]] + src[k]``; every other
    row is ``base + fill`` (``fill`` absent, ``[C]`` or ``[C, H, W]``). ReLU last.

    Args:
        base: ``[N*T, C, H, W]``.
        src: ``[K, C, H, W]``.
        index: int64 ``[K]``, distinct rows of ``base``.
    """
    out = base + _fill_view(fill) if fill is not None else base.clone()
    out = out.index_copy(0, index, base.index_select(0, index) + src)
    return _like(torch.relu(out) if relu else out, base)


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
    up = upsample_nearest(ample, focal.shape[-2:])
    th = _theta_view(theta)
    out = th * up + (1 - th) * focal
    return _like(torch.relu(out) if relu else out, focal)


def pool_branches(ample: torch.Tensor, focal: torch.Tensor) -> torch.Tensor:
    """Pooled input of the fusion attention, ``mean_hw(up(ample) + focal)``, as ``[N*T, C]``."""
    up = upsample_nearest(ample, focal.shape[-2:])
    return (up + focal).mean(dim=(2, 3))
