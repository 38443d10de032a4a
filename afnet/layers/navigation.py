"""Navigation module: per-frame binary gates deciding which frames the focal branch computes."""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from afnet.layers.gumbel import gumbel_noise, hard_gumbel_softmax
from afnet.layers.policies import FixedPolicy
from afnet.layers.ranking import keep_largest


class Navigation(nn.Module):
    """Frame gates from the input of an ample block.

    ``x [N*T, C, H, W]`` → avg pool → ``conv_pool`` (C→2, 1x1) → ``bn`` → ReLU → view
    ``[N, 2T, 1, 1]`` (channel ``2t + j`` is logit j of frame t) → ``conv_gs`` (2T→2T, 1x1, bias)
    → ``[N, T, 2]`` → hard Gumbel-softmax; index 1 means keep.

    Args:
        in_channels: C.
        num_segments: T.
        mix_frames: False (released code): ``conv_gs`` has groups = T, so a frame's gate depends
            only on that frame. True (paper Eq. 3): a full 2T→2T conv mixing all frames.
        soft: the paper's "soft weights" variant (Table 1): no Gumbel-softmax, the mask is the
            keep probability ``softmax(logits)[..., 1]``. Such masks are not binary, so a model
            using them can only run the dense execution.

    Attributes set by the caller:
        tau: training temperature (see ``afnet.training.schedules``); changes gradients only.
        eval_noise: add seeded Gumbel noise in eval as the released code does (default off:
            deterministic argmax). Use ``set_eval_noise``: the noise is then drawn on the frames'
            device from a generator seeded once per device.
        generator: a noise generator on the frames' device; when set it is used in training
            and eval instead.
    """

    def __init__(
        self, in_channels: int, num_segments: int, mix_frames: bool = False, soft: bool = False
    ) -> None:
        super().__init__()
        if num_segments < 1:
            raise ValueError(f"num_segments must be >= 1, got {num_segments}")
        self.num_segments = num_segments
        self.mix_frames = mix_frames
        self.soft = soft
        self.conv_pool = nn.Conv2d(in_channels, 2, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        t2 = 2 * num_segments
        self.conv_gs = nn.Conv2d(t2, t2, kernel_size=1, groups=1 if mix_frames else num_segments, bias=True)
        self.tau: float = 1.0
        self.eval_noise: bool = False
        self.generator: Optional[torch.Generator] = None
        self._noise_seed: Optional[int] = None
        self._seeded: Dict[torch.device, torch.Generator] = {}
        self.reset_gate_bias()

    def reset_gate_bias(self, skip: float = 1.0, keep: float = 10.0) -> None:
        """Logit biases for "skip" and "keep"; the released (1, 10) selects every frame at first."""
        with torch.no_grad():
            self.conv_gs.bias[0::2] = skip
            self.conv_gs.bias[1::2] = keep

    def set_eval_noise(self, enabled: bool, seed: int = 0) -> None:
        """Turn seeded noisy eval on (generators seeded with ``seed``, one per device, made at first
        use) or off."""
        self.eval_noise = enabled
        self._noise_seed = seed if enabled else None
        self._seeded = {}

    @property
    def is_binary(self) -> bool:
        """Whether ``forward`` returns 0/1 masks (False for the soft-weights variant)."""
        return not self.soft

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Gate logits ``[N, T, 2]`` for ``x [N*T, C, H, W]``."""
        nt = x.shape[0]
        if nt % self.num_segments != 0:
            raise ValueError(
                f"x.shape[0] must be a multiple of num_segments={self.num_segments}, got {nt}"
            )
        g = F.adaptive_avg_pool2d(x, 1)
        g = torch.relu(self.bn(self.conv_pool(g)))
        g = self.conv_gs(g.reshape(nt // self.num_segments, 2 * self.num_segments, 1, 1))
        return g.reshape(nt // self.num_segments, self.num_segments, 2)

    def _noise(self, logits: torch.Tensor) -> torch.Tensor:
        generator = self.generator
        if generator is None and self._noise_seed is not None:
            generator = self._seeded.get(logits.device)
            if generator is None:
                generator = torch.Generator(device=logits.device).manual_seed(self._noise_seed)
                self._seeded[logits.device] = generator
        return gumbel_noise(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)

    def keep_top(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Frame-budget mask ``[N, T]`` (float 0/1, ``x``'s dtype): exactly ``k`` frames of each
        video, those with the largest keep margin ``l1 − l0``, ties to the earlier frame and NaN
        margins last (:func:`afnet.layers.ranking.keep_largest`). Not differentiable: an
        inference-time rule."""
        logits = self.logits(x)
        return keep_largest(logits[..., 1] - logits[..., 0], k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mask ``[N, T]`` (float, same dtype as ``x``): 1 keeps the frame.

        Training: hard Gumbel-softmax sample with straight-through gradients.
        Eval: argmax of the logits, or a seeded noisy sample when ``eval_noise`` is set.
        """
        logits = self.logits(x)
        if self.soft:
            return F.softmax(logits, dim=-1)[..., 1]
        if self.training or self.eval_noise:
            return hard_gumbel_softmax(logits, self.tau, self._noise(logits))[..., 1]
        # argmax picks index 0 on a tie, so a frame is kept only when l1 > l0.
        return (logits[..., 1] > logits[..., 0]).to(logits.dtype)


def temporal_gate(
    policy: str, rt: Optional[float], in_channels: int, num_segments: int, *, mix_frames: bool = False,
    soft: bool = False,
) -> nn.Module:
    """The temporal gate of one focal block (or of the first layer): a :class:`Navigation` reading
    ``in_channels`` features when ``policy`` is ``"navigation"``, else the fixed policy ``policy``
    at ratio ``rt``."""
    if policy == "navigation":
        return Navigation(in_channels, num_segments, mix_frames=mix_frames, soft=soft)
    return FixedPolicy(policy, rt, num_segments)
