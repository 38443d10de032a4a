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
    """Gumbel(0, 1) samples ``g = -log(eps - log(u + eps))``, ``u ~ U(0, 1)``, eps = 1e-10, drawn on
    ``device`` (default CPU).

    ``generator`` (default: the device's global generator) must live on ``device``: the noise is
    drawn where it is used, never copied from the host (a blocking transfer, illegal while a
    CUDA graph captures).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"generator is on {generator.device} but the noise is drawn on {device}: use a generator of that device"
        )
    u = torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)
    return -torch.log(EPS - torch.log(u + EPS))


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
