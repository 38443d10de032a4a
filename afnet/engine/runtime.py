"""The inference settings, and the one engine forward that the live and the frozen model share."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from afnet.engine.budget import FrameBudget, check_cell_budget, frames_per_module, validate_frame_budget
from afnet.engine.context import ExecutionContext
from afnet.engine.counters import MacCounter
from afnet.engine.executor import run_plan
from afnet.engine.folding import memory_format_of
from afnet.engine.plan import InferencePlan
from afnet.engine.selection import COUNT_BUCKETS
from afnet.models.tsn import VideoOutput, masks_out
from afnet.ops import BACKENDS, get_ops

__all__ = ["ENGINE_EXECUTIONS", "EXECUTIONS", "InferenceSettings", "run_engine"]

#: Executions of a live model; the engine runs the last two.
EXECUTIONS = ("dense", "sparse", "folded")
ENGINE_EXECUTIONS = ("sparse", "folded")
MEMORY_FORMATS = (torch.channels_last, torch.contiguous_format, None)


@dataclass(frozen=True)
class InferenceSettings:
    """How the engine runs a model in inference.

    Attributes:
        execution: ``"sparse"`` (only the selected frames computed), ``"folded"`` (every frame
            computed with the folded plan, masked as released: the gain of folding apart from
            the gain of skipping) or, for the live model only, ``"dense"`` (the released
            computation, unfolded).
        backend: ``"kernels"`` (compiled ``afnet_kernels``) or ``"torch"`` (pure PyTorch).
        frame_budget: None (the released threshold rule), a ratio in (0, 1] for every
            navigation module, or one ratio per module (``afnet.engine.budget``).
        cell_budget: the ratio of cells learned spatial gates keep per frame; None: the model's
            ``rs`` under a frame budget, else the threshold rule.
        pad_counts: None, or ``"pow2"`` to pad the frame counts the threshold rule reads up to a
            power of two (the padding rows are computed and dropped), so that ``torch.compile``
            sees a bounded set of shapes. Same results.
        memory_format: the layout the engine runs in (channels_last by default, faster with
            oneDNN and cuDNN); None keeps the input's layout.
    """

    execution: str = "sparse"
    backend: str = "kernels"
    frame_budget: FrameBudget = None
    cell_budget: Optional[float] = None
    pad_counts: Optional[str] = None
    memory_format: Optional[torch.memory_format] = torch.channels_last

    def __post_init__(self) -> None:
        if self.execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {EXECUTIONS}, got {self.execution!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.pad_counts is not None and self.pad_counts not in COUNT_BUCKETS:
            raise ValueError(f"pad_counts must be None or one of {tuple(COUNT_BUCKETS)}, got {self.pad_counts!r}")
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(
                f"memory_format must be torch.channels_last, torch.contiguous_format or None, got {self.memory_format!r}"
            )

    def checked(self, temporal_gates: Sequence[torch.nn.Module], spatial_gates: Sequence[torch.nn.Module],
                config: Mapping[str, Any]) -> "InferenceSettings":
        """These settings with the budgets validated for a model with these gates and config."""
        frame_budget = validate_frame_budget(temporal_gates, self.frame_budget)
        cell_budget = check_cell_budget(spatial_gates, frame_budget, self.cell_budget, config)
        return replace(self, frame_budget=frame_budget, cell_budget=cell_budget)


def run_engine(
    plan: InferencePlan,
    classify: Callable[[torch.Tensor, int, int], torch.Tensor],
    video: torch.Tensor,
    settings: InferenceSettings,
    *,
    masks: Optional[Sequence[torch.Tensor]] = None,
    spatial_masks: Optional[Sequence[torch.Tensor]] = None,
    counter: Optional[MacCounter] = None,
) -> VideoOutput:
    """One engine forward: ``video`` ``[N, T, 3, H, W]`` (checked by the caller) through ``plan``
    and ``classify(features [N*T, F], N, T) -> [N, classes]``, with ``settings`` (checked)."""
    n, t = video.shape[:2]
    x = video.reshape((n * t,) + tuple(video.shape[2:]))
    x = x.contiguous(memory_format=settings.memory_format or memory_format_of(x))
    ctx = ExecutionContext(
        get_ops(settings.backend),
        masks,
        frames_per_module(settings.frame_budget, t, len(plan.temporal_gates)),
        spatial_masks,
        settings.cell_budget,
        skip_frames=settings.execution == "sparse",
        pad_counts=settings.pad_counts,
        counter=counter,
    )
    features, gates = run_plan(plan, x, ctx)
    ctx.check_all_gates_used()
    return VideoOutput(classify(features, n, t), *masks_out(gates, ctx.cell_masks, n, t))
