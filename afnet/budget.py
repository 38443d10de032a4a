"""The frame budget: an inference-time decision rule with a fixed number of frames per video.

The released rule keeps a frame when its "keep" logit beats its "skip" logit (``l1 > l0``), so
how many frames a block computes depends on the data and must be read back from the device
before the gathered batch can be sized. With a budget, navigation module ``b`` keeps exactly
``k_b = floor(r_b·T + 1/2)`` frames of every video: those with the largest keep margin
``l1 − l0``, ties going to the earlier frame. K = N·k_b is then known from the shapes alone, so
the forward pass reads nothing back from the device (CUDA graphs, ``torch.compile`` with
``fullgraph=True``, export).

This is a different decision rule from the released one: with a budget a released checkpoint
no longer reproduces the released predictions exactly (see the README for how often the two
rules agree on the golden fixtures). :func:`calibrate_frame_budget` sets each module's ratio to
the mean keep ratio the threshold rule gives on the user's videos.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import TYPE_CHECKING, Iterable, List, Optional, Sequence, Union

import torch

if TYPE_CHECKING:  # pragma: no cover
    from afnet.models.tsn import TSN

FrameBudget = Union[None, float, List[float]]

__all__ = ["FrameBudget", "calibrate_frame_budget", "frames_for_ratio", "frames_per_module", "validate_frame_budget"]


def frames_for_ratio(ratio: float, num_segments: int) -> int:
    """``floor(ratio·T + 1/2)``: frames a module with budget ``ratio`` keeps per video."""
    return int(math.floor(ratio * num_segments + 0.5))


def _is_ratio(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and 0 < float(value) <= 1


def validate_frame_budget(model: "TSN", value: object) -> FrameBudget:
    """``value`` checked for ``model``: None, a ratio in (0, 1], or a sequence with one ratio in
    (0, 1] per navigation module. Raises ``ValueError``/``TypeError`` naming what is wrong."""
    if value is None:
        return None
    from afnet.layers import Navigation

    gates = model.navigation_modules
    fixed = [type(g).__name__ for g in gates if not isinstance(g, Navigation)]
    if fixed:
        raise ValueError(
            "frame_budget applies to learned navigation; this model uses a fixed policy, which already "
            f"keeps exactly round(rt·T) frames per video ({fixed[0]})"
        )
    if any(g.soft for g in gates):
        raise ValueError("frame_budget needs binary navigation; this model uses soft_weights")
    if isinstance(value, Real) and not isinstance(value, bool):
        if not _is_ratio(value):
            raise ValueError(f"frame_budget must be a float in (0, 1], got {value!r}")
        return float(value)
    if isinstance(value, (str, bytes, bool)) or not isinstance(value, Sequence):
        raise TypeError(f"frame_budget must be None, a float in (0, 1] or a sequence of them, got {value!r}")
    ratios = list(value)
    if len(ratios) != len(gates):
        raise ValueError(
            f"frame_budget: got {len(ratios)} ratios but the model has {len(gates)} navigation modules"
        )
    bad = [(i, r) for i, r in enumerate(ratios) if not _is_ratio(r)]
    if bad:
        i, r = bad[0]
        raise ValueError(f"frame_budget[{i}] must be a float in (0, 1], got {r!r}")
    return [float(r) for r in ratios]


def frames_per_module(budget: FrameBudget, num_segments: int, num_modules: int) -> Optional[List[int]]:
    """The ``k_b`` of each of ``num_modules`` navigation modules under a validated budget, or None."""
    if budget is None:
        return None
    ratios = [budget] * num_modules if isinstance(budget, float) else budget
    return [frames_for_ratio(r, num_segments) for r in ratios]


@torch.no_grad()
def calibrate_frame_budget(model: "TSN", videos: Iterable[torch.Tensor]) -> List[float]:
    """Set ``model.frame_budget`` to each navigation module's mean keep ratio under the threshold
    rule on ``videos`` (an iterable of ``[N, T, 3, H, W]`` tensors), and return those ratios.

    A module that kept no frame at all gets the smallest ratio that still keeps none
    (``1/(4T)``), since a budget ratio must be positive.
    """
    saved_budget, was_training = model.frame_budget, model.training
    model.frame_budget = None
    model.eval()
    kept: Optional[List[torch.Tensor]] = None
    frames = 0
    try:
        for video in videos:
            _, masks = model(video, return_masks=True)
            counts = [m.sum(dtype=torch.float64) for m in masks]
            kept = counts if kept is None else [k + c for k, c in zip(kept, counts)]
            frames += masks[0].numel()
    except BaseException:
        model.frame_budget = saved_budget
        raise
    finally:
        model.train(was_training)
    if kept is None:
        model.frame_budget = saved_budget
        raise ValueError("calibrate_frame_budget: videos is empty; it needs at least one [N, T, 3, H, W] batch")
    floor = 1.0 / (4 * model.num_segments)
    ratios = [max(float(k) / frames, floor) for k in kept]
    model.frame_budget = ratios
    return ratios
