"""Training schedules: Gumbel temperature and target selection ratio (released recipe)."""

from __future__ import annotations

import math

import torch.nn as nn

from afnet.layers import Navigation, SpatialNavigation

TAU_SCHEDULES = ("exponential", "cosine", "linear")


def temperature(
    epoch: int,
    iteration: int,
    iters_per_epoch: int,
    *,
    kind: str = "exponential",
    t0: float = 1.0,
    t1: float = 0.01,
    t_end: int = 50,
) -> float:
    """Gumbel-softmax temperature for a training iteration.

    Over the first ``t_end`` epochs the progress is ``p = step / total`` with
    ``step = epoch·iters_per_epoch + iteration`` and ``total = t_end·iters_per_epoch``; after
    that the temperature stays at ``t1`` (which eval uses too).

    - ``exponential`` (released default): ``t0·(t1/t0)^p``.
    - ``cosine``: ``t1 + (t0 − t1)·(1 + cos(π·p))/2``.
    - ``linear``: ``t0 + (t1 − t0)·p``.
    """
    if kind not in TAU_SCHEDULES:
        raise ValueError(f"kind must be one of {TAU_SCHEDULES}, got {kind!r}")
    if not (t0 > 0 and t1 > 0):
        raise ValueError(f"t0 and t1 must be > 0, got t0={t0}, t1={t1}")
    if iters_per_epoch < 1 or t_end < 0:
        raise ValueError(f"need iters_per_epoch >= 1 and t_end >= 0, got {iters_per_epoch}, {t_end}")
    if epoch >= t_end:
        return t1
    p = (epoch * iters_per_epoch + iteration) / (t_end * iters_per_epoch)
    if kind == "exponential":
        return t0 * (t1 / t0) ** p
    if kind == "cosine":
        return t1 + (t0 - t1) * (1 + math.cos(math.pi * p)) / 2
    return t0 + (t1 - t0) * p


def target_ratio(epoch: int, rt: float, *, rt_begin: int = 10, rt_end: int = 20) -> float:
    """Target selection ratio for ``epoch``: 1 until ``rt_begin``, then two thirds and one
    third of the way down to ``rt`` (split at ``rt_begin + (rt_end − rt_begin)//2``), then
    ``rt`` from ``rt_end`` on. Released scripts use ``rt_begin=10, rt_end=20``."""
    if not 0 < rt <= 1:
        raise ValueError(f"rt must be in (0, 1], got {rt}")
    if rt_end < rt_begin:
        raise ValueError(f"rt_end must be >= rt_begin, got rt_begin={rt_begin}, rt_end={rt_end}")
    if epoch < rt_begin:
        return 1.0
    if epoch < rt_begin + (rt_end - rt_begin) // 2:
        return rt + (1.0 - rt) * 2 / 3
    if epoch < rt_end:
        return rt + (1.0 - rt) / 3
    return rt


def set_temperature(model: nn.Module, tau: float) -> int:
    """Set the Gumbel temperature of every navigation module (temporal and spatial) under
    ``model``; returns how many."""
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    navigations = [m for m in model.modules() if isinstance(m, (Navigation, SpatialNavigation))]
    for m in navigations:
        m.tau = tau
    return len(navigations)
