"""Loads the compiled libraries of ``afnet_kernels`` and records what happened.

``_C`` holds the op schemas and the CPU kernels; ``_C_cuda`` registers the
CUDA kernels into the same ops, so it is loaded second. Neither needs to be a
Python module: ``torch.ops.load_library`` runs their static registrations.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Optional

import torch

log = logging.getLogger("afnet_kernels")

_REBUILD = "rebuild with `pip install --no-build-isolation -e .` (see README)"


@dataclass(frozen=True)
class Library:
    """One compiled extension: whether a file was built and whether it loaded."""

    name: str
    built: bool
    loaded: bool
    reason: Optional[str] = None


def _load(name: str) -> Library:
    spec = importlib.util.find_spec(f"afnet_kernels.{name}")
    if spec is None or spec.origin is None:
        return Library(name, built=False, loaded=False, reason=f"afnet_kernels.{name} was not built")
    try:
        torch.ops.load_library(spec.origin)
    except OSError as err:
        reason = (
            f"afnet_kernels.{name} ({spec.origin}) failed to load into torch {torch.__version__} "
            f"(CUDA {torch.version.cuda}): {err}. It was most likely built against another torch "
            f"or CUDA version; {_REBUILD}"
        )
        return Library(name, built=True, loaded=False, reason=reason)
    return Library(name, built=True, loaded=True)


def load() -> tuple[Library, Library]:
    """Loads ``_C`` then ``_C_cuda``; logs a warning for whatever is missing."""
    cpu = _load("_C")
    if not cpu.loaded:
        log.warning(
            "afnet_kernels: compiled ops unavailable (%s); falling back to the pure-PyTorch "
            "reference ops, which are much slower",
            cpu.reason,
        )
        cuda = Library("_C_cuda", built=False, loaded=False, reason="needs afnet_kernels._C")
        return cpu, cuda
    cuda = _load("_C_cuda")
    if cuda.built and not cuda.loaded:
        log.warning("afnet_kernels: CUDA kernels unavailable: %s", cuda.reason)
    return cpu, cuda


CPU_LIB, CUDA_LIB = load()
