"""Fusion of the ample (low-resolution) and focal branches of an AF stage."""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn as nn
import torch.nn.functional as F

#: ``"dynamic"`` (released: channel attention) or ``"additive"`` (paper Table 8).
FUSIONS = ("dynamic", "additive")


def check_fusion(kind: object) -> None:
    """Raise ``ValueError`` unless ``kind`` is one of :data:`FUSIONS`."""
    if kind not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {kind!r}")


class DynamicFusion(nn.Module):
    """Dynamic fusion ``θ·up(ample) + (1−θ)·focal`` with a channel attention θ.

    ``θ = sigmoid(fc(mean_hw(up(ample) + focal)))``, ``fc = Linear(C, C//r) → ReLU →
    Linear(C//r, C)``. The released AF-ResNet has no biases; AF-MobileNetV3 has them.
    """

    def __init__(self, channels: int, reduction: int = 16, bias: bool = False) -> None:
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(
                f"channels // reduction must be >= 1, got channels={channels}, reduction={reduction}"
            )
        self.channels = channels
        self.reduction = reduction
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=bias),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=bias),
        )
        for m in self.fc:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)

    def attention(self, ample_low: torch.Tensor, focal: torch.Tensor, ops: ModuleType) -> torch.Tensor:
        """θ ``[N*T, C]`` from ample ``[N*T, C, h, w]`` and focal ``[N*T, C, H, W]``."""
        return torch.sigmoid(self.fc(ops.pool_branches(ample_low, focal)))

    def forward(
        self, ample_low: torch.Tensor, focal: torch.Tensor, *, relu: bool, ops: ModuleType
    ) -> torch.Tensor:
        """Fused ``[N*T, C, H, W]``; the upsampled ample tensor is never built by the kernels."""
        theta = self.attention(ample_low, focal, ops)
        return ops.blend_branches(ample_low, focal, theta, relu)


class AdditiveFusion(nn.Module):
    """Plain addition ``up(ample) + focal`` (paper Table 8, "Addition"); no parameters."""

    def forward(
        self, ample_low: torch.Tensor, focal: torch.Tensor, *, relu: bool, ops: ModuleType
    ) -> torch.Tensor:
        """Fused ``[N*T, C, H, W]``. ``ops`` is accepted for interface parity and unused."""
        out = F.interpolate(ample_low, size=focal.shape[-2:], mode="nearest") + focal
        return torch.relu(out) if relu else out
