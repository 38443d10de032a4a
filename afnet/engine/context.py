"""How one inference pass runs: the decisions (``afnet.models.decisions``), plus the engine's own
settings: NaN-preserving epilogues, skipping or computing every frame, padded counts and the
MAC counter of this call."""

from __future__ import annotations

from types import ModuleType
from typing import Optional, Sequence

import torch

import afnet_kernels.reference as reference_ops
from afnet.engine.counters import MacCounter
from afnet.models.decisions import Decisions

__all__ = ["ExecutionContext"]


class ExecutionContext(Decisions):
    """The settings of one engine pass.

    Args (besides those of :class:`~afnet.models.decisions.Decisions`):
        exact: NaN-preserving epilogues in the inference plan (see ``afnet.engine.folding``).
        skip_frames: the engine computes only the selected frames (``execution="sparse"``);
            False computes every frame with the folded plan (``execution="folded"``).
        pad_counts: round frame counts that are read up to a bucket (``"pow2"``), see
            ``afnet.engine.selection``.
        counter: the :class:`~afnet.engine.counters.MacCounter` this call's folded convs add to,
            or None. Per call, so two threads never count each other's work.
    """

    def __init__(
        self,
        ops: ModuleType = reference_ops,
        forced_masks: Optional[Sequence[torch.Tensor]] = None,
        frame_budget: Optional[Sequence[int]] = None,
        forced_cells: Optional[Sequence[torch.Tensor]] = None,
        cell_budget: Optional[float] = None,
        *,
        exact: bool = False,
        skip_frames: bool = True,
        pad_counts: Optional[str] = None,
        counter: Optional[MacCounter] = None,
    ) -> None:
        super().__init__(ops, forced_masks, frame_budget, forced_cells, cell_budget)
        self.exact = exact
        self.skip_frames = skip_frames
        self.pad_counts = pad_counts
        self.counter = counter
