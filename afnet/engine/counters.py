"""Counting what the inference plan really runs: folded-conv calls and their multiply–accumulates.

A :class:`MacCounter` belongs to one call: the engine's execution context carries it to every
folded convolution of that call (``ExecutionContext.counter``), so two threads running one model
never count each other's work, and a cached value built inside a call (``F(0)``) is simply
computed without it. :func:`count_macs` is the convenience form: it makes a counter that the
forward passes of *this thread* pick up, as long as the block lasts. A compiled model counts
nothing (it has no Python left to count with).

The counts are read by :func:`afnet.count_flops` (the ``executed`` figure) and by tests that
assert the mechanism (how many rows a focal conv really saw).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Dict, Iterator, Optional

import torch

__all__ = ["MacCounter", "active_counter", "count_macs"]


@dataclass
class MacCounter:
    """Totals of the folded convolutions of the calls that carried this counter.

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

    def record(self, weight: torch.Tensor, groups: int, out: torch.Tensor) -> None:
        """Add one conv call with ``weight`` ``[C_out, C_in/groups, kh, kw]`` that produced ``out``."""
        per_output = weight.shape[1] * weight.shape[2] * weight.shape[3]
        self.macs += per_output * out.numel()
        self.calls += 1
        self.rows += out.shape[0]
        key = (out.shape[0], weight.shape[1] * groups, weight.shape[0], out.shape[2], out.shape[3])
        self.by_shape[key] = self.by_shape.get(key, 0) + 1


_THREAD = threading.local()


@contextlib.contextmanager
def count_macs() -> Iterator[MacCounter]:
    """Count every folded convolution that forward passes of this thread run inside the block."""
    if active_counter() is not None:
        raise RuntimeError("count_macs() is already active in this thread")
    counter = MacCounter()
    _THREAD.counter = counter
    try:
        yield counter
    finally:
        _THREAD.counter = None


def active_counter() -> Optional[MacCounter]:
    """The counter of the innermost :func:`count_macs` block of this thread, or None."""
    return getattr(_THREAD, "counter", None)
