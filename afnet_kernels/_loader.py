"""Loads the compiled libraries of ``afnet_kernels`` and records what happened.

``_C`` holds the op schemas and the CPU kernels; ``_C_cuda`` registers the
CUDA kernels into the same ops, so it is loaded second, and only when it was
built from the same sources (:mod:`afnet_kernels._build_id`). Neither needs to
be a Python module: ``torch.ops.load_library`` runs their static registrations.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Optional

import torch

from afnet_kernels._build_id import library_build_id

log = logging.getLogger("afnet_kernels")

_REBUILD = "rebuild with `pip install --no-build-isolation -e .` (see README)"


@dataclass(frozen=True)
class Library:
    """One compiled extension: whether a file was built and whether it loaded."""

    name: str
    built: bool
    loaded: bool
    reason: Optional[str] = None


def _origin(name: str) -> Optional[str]:
    spec = importlib.util.find_spec(f"afnet_kernels.{name}")
    return None if spec is None else spec.origin


def mismatched_build(cpu_path: str, cuda_path: str) -> Optional[str]:
    """Why the CUDA library at ``cuda_path`` must not be loaded next to the CPU library at
    ``cpu_path`` (built from other sources), or None when their build ids match."""
    cpu_id, cuda_id = library_build_id(cpu_path), library_build_id(cuda_path)
    if cpu_id == cuda_id:
        return None
    return (
        f"afnet_kernels._C_cuda ({cuda_path}, build {cuda_id or 'without an id'}) was built from other "
        f"sources than afnet_kernels._C ({cpu_path}, build {cpu_id or 'without an id'}); its kernels "
        f"would not match the op schemas, so it is not loaded: {_REBUILD}"
    )


def _load(name: str, refuse: Optional[str] = None) -> Library:
    origin = _origin(name)
    if origin is None:
        return Library(name, built=False, loaded=False, reason=f"afnet_kernels.{name} was not built")
    if refuse is not None:
        return Library(name, built=True, loaded=False, reason=refuse)
    try:
        torch.ops.load_library(origin)
    except OSError as err:
        reason = (
            f"afnet_kernels.{name} ({origin}) failed to load into torch {torch.__version__} "
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
    cpu_path, cuda_path = _origin("_C"), _origin("_C_cuda")
    cuda = _load("_C_cuda", refuse=mismatched_build(cpu_path, cuda_path) if cuda_path else None)
    if cuda.built and not cuda.loaded:
        log.warning("afnet_kernels: CUDA kernels unavailable: %s", cuda.reason)
    return cpu, cuda


CPU_LIB, CUDA_LIB = load()
