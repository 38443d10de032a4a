"""Calibrating a budget: the keep ratios the released threshold rule gives on the user's videos.

The frame budget (``afnet.engine.budget``) keeps a fixed number of frames per video; these
functions measure, per navigation module, the mean ratio the threshold rule keeps on some clips,
so that a budget computes about what the trained model computes. They run a frozen copy
(``afnet.freeze``) and leave the model untouched: apply the result with
``afnet.freeze(model, frame_budget=ratios)`` or ``model.frame_budget = ratios``.
"""

from __future__ import annotations

from typing import Iterable, List, NamedTuple, Optional

import torch

from afnet.engine import freeze
from afnet.layers import SpatialNavigation
from afnet.models import TSN

__all__ = ["BudgetCalibration", "calibrate_budget", "calibrate_frame_budget"]


class BudgetCalibration(NamedTuple):
    """``frame_budget``: one ratio per navigation module (forward order); ``cell_budget``: the
    mean ratio of cells the learned spatial gates computed on selected frames, or None for a
    model without them."""

    frame_budget: List[float]
    cell_budget: Optional[float]


@torch.no_grad()
def calibrate_budget(model: TSN, videos: Iterable[torch.Tensor]) -> BudgetCalibration:
    """Each navigation module's mean keep ratio under the threshold rule on ``videos`` (an
    iterable of ``[N, T, 3, H, W]`` tensors), and for a spatial model the mean cell ratio.

    A module that kept no frame at all gets the smallest ratio that still keeps none
    (``1/(4T)``), since a budget ratio must be positive; so does a cell ratio of 0.
    """
    frozen = freeze(model, frame_budget=None, cell_budget=None)
    kept: Optional[List[torch.Tensor]] = None
    cells_kept = cells_seen = torch.zeros((), dtype=torch.float64)
    frames = 0
    for video in videos:
        out = frozen.run(video)
        counts = [m.sum(dtype=torch.float64) for m in out.masks]
        kept = counts if kept is None else [k + c for k, c in zip(kept, counts)]
        frames += out.masks[0].numel()
        # The spatial gate of focal block i gates the cells of the frames navigation i selected.
        frame_masks = out.masks if len(out.masks) == len(out.cell_masks) else out.masks[:1] * len(out.cell_masks)
        for frame_mask, cells in zip(frame_masks, out.cell_masks):
            selected = frame_mask.reshape(*frame_mask.shape, 1, 1)
            cells_kept = cells_kept + (cells & selected).sum(dtype=torch.float64).cpu()
            cells_seen = cells_seen + (selected.sum(dtype=torch.float64) * cells[0, 0].numel()).cpu()
    if kept is None:
        raise ValueError("calibrate_frame_budget: videos is empty; it needs at least one [N, T, 3, H, W] batch")
    floor = 1.0 / (4 * model.num_segments)
    ratios = [max(float(k) / frames, floor) for k in kept]
    cell_budget = None
    if any(isinstance(g, SpatialNavigation) for g in frozen.plan.spatial_gates):
        cell_budget = max(float(cells_kept / cells_seen), floor) if float(cells_seen) > 0 else floor
    return BudgetCalibration(ratios, cell_budget)


def calibrate_frame_budget(model: TSN, videos: Iterable[torch.Tensor]) -> List[float]:
    """The per-module frame ratios of :func:`calibrate_budget`: the mean keep ratio of each
    navigation module under the threshold rule on ``videos``. The model is not changed."""
    return calibrate_budget(model, videos).frame_budget
