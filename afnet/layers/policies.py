"""Fixed frame-selection policies (paper Table 5 ablations and benchmarks).

Masks are made on the device of the frames they gate, from device ops only, so a forward pass
never copies a host-built tensor to the GPU (a blocking transfer, and illegal while a CUDA graph
captures); the deterministic ``uniform`` mask is cached per policy setting, batch size, device
and dtype.
"""

from __future__ import annotations

import math
from typing import Dict, Hashable, Optional

import torch
import torch.nn as nn

from afnet.layers.ratios import count_for_ratio, is_ratio

POLICIES = ("random", "uniform", "normal")


def num_kept(rt: float, num_segments: int) -> int:
    """Frames kept per video at ratio ``rt``: ``floor(rt·T + 1/2)`` (:func:`count_for_ratio`), at least 1."""
    if not is_ratio(rt):
        raise ValueError(f"rt must be a number in (0, 1], got {rt!r}")
    return max(1, count_for_ratio(rt, num_segments))


def uniform_indices(k: int, num_segments: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """``k`` frames in equal steps, centred in each step (TSN-style): ``floor(T·(2i + 1) / 2k)``,
    in integer arithmetic on ``device`` (no host-built tensor)."""
    i = torch.arange(k, dtype=torch.int64, device=device)
    return torch.div((2 * i + 1) * num_segments, 2 * k, rounding_mode="floor")


def normal_log_weights(num_segments: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """Log of the standard-normal density at frame positions mapped to [-2, 2] (the clip's
    centre favoured), up to a constant."""
    z = (torch.arange(num_segments, dtype=torch.float64, device=device) + 0.5) * (4.0 / num_segments) - 2.0
    return -0.5 * z * z - 0.5 * math.log(2 * math.pi)


def fixed_policy_mask(
    kind: str,
    rt: float,
    num_videos: int,
    num_segments: int,
    *,
    generator: Optional[torch.Generator] = None,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """Bool mask ``[N, T]`` with exactly :func:`num_kept` frames kept per video, on ``device``.

    - ``random``: a uniformly random subset per video.
    - ``uniform``: deterministic equal steps (same for every video).
    - ``normal``: frames drawn without replacement with weights from a standard normal over
      the clip (positions mapped to [-2, 2]), so central frames are preferred. Drawn with the
      Gumbel-top-k trick, which is sampling without replacement and needs no host sync.

    ``generator`` draws the random policies; it must live on ``device`` (default: the global
    generator of ``device``).
    """
    if kind not in POLICIES:
        raise ValueError(f"kind must be one of {POLICIES}, got {kind!r}")
    k = num_kept(rt, num_segments)
    device = torch.device(device) if device is not None else torch.device("cpu")
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"generator is on {generator.device} but the mask is made on {device}: use a generator of that device"
        )
    if kind == "uniform":
        rows = uniform_indices(k, num_segments, device).expand(num_videos, k)
    else:
        keys = torch.rand(num_videos, num_segments, generator=generator, device=device, dtype=torch.float64)
        if kind == "normal":
            # Gumbel-top-k: log w + Gumbel noise, top k, samples k items without replacement ∝ w.
            keys = normal_log_weights(num_segments, device) - torch.log(-torch.log(keys.clamp_min(1e-300)))
        rows = keys.topk(k, dim=1).indices
    mask = torch.zeros(num_videos, num_segments, dtype=torch.bool, device=device)
    return mask.scatter_(1, rows, True)


class FixedPolicy(nn.Module):
    """Drop-in replacement for ``Navigation`` returning a fixed-policy mask; no parameters.

    ``forward(x [N*T, C, H, W]) -> [N, T]`` float 0/1 in ``x``'s dtype, on ``x``'s device. Random
    policies draw from ``self.generator`` when set (a generator on the frames' device; seed it
    for reproducible runs), else from the device's global generator. ``frames_per_video`` tells
    the engine the count without reading the mask; it follows ``rt`` and ``num_segments`` when
    they are changed.
    """

    is_binary = True

    def __init__(self, kind: str, rt: float, num_segments: int) -> None:
        super().__init__()
        num_kept(rt, num_segments)  # checks rt
        if kind not in POLICIES:
            raise ValueError(f"kind must be one of {POLICIES}, got {kind!r}")
        self.kind = kind
        self.rt = rt
        self.num_segments = num_segments
        self.generator: Optional[torch.Generator] = None
        self._uniform: Dict[Hashable, torch.Tensor] = {}

    @property
    def frames_per_video(self) -> int:
        return num_kept(self.rt, self.num_segments)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0] // self.num_segments
        if self.kind == "uniform":
            # Keyed on every setting the mask depends on: changing rt must not return the old mask.
            key = (self.rt, self.num_segments, n, x.device, x.dtype)
            mask = self._uniform.get(key)
            if mask is None:
                with torch.inference_mode(False):  # a cached normal tensor, usable under autograd too
                    mask = self._uniform[key] = fixed_policy_mask(
                        "uniform", self.rt, n, self.num_segments, device=x.device
                    ).to(x.dtype)
            return mask
        mask = fixed_policy_mask(
            self.kind, self.rt, n, self.num_segments, generator=self.generator, device=x.device
        )
        return mask.to(x.dtype)
