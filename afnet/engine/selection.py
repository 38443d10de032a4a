"""Which frames each focal block computes: the *select* step of the engine.

``select_stage`` turns the masks of one AF stage into row indices. The number of
selected frames K must be known on the host to size the gathered batch. It is known
without reading the device when every video keeps a fixed number of frames (fixed
policies, the frame budget): then K = N·k and nothing is read back. Otherwise
(the released threshold rule, forced masks) the K's of all masks of the stage are
read together: one host sync per stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import List, Optional, Sequence

import torch

from afnet.engine.context import GateDecision

__all__ = ["FrameSelection", "count_selected", "select_stage"]


@dataclass(frozen=True)
class FrameSelection:
    """The frames one focal block computes.

    Attributes:
        index: int64 ``[K]``, rows ``n*T + t`` in ascending order.
        count: K, known on the host.
        num_segments: T.
        num_rows: N*T.
    """

    index: torch.Tensor
    count: int
    num_segments: int
    num_rows: int

    @property
    def is_empty(self) -> bool:
        return self.count == 0


def count_selected(masks: Sequence[torch.Tensor]) -> List[int]:
    """Number of selected frames of each mask ``[N, T]``, read in one host sync."""
    return torch.stack([m.reshape(-1) for m in masks]).ne(0).sum(1).tolist()


def select_stage(decisions: Sequence[GateDecision], ops: ModuleType) -> List[FrameSelection]:
    """Frame selections for the decisions of one stage; at most one host sync in total."""
    counts: List[Optional[int]] = [
        None if d.per_video is None else d.per_video * d.mask.shape[0] for d in decisions
    ]
    unknown = [i for i, c in enumerate(counts) if c is None]
    if unknown:
        for i, c in zip(unknown, count_selected([decisions[i].mask for i in unknown])):
            counts[i] = c
    selections = []
    for decision, count in zip(decisions, counts):
        n, t = decision.mask.shape
        index = ops.select_frames(decision.mask, num_selected=count)[0]
        selections.append(FrameSelection(index, count, t, n * t))
    return selections
