"""Which frames each focal block computes: the *select* step of the engine.

``select_stage`` turns the masks of one AF stage into row indices. The number of
selected frames K must be known on the host to size the gathered batch. It is known
without reading the device when every video keeps a fixed number of frames (fixed
policies, the frame budget): then K = N·k and nothing is read back. Otherwise
(the released threshold rule, forced masks) the K's of all masks of the stage are
read together: one host sync per stage.

Counts that had to be read can be rounded up to a bucket (``pad_counts``): the index is then
padded with -1 entries, which the gather turns into zero rows and the scatter ignores. The
shapes then come from a small set (powers of two), so a compiled or CUDA-graphed stage is
reused instead of rebuilt for every K.

With spatial gates a focal block computes cells, not frames: its selection lists the cells
``(row, cy, cx)`` of selected frames that its spatial mask keeps, as flat ids
``row·Gh·Gw + cy·Gw + cx`` (:class:`CellSelection`).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import List, Optional, Sequence, Tuple, Union

import torch

from afnet.models.decisions import CellDecision, GateDecision

__all__ = ["COUNT_BUCKETS", "CellSelection", "FrameSelection", "count_selected", "pow2_bucket", "select_stage"]


@dataclass(frozen=True)
class FrameSelection:
    """The frames one focal block computes.

    Attributes:
        index: int64 ``[K]``, rows ``n*T + t`` in ascending order.
        count: K, known on the host.
        num_segments: T.
        num_rows: N*T.
        padded: whether ``index`` may end in -1 entries (a count rounded up to its bucket).
    """

    index: torch.Tensor
    count: int
    num_segments: int
    num_rows: int
    padded: bool = False

    @property
    def is_empty(self) -> bool:
        return self.count == 0


@dataclass(frozen=True)
class CellSelection:
    """The cells one focal block computes (spatial navigation).

    Attributes:
        index: int64 ``[K]``, flat cell ids ``row·Gh·Gw + cy·Gw + cx`` in ascending order.
        count: K, known on the host.
        grid: ``(Gh, Gw)``.
        num_segments: T.
    """

    index: torch.Tensor
    count: int
    grid: Tuple[int, int]
    num_segments: int

    @property
    def is_empty(self) -> bool:
        return self.count == 0


Selection = Union[FrameSelection, CellSelection]


def _cell_mask(decision: GateDecision, cells: CellDecision) -> torch.Tensor:
    """``[N, T·Gh·Gw]``: the cells of selected frames that the spatial mask keeps."""
    n, t = decision.mask.shape
    return (decision.mask.reshape(n * t, 1, 1) * cells.mask).reshape(n, -1)


def count_selected(masks: Sequence[torch.Tensor]) -> List[int]:
    """Number of selected frames of each mask ``[N, T]``, read in one host sync."""
    return torch.stack([m.ne(0).sum() for m in masks]).tolist()


def pow2_bucket(count: int, limit: int) -> int:
    """The smallest power of two >= ``count`` (0 stays 0), at most ``limit``."""
    return min(limit, 1 << (count - 1).bit_length()) if count > 0 else 0


COUNT_BUCKETS = {"pow2": pow2_bucket}


def select_stage(
    decisions: Sequence[GateDecision],
    ops: ModuleType,
    cells: Optional[Sequence[CellDecision]] = None,
    pad_counts: Optional[str] = None,
) -> List[Selection]:
    """The selections of one stage's focal blocks (cells where ``cells`` are given); at most one
    host sync in total, none when every count is known from the gates. With ``pad_counts``
    (``"pow2"``) every count that was read is padded to the bucket of the stage's largest one."""
    masks: List[torch.Tensor] = []
    counts: List[Optional[int]] = []
    # A spatial policy known to keep every cell needs no tiles: the frame path has no halo to pay.
    tiled = [cells is not None and cells[i].per_frame != cells[i].mask[0].numel() for i in range(len(decisions))]
    for i, d in enumerate(decisions):
        per_video = d.per_video
        if not tiled[i]:
            masks.append(d.mask)
        else:
            masks.append(_cell_mask(d, cells[i]))
            per_frame = cells[i].per_frame
            per_video = None if per_video is None or per_frame is None else per_video * per_frame
        counts.append(None if per_video is None else per_video * d.mask.shape[0])
    unknown = [i for i, c in enumerate(counts) if c is None]
    if unknown:
        read = count_selected([masks[i] for i in unknown])
        if pad_counts is not None:
            bucket = COUNT_BUCKETS[pad_counts](max(read), min(masks[i].numel() for i in unknown))
            read = [bucket] * len(read)
        for i, c in zip(unknown, read):
            counts[i] = c
    selections: List[Selection] = []
    for i, (d, mask, count) in enumerate(zip(decisions, masks, counts)):
        n, t = d.mask.shape
        index = ops.select_frames(mask, num_selected=count, validate=False)[0]
        if not tiled[i]:
            # Only counts that were read are rounded up to a bucket, so only their indices end in -1.
            selections.append(FrameSelection(index, count, t, n * t, padded=pad_counts is not None and i in unknown))
        else:
            selections.append(CellSelection(index, count, tuple(cells[i].mask.shape[1:]), t))
    return selections
