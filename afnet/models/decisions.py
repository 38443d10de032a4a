"""The decisions of one forward pass: which frames (and cells) each focal block computes.

Both interpreters of a backbone description, the dense one here in ``afnet.models`` and the
inference engine (``afnet.engine``), ask a :class:`Decisions` object for every gate's decision,
so that both take the same decisions: forced masks first, then a budget (a fixed number of
frames or cells per video or frame), then the gate's own rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import List, Optional, Sequence

import torch

import afnet_kernels.reference as reference_ops
from afnet.layers.ratios import count_for_ratio
from afnet.layers.spatial import block_grid

__all__ = ["CellDecision", "Decisions", "GateDecision"]


@dataclass(frozen=True)
class GateDecision:
    """One navigation decision.

    Attributes:
        mask: ``[N, T]`` float 0/1 (differentiable in training).
        per_video: frames kept in every video when that is known without reading the mask
            (fixed policies, frame budget), else None: the engine then reads the count.
        shared: the decision of an earlier gate, reused (first-layer navigation).
    """

    mask: torch.Tensor
    per_video: Optional[int]
    shared: bool = False


@dataclass(frozen=True)
class CellDecision:
    """One spatial decision: ``mask`` ``[N*T, Gh, Gw]`` float 0/1, and ``per_frame`` cells kept in
    every frame when known without reading the mask (fixed spatial policies, cell budget), else None."""

    mask: torch.Tensor
    per_frame: Optional[int]


class Decisions:
    """The decision settings of one forward pass, and the decisions taken so far.

    Args:
        ops: frame ops (``afnet.ops.get_ops``); the reference by default.
        forced_masks: masks ``[N, T]`` overriding the gates, consumed in forward order.
        forced_cells: spatial masks ``[N, T, Gh, Gw]`` overriding the spatial gates, in order.
        frame_budget: frames kept per video by each navigation module in forward order
            (``k_b``), or None for the released threshold rule.
        cell_budget: the ratio of cells every learned spatial gate keeps per frame
            (``floor(r·Gh·Gw + 1/2)``), or None for its threshold rule.
    """

    def __init__(
        self,
        ops: ModuleType = reference_ops,
        forced_masks: Optional[Sequence[torch.Tensor]] = None,
        frame_budget: Optional[Sequence[int]] = None,
        forced_cells: Optional[Sequence[torch.Tensor]] = None,
        cell_budget: Optional[float] = None,
    ) -> None:
        self.ops = ops
        self._forced = list(forced_masks) if forced_masks is not None else None
        self._budget = list(frame_budget) if frame_budget is not None else None
        self._forced_cells = list(forced_cells) if forced_cells is not None else None
        self._cell_budget = cell_budget
        self._gates_seen = 0
        self._last: Optional[GateDecision] = None
        #: the spatial masks ``[N*T, Gh, Gw]`` of this pass, in forward order.
        self.cell_masks: List[torch.Tensor] = []

    def decide(self, gate: torch.nn.Module, x: torch.Tensor) -> GateDecision:
        """The decision of ``gate`` (a navigation module or fixed policy with ``num_segments``)
        on frames ``x`` ``[N*T, C, H, W]``: the next forced mask if any (checked to be ``[N, T]``
        and cast to ``x``'s device and dtype), else the gate's budgeted or own decision."""
        if getattr(gate, "shares_decision", False):
            if self._last is None:
                raise RuntimeError("a shared gate needs an earlier navigation decision")
            return GateDecision(self._last.mask, self._last.per_video, shared=True)
        self._last = self._decide(gate, x)
        return self._last

    def _decide(self, gate: torch.nn.Module, x: torch.Tensor) -> GateDecision:
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

    def decide_cells(self, gate: torch.nn.Module, x: torch.Tensor, out_size: Sequence[int]) -> CellDecision:
        """The cells of a focal block with output ``out_size`` that ``gate`` (spatial navigation or
        policy) computes, from ``x`` ``[N*T, C, h, w]``; or the next forced spatial mask
        (``[N, T, Gh, Gw]``, checked)."""
        i = len(self.cell_masks)
        grid = block_grid(gate.grid, out_size)
        if self._forced_cells is not None:
            if i >= len(self._forced_cells):
                raise ValueError(
                    f"spatial_masks: got {len(self._forced_cells)} masks but the model has more spatial gates"
                )
            forced = self._forced_cells[i]
            if forced.dim() != 4 or forced.shape[0] * forced.shape[1] != x.shape[0] or tuple(forced.shape[2:]) != grid:
                raise ValueError(
                    f"spatial_masks[{i}]: expected shape [N, T, {grid[0]}, {grid[1]}] with N*T={x.shape[0]}, "
                    f"got {tuple(forced.shape)}"
                )
            cells = forced.reshape(x.shape[0], *grid).to(device=x.device, dtype=x.dtype)
            decision = CellDecision(cells, None)
        elif self._cell_budget is not None and hasattr(gate, "keep_top"):
            k = count_for_ratio(self._cell_budget, grid[0] * grid[1])
            decision = CellDecision(gate.keep_top(x, out_size, k), k)
        else:
            cells_per_frame = getattr(gate, "cells_per_frame", None)
            per_frame = cells_per_frame(grid) if cells_per_frame is not None else None
            decision = CellDecision(gate(x, out_size), per_frame)
        self.cell_masks.append(decision.mask)
        return decision

    def check_all_gates_used(self) -> None:
        """Raise if forced masks or budget ratios were left over (the model has fewer gates)."""
        if self._forced_cells is not None and not self.cell_masks:
            raise ValueError("spatial_masks: this model has no spatial navigation (create_model(..., spatial=True))")
        for name, given, seen in (
            ("masks", self._forced, self._gates_seen),
            ("frame_budget", self._budget, self._gates_seen),
            ("spatial_masks", self._forced_cells, len(self.cell_masks)),
        ):
            if given is not None and seen != len(given):
                raise ValueError(f"{name}: got {len(given)} entries but the model has {seen} such gates")
