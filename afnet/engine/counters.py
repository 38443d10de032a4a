"""Counting what the inference plan really runs: folded-conv calls and their multiply–accumulates.

The counter is read by :func:`afnet.count_flops` (the ``executed`` figure) and by tests that
assert the mechanism (how many rows a focal conv really saw). It is a plain module-level
slot, not a ContextVar, so that a compiled model never traces a context switch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Dict, Iterator, Optional

import torch

__all__ = ["MacCounter", "count_macs", "record_conv", "paused"]


@dataclass
class MacCounter:
    """Totals of the folded convolutions run while the counter was active.

    Attributes:
        macs: multiply–accumulates, ``c_in/groups · k_h · k_w`` per output element.
        calls: folded-conv calls.
        rows: sum over calls of the batch size (frames or tiles) each call computed.
        by_shape: calls per (rows, c_in, c_out, out_h, out_w) — what the tests read.
    """

    macs: int = 0
    calls: int = 0
    rows: int = 0
    by_shape: Dict[tuple, int] = field(default_factory=dict)


_ACTIVE: Optional[MacCounter] = None


@contextlib.contextmanager
def count_macs() -> Iterator[MacCounter]:
    """Count every folded convolution run inside the block (not re-entrant)."""
    global _ACTIVE
    if _ACTIVE is not None:
        raise RuntimeError("count_macs() is already active")
    counter = MacCounter()
    _ACTIVE = counter
    try:
        yield counter
    finally:
        _ACTIVE = None


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Suspend counting (cached values such as ``F(0)`` are not per-video work)."""
    global _ACTIVE
    saved, _ACTIVE = _ACTIVE, None
    try:
        yield
    finally:
        _ACTIVE = saved


def record_conv(weight: torch.Tensor, groups: int, out: torch.Tensor) -> None:
    """Add one conv call with ``weight`` ``[C_out, C_in/groups, kh, kw]`` that produced ``out``."""
    counter = _ACTIVE
    if counter is None:
        return
    per_output = weight.shape[1] * weight.shape[2] * weight.shape[3]
    counter.macs += per_output * out.numel()
    counter.calls += 1
    counter.rows += out.shape[0]
    key = (out.shape[0], weight.shape[1] * groups, weight.shape[0], out.shape[2], out.shape[3])
    counter.by_shape[key] = counter.by_shape.get(key, 0) + 1
