"""Triton implementation of the ``blend_branches`` forward.

An alternative to the CUDA C++ kernel for machines where Triton is the easier
route. It computes ``θ·up(ample) + (1−θ)·focal`` (ReLU if asked) with the
nearest upsampling folded into the indexing, exactly as
``afnet_kernels.reference.blend_branches`` does. Runs on GPU tensors, or on CPU
tensors under ``TRITON_INTERPRET=1`` (set before this module is imported, as
``triton.jit`` reads it when the kernel is defined).
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from afnet_kernels.reference import memory_format

__all__ = ["blend_branches_triton"]

_BLOCK = 1024


@triton.jit
def _blend_kernel(
    ample_ptr,
    focal_ptr,
    theta_ptr,
    out_ptr,
    total,
    C,
    H,
    W,
    h,
    w,
    scale_h,
    scale_w,
    CHANNELS_LAST: tl.constexpr,
    RELU: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    if CHANNELS_LAST:
        c = offs % C
        pixel = offs // C
        x = pixel % W
        rest = pixel // W
        y = rest % H
        n = rest // H
    else:
        x = offs % W
        rest = offs // W
        y = rest % H
        rest = rest // H
        c = rest % C
        n = rest // C
    # F.interpolate(mode="nearest"): floor(dst * float32(in / out)), clamped.
    sy = tl.minimum((y.to(tl.float32) * scale_h).to(tl.int64), h - 1)
    sx = tl.minimum((x.to(tl.float32) * scale_w).to(tl.int64), w - 1)
    if CHANNELS_LAST:
        ample_offs = ((n * h + sy) * w + sx) * C + c
    else:
        ample_offs = ((n * C + c) * h + sy) * w + sx
    f = tl.load(focal_ptr + offs, mask=mask).to(ACC)
    a = tl.load(ample_ptr + ample_offs, mask=mask).to(ACC)
    th = tl.load(theta_ptr + n * C + c, mask=mask).to(ACC)
    result = th * a + (1.0 - th) * f
    if RELU:
        result = tl.where(result < 0.0, 0.0, result)  # keeps NaN, as torch.relu
    tl.store(out_ptr + offs, result.to(out_ptr.dtype.element_ty), mask=mask)


def _scale(in_size: int, out_size: int) -> float:
    # PyTorch divides in float32; an exact float32 value survives the kernel's cast.
    return float(np.float32(in_size) / np.float32(out_size))


def blend_branches_triton(
    ample: torch.Tensor, focal: torch.Tensor, theta: torch.Tensor, relu: bool = True
) -> torch.Tensor:
    """``θ·up(ample) + (1−θ)·focal`` (then ReLU if ``relu``) without building ``up(ample)``.

    Args:
        ample: ``[N*T, C, h, w]``.
        focal: ``[N*T, C, H, W]``, same dtype and device.
        theta: ``[N*T, C]`` or ``[N*T, C, 1, 1]``.

    Returns ``[N*T, C, H, W]`` in focal's memory format.
    Equivalent PyTorch: ``afnet_kernels.reference.blend_branches``.
    """
    if ample.dim() != 4 or focal.dim() != 4:
        raise ValueError(
            f"blend_branches_triton: ample and focal must be 4-D, got {tuple(ample.shape)} "
            f"and {tuple(focal.shape)}"
        )
    rows, channels, height, width = focal.shape
    if ample.shape[:2] != focal.shape[:2]:
        raise ValueError(
            f"blend_branches_triton: ample must have N*T, C = {rows}, {channels} like focal, "
            f"got shape {tuple(ample.shape)}"
        )
    if theta.numel() != rows * channels:
        raise ValueError(
            f"blend_branches_triton: theta must be [N*T, C]=[{rows}, {channels}] or "
            f"[N*T, C, 1, 1], got shape {tuple(theta.shape)}"
        )
    fmt = memory_format(focal)
    focal = focal.contiguous(memory_format=fmt)
    ample = ample.contiguous(memory_format=fmt)
    theta = theta.reshape(rows, channels).contiguous()
    out = torch.empty_like(focal, memory_format=fmt)
    total = out.numel()
    if total == 0:
        return out
    h, w = ample.shape[-2:]
    _blend_kernel[(triton.cdiv(total, _BLOCK),)](
        ample,
        focal,
        theta,
        out,
        total,
        channels,
        height,
        width,
        h,
        w,
        _scale(h, height),
        _scale(w, width),
        CHANNELS_LAST=fmt == torch.channels_last,
        RELU=relu,
        ACC=tl.float64 if focal.dtype == torch.float64 else tl.float32,
        BLOCK=_BLOCK,
    )
    return out
