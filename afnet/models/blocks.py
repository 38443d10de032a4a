"""Residual blocks of AF-ResNet, each with a dense (training/reference) and an inference path.

Every block computes ``out = shortcut(x) + F(g(x))`` then an optional ReLU, where ``g``
is the TSM shift (when ``shift_div > 0``) and, for focal blocks, a per-frame mask.
Key names (``conv1``, ``bn1``, …, ``downsample``) match the released checkpoints.

- ``forward(x, mask=None)``: the released computation, differentiable: the mask is
  multiplied densely, so unselected frames still cost a full ``F``.
- ``infer(x, selection, ops)``: eval only, BN folded into every conv (cached), the ReLUs
  fused into the conv outputs, and for focal blocks only the selected frames computed
  (``afnet.sparse.sparse_residual``).

Shapes: ``x`` ``[N*T, C_in, H, W]`` frame-major; ``mask`` ``[N, T]`` 0/1.
"""

from __future__ import annotations

from types import ModuleType
from typing import List, Optional, Sequence

import torch
import torch.nn as nn

from afnet.folding import CachedInference, fold_sequence, memory_format_of, run_steps
from afnet.sparse import FrameSelection, cached_zero_response, sparse_residual

import afnet_kernels.reference as _reference

SHIFT_DIV = 8


def conv1x1(c_in: int, c_out: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False, groups=groups)


def conv3x3(c_in: int, c_out: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False, groups=groups)


class ResidualBlock(CachedInference):
    """Common machinery of :class:`Bottleneck` and :class:`BasicBlock`.

    Subclasses build their branch in :meth:`_build_branch`; ``downsample`` is the shortcut
    (``nn.Sequential`` of pool/conv/BN) or None for the identity.

    Args:
        in_channels, out_channels, stride, groups: of the branch convs (``stride`` on the 3x3).
        downsample: the shortcut.
        last_relu: apply ReLU after the residual add.
        shift_div: TSM shift of the branch input with fold ``C // shift_div`` (0: none);
            the shortcut always takes the unshifted input.
        num_segments: T, needed for the shift.
        fill_zero_response: focal blocks only: unselected frames get ``shortcut + F(0)``
            (released code) when True, ``shortcut`` alone (the paper's residual form) when False.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        groups: int = 1,
        downsample: Optional[nn.Module] = None,
        *,
        last_relu: bool = True,
        shift_div: int = 0,
        num_segments: int = 1,
        fill_zero_response: bool = True,
    ) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.last_relu = last_relu
        self.shift_div = shift_div
        self.num_segments = num_segments
        self.fill_zero_response = fill_zero_response
        self._build_branch(in_channels, out_channels, stride, groups)
        self.downsample = downsample  # registered after the branch convs: the released key order

    def _build_branch(self, in_channels: int, out_channels: int, stride: int, groups: int) -> None:
        raise NotImplementedError

    # Subclasses list their branch modules in order (conv, bn, relu, ...).
    def branch_modules(self) -> List[nn.Module]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Dense form ``[N*T, C_in, H, W] -> [N*T, C_out, H', W']``; ``mask`` ``[N, T]`` or None."""
        shortcut = x if self.downsample is None else self.downsample(x)
        y = masked_branch(
            x, self.branch_modules(), mask,
            num_segments=self.num_segments, shift_div=self.shift_div,
            fill_zero_response=self.fill_zero_response,
        )
        out = y + shortcut
        return self.relu(out) if self.last_relu else out

    # -- inference path ---------------------------------------------------------------
    def _folded(self, values: dict, fmt: torch.memory_format):
        key = ("folded", fmt)
        folded = values.get(key)
        if folded is None:
            shortcut = fold_sequence(list(self.downsample), fmt) if self.downsample is not None else None
            folded = values[key] = (fold_sequence(self.branch_modules(), fmt), shortcut)
        return folded

    @torch.no_grad()
    def infer(
        self, x: torch.Tensor, ops: ModuleType, selection: Optional[FrameSelection] = None
    ) -> torch.Tensor:
        """Eval forward with folded BN. ``selection`` None computes every frame (plain block);
        otherwise only the selected frames (focal block). Same output as ``forward`` in eval."""
        values = self.inference_values()
        branch, shortcut_steps = self._folded(values, memory_format_of(x))
        shortcut = x if shortcut_steps is None else run_steps(shortcut_steps, x)
        if selection is None:
            if self.shift_div:
                x = ops.gather_frames(x, all_rows(x), self.num_segments, self.shift_div)
            # The last conv (BN folded) adds the shortcut and applies the ReLU in one pass.
            return branch[-1].add(run_steps(branch[:-1], x), shortcut, self.last_relu)
        fill = None
        if self.fill_zero_response:
            fill = cached_zero_response(values, lambda z: run_steps(branch, z), x)
        return sparse_residual(
            x,
            selection,
            lambda z: run_steps(branch, z),
            shortcut,
            fill=fill,
            relu=self.last_relu,
            ops=ops,
            shift_div=self.shift_div,
        )


def masked_branch(
    x: torch.Tensor,
    branch: Sequence[nn.Module],
    mask: Optional[torch.Tensor],
    *,
    num_segments: int,
    shift_div: int,
    fill_zero_response: bool,
) -> torch.Tensor:
    """The dense (released) residual branch ``F(mask ⊙ shift(x))``, differentiable.

    ``x`` ``[N*T, C, H, W]``; ``branch``: the modules of ``F`` in order; ``mask`` ``[N, T]`` 0/1 or
    None (every frame); ``shift_div`` 0: no TSM shift. With ``fill_zero_response`` False the
    unselected frames' ``F(0)`` is masked out too, leaving them the shortcut alone.
    """
    y = x if shift_div == 0 else _reference.temporal_shift(x, num_segments, shift_div)
    if mask is not None:
        frame_mask = mask.reshape(-1, 1, 1, 1).to(y.dtype)
        y = y * frame_mask
    for m in branch:
        y = m(y)
    if mask is not None and not fill_zero_response:
        y = y * frame_mask
    return y


def all_rows(x: torch.Tensor) -> torch.Tensor:
    """Index ``[N*T]`` of every row of ``x``: a gather that only applies the shift."""
    return torch.arange(x.shape[0], device=x.device)


class Bottleneck(ResidualBlock):
    """conv1 1x1 → bn1 → ReLU → conv2 3x3 (stride) → bn2 → ReLU → conv3 1x1 → bn3; middle width
    ``out_channels // 4``; ``groups`` on all three convs (2 in focal blocks)."""

    expansion = 4

    def _build_branch(self, in_channels: int, out_channels: int, stride: int, groups: int) -> None:
        mid = out_channels // self.expansion
        self.conv1 = conv1x1(in_channels, mid, groups=groups)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = conv3x3(mid, mid, stride, groups=groups)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = conv1x1(mid, out_channels, groups=groups)
        self.bn3 = nn.BatchNorm2d(out_channels)

    def branch_modules(self) -> List[nn.Module]:
        return [self.conv1, self.bn1, self.relu, self.conv2, self.bn2, self.relu, self.conv3, self.bn3]


class BasicBlock(ResidualBlock):
    """conv1 3x3 (stride) → bn1 → ReLU → conv2 3x3 → bn2 (paper appendix B); expansion 1."""

    expansion = 1

    def _build_branch(self, in_channels: int, out_channels: int, stride: int, groups: int) -> None:
        self.conv1 = conv3x3(in_channels, out_channels, stride, groups=groups)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels, groups=groups)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def branch_modules(self) -> List[nn.Module]:
        return [self.conv1, self.bn1, self.relu, self.conv2, self.bn2]


def pool_shortcut() -> nn.AvgPool2d:
    """The released stride-2 shortcut pool (divides by 9 at borders too)."""
    return nn.AvgPool2d(3, stride=2, padding=1)


def make_shortcut(
    in_channels: int, out_channels: int, stride: int, *, pool_first: bool, groups: int = 1
) -> Optional[nn.Sequential]:
    """Shortcut for a block changing shape.

    ``pool_first`` (ample, fusion, layer4 blocks): ``[AvgPool2d(3, 2, 1)]`` when stride 2, then
    ``[conv1x1, BN]`` when the width changes (keys ``downsample.1``/``.2`` after a pool).
    Otherwise (focal blocks): ``[conv1x1 (stride), BN]`` (keys ``downsample.0``/``.1``).
    Returns None for the identity.
    """
    layers: List[nn.Module] = []
    if pool_first and stride != 1:
        layers.append(pool_shortcut())
    if in_channels != out_channels:
        conv_stride = 1 if pool_first else stride
        layers += [conv1x1(in_channels, out_channels, conv_stride, groups), nn.BatchNorm2d(out_channels)]
    elif not pool_first and stride != 1:
        layers += [conv1x1(in_channels, out_channels, stride, groups), nn.BatchNorm2d(out_channels)]
    return nn.Sequential(*layers) if layers else None


def block_type(name: str) -> type:
    """``"bottleneck"`` or ``"basic"``."""
    types = {"bottleneck": Bottleneck, "basic": BasicBlock}
    if name not in types:
        raise ValueError(f"block must be one of {sorted(types)}, got {name!r}")
    return types[name]


__all__ = [
    "ResidualBlock",
    "Bottleneck",
    "BasicBlock",
    "make_shortcut",
    "pool_shortcut",
    "block_type",
    "masked_branch",
    "all_rows",
    "SHIFT_DIV",
]

