"""Frame and spatial-tile gather/scatter and branch-fusion ops for AFNet, on CPU and CUDA.

Public ops (each also ``torch.ops.afnet_kernels.<name>``): ``select_frames``,
``gather_frames``, ``scatter_frames`` (in place: ``scatter_frames_``), ``blend_branches``,
``pool_branches``, ``gather_tiles``, ``scatter_tiles``.
``backends()`` says which implementations were built and are usable here;
``reference`` holds the pure-PyTorch versions (test oracle and fallback).
"""

from __future__ import annotations

from typing import Any, Dict

import torch

from afnet_kernels import reference
from afnet_kernels._loader import CPU_LIB, CUDA_LIB
from afnet_kernels.ops import (
    blend_branches,
    gather_frames,
    gather_tiles,
    pool_branches,
    scatter_frames,
    scatter_frames_,
    scatter_tiles,
    select_frames,
)

__all__ = [
    "backends",
    "blend_branches",
    "gather_frames",
    "gather_tiles",
    "pool_branches",
    "reference",
    "scatter_frames",
    "scatter_frames_",
    "scatter_tiles",
    "select_frames",
]


def backends() -> Dict[str, Any]:
    """What was built and what is usable here, e.g.::

        {"cpu": {"built": True, "usable": True, "reason": None},
         "cuda": {"built": True, "usable": False, "reason": "no CUDA device is visible"},
         "reference": True}
    """
    cuda_reason = CUDA_LIB.reason
    cuda_usable = CUDA_LIB.loaded and torch.cuda.is_available()
    if CUDA_LIB.loaded and not cuda_usable:
        cuda_reason = "built and loaded, but no CUDA device is visible"
    return {
        "cpu": {"built": CPU_LIB.built, "usable": CPU_LIB.loaded, "reason": CPU_LIB.reason},
        "cuda": {"built": CUDA_LIB.built, "usable": cuda_usable, "reason": cuda_reason},
        "reference": True,
    }
