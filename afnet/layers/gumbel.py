"""Hard Gumbel-softmax with the straight-through estimator, as the released AFNet uses it."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

EPS = 1e-10


def gumbel_noise(
    shape: Sequence[int],
    *,
    generator: Optional[torch.Generator] = None,
    device: Optional[torch.device] = None,
    dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Gumbel(0, 1) samples ``g = -log(eps - log(u + eps))``, ``u ~ U(0, 1)``, eps = 1e-10.

    The noise is drawn on the generator's device (CPU for a default generator) and then
    moved to ``device``, so a seeded CPU generator gives the same noise on every device.
    """
    draw_device = generator.device if generator is not None else device
    u = torch.rand(tuple(shape), generator=generator, device=draw_device, dtype=dtype)
    g = -torch.log(EPS - torch.log(u + EPS))
    return g.to(device) if device is not None else g


def hard_gumbel_softmax(
    logits: torch.Tensor, tau: float, noise: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """One-hot sample over the last dim with straight-through gradients.

    Args:
        logits: ``[..., K]`` (K = 2 for the navigation gates).
        tau: softmax temperature, > 0. It changes the gradient, never the forward value.
        noise: Gumbel noise shaped like ``logits``; ``None`` means noise-free (argmax).

    Returns:
        ``[..., K]``: ``hard - soft.detach() + soft``, where
        ``soft = softmax((logits + noise) / tau)`` and ``hard = one_hot(argmax)``.
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    y = logits if noise is None else logits + noise
    soft = F.softmax(y / tau, dim=-1)
    # argmax of y, not of soft: at small tau the softmax saturates and can tie.
    hard = F.one_hot(y.argmax(dim=-1), logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft
