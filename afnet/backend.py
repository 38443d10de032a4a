"""Which implementation of the frame ops a model runs on.

``"kernels"`` uses the compiled ``afnet_kernels`` custom ops (C++ on CPU, CUDA on
GPU); ``"torch"`` uses the pure-PyTorch reference, the fallback and the oracle.
"""

from __future__ import annotations

from types import ModuleType

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
