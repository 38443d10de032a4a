"""Fixed frame-selection policies (paper Table 5 ablations and benchmarks)."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

POLICIES = ("random", "uniform", "normal")


def num_kept(rt: float, num_segments: int) -> int:
    """Frames kept per video at ratio ``rt``: ``round(rt * T)``, at least 1."""
    if not (isinstance(rt, (int, float)) and 0 < rt <= 1):
        raise ValueError(f"rt must be a number in (0, 1], got {rt!r}")
    return max(1, round(rt * num_segments))


def uniform_indices(k: int, num_segments: int) -> torch.Tensor:
    """``k`` frames in equal steps, centred in each step (TSN-style): ``floor(T/k·(i + 1/2))``."""
    step = num_segments / k
    return torch.tensor([int(step * (i + 0.5)) for i in range(k)], dtype=torch.int64)


def normal_weights(num_segments: int) -> torch.Tensor:
    """Standard-normal density at frame positions mapped to [-2, 2] (centre of the clip favoured)."""
    z = (torch.arange(num_segments, dtype=torch.float64) + 0.5) * (4.0 / num_segments) - 2.0
    return torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def fixed_policy_mask(
    kind: str,
    rt: float,
    num_videos: int,
    num_segments: int,
    *,
    generator: Optional[torch.Generator] = None,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """Bool mask ``[N, T]`` with exactly ``max(1, round(rt*T))`` frames kept per video.

    - ``random``: a uniformly random subset per video.
    - ``uniform``: deterministic equal steps (same for every video).
    - ``normal``: frames drawn without replacement with weights from a standard normal over
      the clip (positions mapped to [-2, 2]), so central frames are preferred.
    """
    if kind not in POLICIES:
        raise ValueError(f"kind must be one of {POLICIES}, got {kind!r}")
    k = num_kept(rt, num_segments)
    if kind == "uniform":
        rows = uniform_indices(k, num_segments).expand(num_videos, k)
    elif kind == "random":
        rows = torch.rand(num_videos, num_segments, generator=generator).argsort(dim=1)[:, :k]
    else:
        w = normal_weights(num_segments).expand(num_videos, num_segments)
        rows = torch.multinomial(w, k, replacement=False, generator=generator)
    mask = torch.zeros(num_videos, num_segments, dtype=torch.bool)
    mask.scatter_(1, rows, True)
    return mask.to(device) if device is not None else mask


class FixedPolicy(nn.Module):
    """Drop-in replacement for ``Navigation`` returning a fixed-policy mask; no parameters.

    ``forward(x [N*T, C, H, W]) -> [N, T]`` float 0/1 in ``x``'s dtype. Random policies draw
    from ``self.generator`` when set (seed it for reproducible runs), else the global RNG.
    """

    def __init__(self, kind: str, rt: float, num_segments: int) -> None:
        super().__init__()
        num_kept(rt, num_segments)
        if kind not in POLICIES:
            raise ValueError(f"kind must be one of {POLICIES}, got {kind!r}")
        self.kind = kind
        self.rt = rt
        self.num_segments = num_segments
        self.generator: Optional[torch.Generator] = None

    is_binary = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0] // self.num_segments
        mask = fixed_policy_mask(
            self.kind, self.rt, n, self.num_segments, generator=self.generator, device=x.device
        )
        return mask.to(x.dtype)
