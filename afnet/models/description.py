"""How a backbone describes itself, and the dense interpreter of that description.

A backbone is a list of *parts* (:meth:`describe`), each holding references to its
modules (the released key names stay on the modules themselves):

- :class:`Layers`: modules applied in order (a stem, a head);
- :class:`Block`: one residual block (``afnet.models.residual.ResidualBlock``) on every frame;
- :class:`AFStageParts`: an AF stage — navigation gates, ample blocks, focal blocks, the
  ample-to-focal transform, the fusion and the fuse blocks, and optionally spatial gates;
- :class:`FrameGate`: one temporal navigation whose decision every later focal block shares
  (each stage then holds :class:`SharedGate` placeholders);
- :class:`GlobalPool`: the mean over H, W, giving ``[N*T, C]``.

Two interpreters run a description: :func:`run_dense` here (the released, masked,
differentiable computation, what training uses), and the inference engine
(``afnet.engine``), which folds the same modules into a plan and computes the selected
frames only. A new backbone needs only its modules and its :meth:`describe`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from afnet.models.decisions import Decisions
from afnet.models.residual import ResidualBlock


@dataclass(frozen=True)
class Layers:
    """Modules applied in order to every frame."""

    modules: Tuple[nn.Module, ...]


@dataclass(frozen=True)
class Block:
    """One residual block applied to every frame."""

    block: ResidualBlock


@dataclass(frozen=True)
class AFStageParts:
    """The modules of one AF stage.

    ``gates[i]`` reads the input of ``ample[i]`` and masks ``focal[i]``; so does
    ``spatial_gates[i]`` (if any), on the cells of ``focal[i]``'s output. The ample output goes
    through ``transform`` (or not), then ``fusion(ample, focal, relu=fusion_relu)`` and the
    ``fuse`` blocks.
    """

    gates: Tuple[nn.Module, ...]
    ample: Tuple[ResidualBlock, ...]
    focal: Tuple[ResidualBlock, ...]
    transform: Optional[Tuple[nn.Module, ...]]
    fusion: nn.Module
    fusion_relu: bool
    fuse: Tuple[ResidualBlock, ...]
    spatial_gates: Optional[Tuple[nn.Module, ...]] = None

    def __post_init__(self) -> None:
        if not (len(self.gates) == len(self.ample) == len(self.focal)):
            raise ValueError(
                f"an AF stage needs one gate per ample and focal block, got {len(self.gates)} gates, "
                f"{len(self.ample)} ample and {len(self.focal)} focal blocks"
            )


@dataclass(frozen=True)
class FrameGate:
    """A temporal navigation whose mask every following :class:`SharedGate` uses."""

    gate: nn.Module


class SharedGate(nn.Module):
    """Stands for the decision of the preceding :class:`FrameGate`; no parameters."""

    shares_decision = True

    def __init__(self, num_segments: int) -> None:
        super().__init__()
        self.num_segments = num_segments


@dataclass(frozen=True)
class GlobalPool:
    """Mean over H and W: ``[N*T, C, H, W] -> [N*T, C]``."""


Part = Union[Layers, Block, AFStageParts, FrameGate, GlobalPool]


def run_dense_stage(
    stage: AFStageParts, x: torch.Tensor, ctx: Decisions
) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """The released AF stage on ``x`` ``[N*T, C_in, H, W]``: every frame computed, unselected
    ones masked. Returns the stage output and its masks ``[N, T]`` (float 0/1) in order."""
    base, refine, masks = x, x, []
    spatial_gates = stage.spatial_gates or (None,) * len(stage.gates)
    for gate, spatial_gate, ample_block, focal_block in zip(stage.gates, spatial_gates, stage.ample, stage.focal):
        decision = ctx.decide(gate, base)
        if not decision.shared:
            masks.append(decision.mask)
        # Focal blocks keep their input's size: the spatial grid is on refine's H, W.
        cells = None if spatial_gate is None else ctx.decide_cells(spatial_gate, base, refine.shape[-2:]).mask
        base = ample_block(base, ops=ctx.ops)
        refine = focal_block(refine, decision.mask, ops=ctx.ops, spatial=cells)
    for m in stage.transform or ():
        base = m(base)
    out = stage.fusion(base, refine, relu=stage.fusion_relu, ops=ctx.ops)
    for block in stage.fuse:
        out = block(out, ops=ctx.ops)
    return out, masks


def run_dense(
    parts: Sequence[Part], x: torch.Tensor, ctx: Decisions
) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Interpret ``parts`` densely on frames ``x`` ``[N*T, ...]``; returns (output, masks)."""
    masks: List[torch.Tensor] = []
    for part in parts:
        if isinstance(part, Layers):
            for m in part.modules:
                x = m(x)
        elif isinstance(part, Block):
            x = part.block(x, ops=ctx.ops)
        elif isinstance(part, AFStageParts):
            x, stage_masks = run_dense_stage(part, x, ctx)
            masks += stage_masks
        elif isinstance(part, FrameGate):
            masks.append(ctx.decide(part.gate, x).mask)
        elif isinstance(part, GlobalPool):
            x = x.mean(dim=(2, 3))
        else:
            raise TypeError(f"unknown part {type(part).__name__} in a backbone description")
    return x, masks


class DescribedBackbone(nn.Module):
    """Base of the AF backbones: ``forward`` interprets :meth:`describe` densely.

    ``forward(x [N*T, 3, H, W], ctx)`` returns (output, masks); ``ctx`` None runs the released
    computation with the reference ops and the gates deciding.
    """

    def describe(self) -> List[Part]:
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, ctx: Optional[Decisions] = None
    ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        return run_dense(self.describe(), x, ctx if ctx is not None else Decisions())


__all__ = [
    "AFStageParts",
    "Block",
    "DescribedBackbone",
    "FrameGate",
    "SharedGate",
    "GlobalPool",
    "Layers",
    "Part",
    "run_dense",
    "run_dense_stage",
]
