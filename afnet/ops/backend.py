"""Which implementation of the frame ops a model runs on.

``"kernels"`` uses the compiled ``afnet_kernels`` custom ops (C++ on CPU, CUDA on
GPU); ``"torch"`` uses the pure-PyTorch reference, the fallback and the oracle.
Both modules expose the same functions with the same signatures.
"""

from __future__ import annotations

from types import ModuleType

import torch

import afnet_kernels
import afnet_kernels.reference

BACKENDS = ("kernels", "torch")


def get_ops(backend: str) -> ModuleType:
    """Module exposing ``select_frames``, ``gather_frames``, ``scatter_frames``,
    ``blend_branches`` and ``pool_branches`` for ``backend``."""
    if backend == "kernels":
        return afnet_kernels
    if backend == "torch":
        return afnet_kernels.reference
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def shift_frames(
    x: torch.Tensor, num_segments: int, shift_div: int, ops: ModuleType = afnet_kernels
) -> torch.Tensor:
    """``temporal_shift(x)`` of ``x`` ``[N*T, C, H, W]`` in one pass, in ``x``'s memory format.

    A gather of every row with the shift fused, so the compiled kernels never build the
    intermediate copies of the pure-PyTorch shift. Differentiable (the ops have autograd).
    """
    index = torch.arange(x.shape[0], device=x.device)
    return ops.gather_frames(x, index, num_segments, shift_div, validate=False)  # arange: in range
