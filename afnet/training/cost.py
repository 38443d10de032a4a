"""GFLOPs per video as a function of the selected ratio of every navigation module.

Both of ``afnet.count_flops``'s numbers are affine in the ratios: a focal block's convolutions
count (paper) or run (executed) on the selected fraction of the frames, everything else is
fixed. :func:`flop_table` measures the constant and one slope per module once, from forced
masks on one clip, so an evaluation turns its measured per-module ratios into GFLOPs without
counting every batch again. With spatial navigation the cells are those the spatial gates choose
on that clip, so for such models the figures are approximate in the spatial ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
import torch.nn as nn

from afnet.tools.flops import count_flops


@dataclass(frozen=True)
class FlopTable:
    """``paper``/``executed`` GFLOPs per video = ``full − Σ_i (1 − ratio_i) · slope_i``.

    Attributes:
        names: the gate modules (navigation or fixed policy) in forward order.
        full_paper, full_executed: every frame selected, navigation included.
        slope_paper, slope_executed: what module i's focal blocks cost at ratio 1.
    """

    names: Tuple[str, ...]
    full_paper: float
    full_executed: float
    slope_paper: Tuple[float, ...]
    slope_executed: Tuple[float, ...]

    def at(self, ratios: Sequence[float]) -> Tuple[float, float]:
        """(paper, executed) GFLOPs per video at the per-module selected ``ratios``."""
        if len(ratios) != len(self.names):
            raise ValueError(f"ratios must hold one value per gate ({len(self.names)}), got {len(ratios)}")
        paper = self.full_paper - sum((1 - r) * s for r, s in zip(ratios, self.slope_paper))
        executed = self.full_executed - sum((1 - r) * s for r, s in zip(ratios, self.slope_executed))
        return paper, executed


@torch.no_grad()
def flop_table(model: nn.Module, clip: torch.Tensor) -> FlopTable:
    """Measure the :class:`FlopTable` of ``model`` on one clip ``[1, T, 3, H, W]`` (the costs
    depend on shapes only, not on the content or the weights)."""
    if clip.dim() != 5 or clip.shape[0] != 1:
        raise ValueError(f"clip must be [1, T, 3, H, W], got {tuple(clip.shape)}")
    names = model.gate_names()
    t = clip.shape[1]
    ones = [torch.ones(1, t, dtype=torch.bool, device=clip.device) for _ in names]
    forced = count_flops(model, clip, masks=ones)
    slopes_paper, slopes_exec = [], []
    for i in range(len(names)):
        masks = list(ones)
        masks[i] = torch.zeros_like(ones[i])
        without = count_flops(model, clip, masks=masks)
        slopes_paper.append(forced.paper - without.paper)
        slopes_exec.append(forced.executed - without.executed)
    # Forced masks skip the gates; the natural run counts them: the difference is their cost.
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        natural_masks = model(clip, return_masks=True)[1]
    model.train(was_training)
    natural = count_flops(model, clip)
    ratios = [float(m.float().mean()) for m in natural_masks]
    table = FlopTable(tuple(names), forced.paper, forced.executed, tuple(slopes_paper), tuple(slopes_exec))
    paper_no_gates, exec_no_gates = table.at(ratios)
    return FlopTable(
        tuple(names),
        forced.paper + natural.paper - paper_no_gates,
        forced.executed + natural.executed - exec_no_gates,
        tuple(slopes_paper),
        tuple(slopes_exec),
    )
