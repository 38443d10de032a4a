"""How one forward pass runs: the frame ops, forced masks, the frame budget, exact epilogues.

Created by the model wrapper for every call and passed down to both interpreters of a
backbone description (dense and sparse), so that both take the same decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Optional, Sequence

import torch

import afnet_kernels.reference as reference_ops

__all__ = ["ExecutionContext", "GateDecision"]


@dataclass(frozen=True)
class GateDecision:
    """One navigation decision.

    Attributes:
        mask: ``[N, T]`` float 0/1 (differentiable in training).
        per_video: frames kept in every video when that is known without reading the mask
            (fixed policies, frame budget), else None: the engine then reads the count.
    """

    mask: torch.Tensor
    per_video: Optional[int]


class ExecutionContext:
    """The settings of one forward pass.

    Args:
        ops: frame ops (``afnet.backend.get_ops``); the reference by default.
        forced_masks: masks ``[N, T]`` overriding the gates, consumed in forward order.
        frame_budget: frames kept per video by each navigation module in forward order
            (``k_b``), or None for the released threshold rule.
        exact: NaN-preserving epilogues in the inference plan (see ``afnet.engine.folding``).
        skip_frames: the engine computes only the selected frames (``execution="sparse"``);
            False computes every frame with the folded plan (``execution="folded"``).
    """

    def __init__(
        self,
        ops: ModuleType = reference_ops,
        forced_masks: Optional[Sequence[torch.Tensor]] = None,
        frame_budget: Optional[Sequence[int]] = None,
        exact: bool = False,
        skip_frames: bool = True,
    ) -> None:
        self.ops = ops
        self.exact = exact
        self.skip_frames = skip_frames
        self._forced = list(forced_masks) if forced_masks is not None else None
        self._budget = list(frame_budget) if frame_budget is not None else None
        self._gates_seen = 0

    def decide(self, gate: torch.nn.Module, x: torch.Tensor) -> GateDecision:
        """The decision of ``gate`` (a navigation module or fixed policy with ``num_segments``)
        on frames ``x`` ``[N*T, C, H, W]``: the next forced mask if any (checked to be ``[N, T]``
        and cast to ``x``'s device and dtype), else the gate's budgeted or own decision."""
        i = self._gates_seen
        self._gates_seen += 1
        expected = (x.shape[0] // gate.num_segments, gate.num_segments)
        if self._forced is not None:
            if i >= len(self._forced):
                raise ValueError(f"masks: got {len(self._forced)} masks but the model has more navigation modules")
            forced = self._forced[i]
            if tuple(forced.shape) != expected:
                raise ValueError(f"masks: expected shape {expected}, got {tuple(forced.shape)}")
            return GateDecision(forced.to(device=x.device, dtype=x.dtype), None)
        if self._budget is not None:
            if i >= len(self._budget):
                raise ValueError(f"frame_budget: got {len(self._budget)} ratios but the model has more navigation modules")
            k = self._budget[i]
            return GateDecision(gate.keep_top(x, k), k)
        return GateDecision(gate(x), getattr(gate, "frames_per_video", None))

    def gate_mask(self, gate: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The mask ``[N, T]`` of :meth:`decide`."""
        return self.decide(gate, x).mask

    def check_all_gates_used(self) -> None:
        """Raise if forced masks or budget ratios were left over (the model has fewer gates)."""
        for name, given in (("masks", self._forced), ("frame_budget", self._budget)):
            if given is not None and self._gates_seen != len(given):
                raise ValueError(
                    f"{name}: got {len(given)} entries but the model has {self._gates_seen} navigation modules"
                )
