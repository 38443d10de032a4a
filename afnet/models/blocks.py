"""Residual blocks of AF-ResNet: the bottleneck (AF-ResNet50/101) and the basic block (18/34).

Key names (``conv1``, ``bn1``, …, ``downsample``) match the released checkpoints. The blocks
only build and list their modules; the computation is :class:`afnet.models.residual.ResidualBlock`'s
(dense) and the engine's (folded, sparse).
"""

from __future__ import annotations

from typing import List, Optional

import torch.nn as nn

from afnet.models.residual import ResidualBlock


def conv1x1(c_in: int, c_out: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False, groups=groups)


def conv3x3(c_in: int, c_out: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False, groups=groups)


class ResNetBlock(ResidualBlock):
    """Common constructor of :class:`Bottleneck` and :class:`BasicBlock`.

    Args:
        in_channels, out_channels, stride, groups: of the branch convs (``stride`` on the 3x3).
        downsample: the shortcut (``nn.Sequential`` of pool/conv/BN) or None for the identity.
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

    def shortcut_modules(self) -> Optional[List[nn.Module]]:
        return list(self.downsample) if self.downsample is not None else None


class Bottleneck(ResNetBlock):
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


class BasicBlock(ResNetBlock):
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


__all__ = ["ResNetBlock", "Bottleneck", "BasicBlock", "make_shortcut", "pool_shortcut", "block_type"]
