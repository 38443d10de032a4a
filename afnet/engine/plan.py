"""The inference plan: a backbone description with BN folded into every convolution.

:func:`build_plan` walks a description (``afnet.models.description``) once and turns
every module sequence into folded steps (``afnet.engine.folding``): prepacked weights,
fused activations and residual epilogues. The plan mirrors the description part by part,
so the executor (``afnet.engine.executor``) is the only code that knows how a residual
block or an AF stage runs in inference.

A plan only holds values derived from the weights and settings of the modules it was built
from: the live model (``afnet.engine.live``) rebuilds it when a fact of those modules changes
(``afnet.engine.signature``), a frozen model (``afnet.freeze``) owns a private copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Hashable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from afnet.engine.folding import FoldedConv, ModuleStep, Step, fold_sequence
from afnet.models.description import AFStageParts, Block, FrameGate, GlobalPool, Layers, Part
from afnet.models.residual import ResidualBlock

__all__ = ["BlockPlan", "InferencePlan", "LayersPlan", "StagePlan", "TileBranch", "build_plan"]


@dataclass
class BlockPlan:
    """A residual block, folded: ``act(shortcut(x) + branch(shift(x)))``.

    Attributes:
        branch: folded steps of ``F``; the last one is a :class:`FoldedConv` without activation.
        shortcut: folded steps of the shortcut, None for the identity.
        has_residual, relu, shift_div, num_segments, fill_zero_response: as on the block.
        zero_responses: ``F(0)`` per input geometry, filled by the executor when first needed.
        tiles: the branch for spatial tiles (focal blocks of spatial stages), else None.
    """

    branch: List[Step]
    shortcut: Optional[List[Step]]
    has_residual: bool
    relu: bool
    shift_div: int
    num_segments: int
    fill_zero_response: bool
    zero_responses: Dict[Hashable, torch.Tensor] = field(default_factory=dict)
    tiles: Optional["TileBranch"] = None


@dataclass
class TileBranch:
    """The branch run on spatial tiles: every conv VALID (no padding), its input tile carrying a
    halo of ``halo`` pixels per side. ``halos[i]`` is the halo left after ``steps[i]``; where it is
    positive, the pixels of the step's output outside the image must be zeroed, because the next
    conv's zero padding applies to that output, not to the block input."""

    steps: List[Step]
    halo: int
    halos: List[int]


@dataclass
class LayersPlan:
    steps: List[Step]


@dataclass
class StagePlan:
    """An AF stage: gates and fusion run as modules (tiny), every block folded."""

    gates: Tuple[nn.Module, ...]
    spatial_gates: Optional[Tuple[nn.Module, ...]]
    ample: List[BlockPlan]
    focal: List[BlockPlan]
    transform: Optional[List[Step]]
    fusion: nn.Module
    fusion_relu: bool
    fuse: List[BlockPlan]


PlanPart = Union[LayersPlan, BlockPlan, StagePlan, FrameGate, GlobalPool]


@dataclass
class InferencePlan:
    """The folded form of one backbone for one memory format.

    Attributes:
        parts: the plan, part by part as the description lists them.
        memory_format: the layout the folded weights are in.
        temporal_gates: the gates that take a decision of their own, in forward order (shared
            placeholders of first-layer navigation excluded): what a frame budget counts.
        spatial_gates: the spatial gates in forward order.
    """

    parts: List[PlanPart]
    memory_format: torch.memory_format
    temporal_gates: Tuple[nn.Module, ...] = ()
    spatial_gates: Tuple[nn.Module, ...] = ()

    @property
    def stages(self) -> List[StagePlan]:
        return [p for p in self.parts if isinstance(p, StagePlan)]

    def unfolded_modules(self) -> List[nn.Module]:
        """The modules the executor calls as they are (gates, fusion, pools, squeeze-excitation):
        the work the folded convs' MAC counter does not see."""
        found: List[nn.Module] = []

        def steps(seq: Optional[Sequence[Step]]) -> None:
            found.extend(step.module for step in seq or () if isinstance(step, ModuleStep))

        def block(b: BlockPlan) -> None:
            steps(b.branch)
            steps(b.shortcut)

        for part in self.parts:
            if isinstance(part, LayersPlan):
                steps(part.steps)
            elif isinstance(part, BlockPlan):
                block(part)
            elif isinstance(part, StagePlan):
                found.extend((*part.gates, *(part.spatial_gates or ()), part.fusion))
                steps(part.transform)
                for b in (*part.ample, *part.focal, *part.fuse):
                    block(b)
            elif isinstance(part, FrameGate):
                found.append(part.gate)
        return found


def _tile_branch(branch: List[Step]) -> TileBranch:
    steps: List[Step] = []
    paddings: List[int] = []
    for step in branch:
        if isinstance(step, FoldedConv):
            if step.stride != [1, 1] or step.padding[0] != step.padding[1]:
                raise ValueError("spatial tiles need stride-1 convs with square padding in focal blocks")
            paddings.append(step.padding[0])
            step = step.without_padding()
        else:
            paddings.append(0)
        steps.append(step)
    halo = sum(paddings)
    halos = [halo - sum(paddings[: i + 1]) for i in range(len(steps))]
    return TileBranch(steps, halo, halos)


def _fold_block(block: ResidualBlock, fmt: torch.memory_format, tiles: bool = False) -> BlockPlan:
    shortcut = block.shortcut_modules() if block.has_residual else None
    branch = fold_sequence(block.branch_modules(), fmt)
    return BlockPlan(
        branch=branch,
        shortcut=fold_sequence(shortcut, fmt) if shortcut is not None else None,
        has_residual=block.has_residual,
        relu=block.last_relu,
        shift_div=block.shift_div,
        num_segments=block.num_segments,
        fill_zero_response=block.fill_zero_response,
        tiles=_tile_branch(branch) if tiles else None,
    )


@torch.inference_mode(False)  # normal tensors, even when first built inside inference_mode
@torch.no_grad()
def build_plan(parts: Sequence[Part], memory_format: torch.memory_format) -> InferencePlan:
    """Fold a backbone description (eval semantics: BN running statistics) for ``memory_format``."""
    plan: List[PlanPart] = []
    temporal: List[nn.Module] = []
    spatial: List[nn.Module] = []
    for part in parts:
        if isinstance(part, AFStageParts):
            temporal += [g for g in part.gates if not getattr(g, "shares_decision", False)]
            spatial += list(part.spatial_gates or ())
        elif isinstance(part, FrameGate):
            temporal.append(part.gate)
        if isinstance(part, Layers):
            plan.append(LayersPlan(fold_sequence(part.modules, memory_format)))
        elif isinstance(part, Block):
            plan.append(_fold_block(part.block, memory_format))
        elif isinstance(part, AFStageParts):
            plan.append(
                StagePlan(
                    gates=part.gates,
                    spatial_gates=part.spatial_gates,
                    ample=[_fold_block(b, memory_format) for b in part.ample],
                    focal=[_fold_block(b, memory_format, tiles=part.spatial_gates is not None) for b in part.focal],
                    transform=fold_sequence(part.transform, memory_format) if part.transform else None,
                    fusion=part.fusion,
                    fusion_relu=part.fusion_relu,
                    fuse=[_fold_block(b, memory_format) for b in part.fuse],
                )
            )
        elif isinstance(part, (FrameGate, GlobalPool)):
            plan.append(part)
        else:
            raise TypeError(f"unknown part {type(part).__name__} in a backbone description")
    return InferencePlan(plan, memory_format, tuple(temporal), tuple(spatial))
