"""The frame budget: an inference-time decision rule with a fixed number of frames per video.

The released rule keeps a frame when its "keep" logit beats its "skip" logit (``l1 > l0``), so
how many frames a block computes depends on the data and must be read back from the device
before the gathered batch can be sized. With a budget, navigation module ``b`` keeps exactly
``k_b = floor(r_b·T + 1/2)`` frames of every video (:func:`afnet.layers.count_for_ratio`): those
with the largest keep margin ``l1 − l0``, ties going to the earlier frame, NaN margins last. K =
N·k_b is then known from the shapes alone, so the forward pass reads nothing back from the
device (CUDA graphs, ``torch.compile`` with ``fullgraph=True``, export), whatever the input.

A spatial model's learned spatial gates need a static count too: under a budget each keeps
``floor(r·Gh·Gw + 1/2)`` cells of every frame, ``r`` the *cell budget* (by default the model's
``rs``).

This is a different decision rule from the released one: with a budget a released checkpoint
no longer reproduces the released predictions exactly (see the README for how often the two
rules agree on the golden fixtures). ``afnet.calibrate_frame_budget`` measures each module's
keep ratio under the threshold rule on the user's videos.
"""

from __future__ import annotations

from numbers import Real
from typing import Any, List, Mapping, Optional, Sequence, Union

import torch.nn as nn

from afnet.layers import FixedPolicy, Navigation, SpatialNavigation, count_for_ratio, is_ratio

FrameBudget = Union[None, float, List[float]]

__all__ = ["FrameBudget", "check_cell_budget", "frames_per_module", "is_static", "validate_frame_budget"]


def validate_frame_budget(gates: Sequence[nn.Module], value: object) -> FrameBudget:
    """``value`` checked for a model with the temporal ``gates`` (forward order): None, a ratio in
    (0, 1], or a sequence with one ratio in (0, 1] per navigation module. Raises
    ``ValueError``/``TypeError`` naming what is wrong."""
    if value is None:
        return None
    fixed = [type(g).__name__ for g in gates if not isinstance(g, Navigation)]
    if fixed:
        raise ValueError(
            "frame_budget applies to learned navigation; this model uses a fixed policy, which already "
            f"keeps exactly a fixed number of frames per video ({fixed[0]})"
        )
    if any(g.soft for g in gates):
        raise ValueError("frame_budget needs binary navigation; this model uses soft_weights")
    if isinstance(value, Real) and not isinstance(value, bool):
        if not is_ratio(value):
            raise ValueError(f"frame_budget must be a float in (0, 1], got {value!r}")
        return float(value)
    if isinstance(value, (str, bytes, bool)) or not isinstance(value, Sequence):
        raise TypeError(f"frame_budget must be None, a float in (0, 1] or a sequence of them, got {value!r}")
    ratios = list(value)
    if len(ratios) != len(gates):
        raise ValueError(f"frame_budget: got {len(ratios)} ratios but the model has {len(gates)} navigation modules")
    bad = [(i, r) for i, r in enumerate(ratios) if not is_ratio(r)]
    if bad:
        i, r = bad[0]
        raise ValueError(f"frame_budget[{i}] must be a float in (0, 1], got {r!r}")
    return [float(r) for r in ratios]


def frames_per_module(budget: FrameBudget, num_segments: int, num_modules: int) -> Optional[List[int]]:
    """The ``k_b`` of each of ``num_modules`` navigation modules under a validated budget, or None."""
    if budget is None:
        return None
    ratios = [budget] * num_modules if isinstance(budget, float) else budget
    return [count_for_ratio(r, num_segments) for r in ratios]


def check_cell_budget(
    spatial_gates: Sequence[nn.Module], frame_budget: FrameBudget, cell_budget: Any, config: Mapping[str, Any]
) -> Optional[float]:
    """The cell ratio learned spatial gates keep per frame: ``cell_budget`` if given, else under a
    frame budget the model's ``rs`` (its training target); None where no learned spatial gate
    needs one. Raises ``ValueError`` naming the fix when a budgeted spatial model has neither."""
    if cell_budget is not None and not is_ratio(cell_budget):
        raise ValueError(f"cell_budget must be a float in (0, 1], got {cell_budget!r}")
    learned = any(isinstance(g, SpatialNavigation) for g in spatial_gates)
    if cell_budget is not None:
        if not learned:
            raise ValueError("cell_budget applies to learned spatial navigation; this model has none")
        return float(cell_budget)
    if frame_budget is None or not learned:
        return None
    rs = config.get("rs")
    if rs is None:
        raise ValueError(
            "a frame budget on a model with learned spatial navigation needs a static number of cells per "
            "frame too: pass cell_budget=<ratio of cells in (0, 1]>, or create the model with rs=<ratio>"
        )
    return float(rs)


def is_static(temporal_gates: Sequence[nn.Module], spatial_gates: Sequence[nn.Module], frame_budget: FrameBudget,
              cell_budget: Optional[float]) -> bool:
    """Whether a forward with these gates and budgets knows every count without reading the device."""
    frames = frame_budget is not None or all(isinstance(g, FixedPolicy) for g in temporal_gates)
    cells = cell_budget is not None or not any(isinstance(g, SpatialNavigation) for g in spatial_gates)
    return frames and cells
