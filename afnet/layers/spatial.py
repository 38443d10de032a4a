"""Spatial navigation (paper §3.3, Eq. 15): which cells of a selected frame a focal block computes.

A focal block's **output** grid ``H x W`` is cut into ``Gh x Gw`` cells. Cell ``i`` along an axis
of length ``L`` with ``G`` cells covers ``[floor(i·L/G), floor((i+1)·L/G))``: the bins' starts of
adaptive pooling, without overlap (cells differ by at most one pixel when G does not divide L).
The grid of a block is ``min(G, H) x min(G, W)``, so every cell has at least one pixel at any
input size.

Gates return float 0/1 masks ``[N*T, Gh, Gw]`` (1: computed): :class:`SpatialNavigation` learns
them (hard Gumbel-softmax, straight-through, in training; argmax in eval), the fixed policies
(``random``, ``center``, paper Table 5) keep exactly :func:`cells_kept` cells per frame. Under a
budget (``afnet.freeze(..., cell_budget=)``) :meth:`SpatialNavigation.keep_top` keeps exactly
``floor(r·Gh·Gw + 1/2)`` cells of every frame: static counts, nothing read back.
"""

from __future__ import annotations

from typing import Dict, Hashable, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from afnet.layers.gumbel import gumbel_noise, hard_gumbel_softmax
from afnet.layers.ranking import keep_largest
from afnet.layers.ratios import count_for_ratio, is_ratio
from afnet_kernels.reference import cell_of_position

SPATIAL_POLICIES = ("navigation", "random", "center")
HIDDEN = 16

__all__ = [
    "HIDDEN",
    "SPATIAL_POLICIES",
    "SpatialNavigation",
    "SpatialPolicy",
    "block_grid",
    "cells_kept",
    "upsample_cells",
]


def block_grid(grid: int, out_size: Sequence[int]) -> Tuple[int, int]:
    """The ``(Gh, Gw)`` of a block with output ``(H, W)`` and stage grid ``grid``."""
    return min(grid, int(out_size[0])), min(grid, int(out_size[1]))


def upsample_cells(mask: torch.Tensor, out_size: Sequence[int]) -> torch.Tensor:
    """Cell mask ``[B, Gh, Gw]`` to a pixel mask ``[B, 1, H, W]`` over the cell partition."""
    rows = cell_of_position(int(out_size[0]), mask.shape[1], mask.device)
    cols = cell_of_position(int(out_size[1]), mask.shape[2], mask.device)
    return mask[:, rows][:, :, cols].unsqueeze(1)


def cells_kept(rs: float, cells: int) -> int:
    """Cells a fixed policy keeps per frame: ``floor(rs·cells + 1/2)`` (:func:`count_for_ratio`), at least 1."""
    return max(1, count_for_ratio(rs, cells))


class SpatialNavigation(nn.Module):
    """Spatial gates of one focal block from the features its temporal navigation reads.

    ``x [N*T, C, h, w]`` → ``conv`` 3x3 (C→16) → ``bn`` → ReLU → adaptive average pool to the
    block's grid → ``conv_logits`` 1x1 (16→2, bias) → hard Gumbel-softmax per cell; channel 1
    keeps the cell. Every cell starts computed (:meth:`reset_gate_bias`).

    Attributes set by the caller: ``tau`` (training temperature), ``generator`` (noise).
    """

    is_binary = True

    def __init__(self, in_channels: int, grid: int) -> None:
        super().__init__()
        if grid < 1:
            raise ValueError(f"grid must be >= 1, got {grid}")
        self.grid = grid
        self.conv = nn.Conv2d(in_channels, HIDDEN, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(HIDDEN)
        self.conv_logits = nn.Conv2d(HIDDEN, 2, 1, bias=True)
        self.tau: float = 1.0
        self.generator: Optional[torch.Generator] = None
        self.reset_gate_bias()

    def reset_gate_bias(self) -> None:
        """Logit bias 0 for "skip" and 3 for "compute" and near-zero logit weights: every cell
        starts computed, whatever the features (a network-wide Kaiming init would not keep it)."""
        with torch.no_grad():
            nn.init.normal_(self.conv_logits.weight, 0.0, 1e-3)
            self.conv_logits.bias.copy_(torch.tensor([0.0, 3.0]))

    def logits(self, x: torch.Tensor, out_size: Sequence[int]) -> torch.Tensor:
        """Cell logits ``[N*T, Gh, Gw, 2]`` for the block with output size ``out_size``."""
        g = torch.relu(self.bn(self.conv(x)))
        g = self.conv_logits(F.adaptive_avg_pool2d(g, block_grid(self.grid, out_size)))
        return g.permute(0, 2, 3, 1)

    def keep_top(self, x: torch.Tensor, out_size: Sequence[int], k: int) -> torch.Tensor:
        """Cell-budget mask ``[N*T, Gh, Gw]`` (float 0/1): exactly ``k`` cells of every frame, those
        with the largest keep margin, ties to the earlier cell (row-major), NaN last."""
        logits = self.logits(x, out_size)
        rows, gh, gw, _ = logits.shape
        margin = (logits[..., 1] - logits[..., 0]).reshape(rows, gh * gw)
        return keep_largest(margin, k).reshape(rows, gh, gw)

    def forward(self, x: torch.Tensor, out_size: Sequence[int]) -> torch.Tensor:
        """Cell mask ``[N*T, Gh, Gw]`` (float 0/1, ``x``'s dtype): 1 computes the cell."""
        logits = self.logits(x, out_size)
        if self.training:
            noise = gumbel_noise(logits.shape, generator=self.generator, device=logits.device, dtype=logits.dtype)
            return hard_gumbel_softmax(logits, self.tau, noise)[..., 1]
        return (logits[..., 1] > logits[..., 0]).to(logits.dtype)


class SpatialPolicy(nn.Module):
    """Fixed spatial policy (paper Table 5): ``random`` cells or the ``center`` ones, exactly
    :func:`cells_kept` per frame; no parameters. ``cells_per_frame(grid)`` tells the
    engine the count without reading the mask."""

    is_binary = True

    def __init__(self, kind: str, rs: float, grid: int) -> None:
        super().__init__()
        if kind not in SPATIAL_POLICIES[1:]:
            raise ValueError(f"spatial policy must be one of {SPATIAL_POLICIES[1:]}, got {kind!r}")
        if not is_ratio(rs):
            raise ValueError(f"rs must be a number in (0, 1], got {rs!r}")
        self.kind, self.rs, self.grid = kind, rs, grid
        self.generator: Optional[torch.Generator] = None
        self._center: Dict[Hashable, torch.Tensor] = {}

    def cells_per_frame(self, cells: Tuple[int, int]) -> int:
        return cells_kept(self.rs, cells[0] * cells[1])

    def _center_mask(self, cells: Tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        # Keyed on rs too: changing it must not return the old cells. Built with device ops only.
        key = (self.rs, *cells, device, dtype)
        if key not in self._center:
            gh, gw = cells
            y = (torch.arange(gh, dtype=torch.float64, device=device) + 0.5 - gh / 2) ** 2
            x = (torch.arange(gw, dtype=torch.float64, device=device) + 0.5 - gw / 2) ** 2
            distance = (y[:, None] + x[None, :]).flatten()
            # A stable sort: equally central cells in row-major order.
            order = torch.sort(distance, stable=True).indices[: self.cells_per_frame(cells)]
            with torch.inference_mode(False):
                mask = torch.zeros(gh * gw, dtype=dtype, device=device).index_fill_(0, order, 1).reshape(gh, gw)
                self._center[key] = mask
        return self._center[key]

    def forward(self, x: torch.Tensor, out_size: Sequence[int]) -> torch.Tensor:
        cells = block_grid(self.grid, out_size)
        rows = x.shape[0]
        if self.kind == "center":
            return self._center_mask(cells, x.device, x.dtype).expand(rows, *cells)
        keys = torch.rand(rows, cells[0] * cells[1], generator=self.generator, device=x.device)
        kept = keys.topk(self.cells_per_frame(cells), dim=1).indices
        mask = torch.zeros(rows, cells[0] * cells[1], dtype=x.dtype, device=x.device)
        return mask.scatter_(1, kept, 1.0).reshape(rows, *cells)

