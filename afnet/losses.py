"""AFNet training loss: cross-entropy plus the selection-ratio penalty."""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from afnet.layers import FixedPolicy, Navigation


def ratio_penalty(masks: Sequence[torch.Tensor], rt: float) -> torch.Tensor:
    """``mean_over_masks((mean(mask) − rt)²)``; each mask ``[N, T]`` (any shape), averaged
    over the whole batch as the released code does."""
    if len(masks) == 0:
        raise ValueError("masks must hold at least one navigation mask, got none")
    terms = [(m.float().mean() - rt) ** 2 for m in masks]
    return torch.stack(terms).mean()


def selected_ratio(masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean selected fraction over all masks (a scalar, for logging)."""
    return torch.stack([m.float().mean() for m in masks]).mean()


def afnet_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    masks: Sequence[torch.Tensor],
    rt: float,
    lam: float = 0.5,
) -> torch.Tensor:
    """``CE(logits, target) + lam · ratio_penalty(masks, rt)``.

    Args:
        logits: ``[N, classes]``; target: int64 ``[N]``.
        masks: differentiable float masks ``[N, T]`` from the navigation modules (training mode).
        rt: the current target ratio (see ``afnet.schedules.target_ratio``).
        lam: 0.5 for Something-Something and Jester, 1 for Mini-Kinetics and ActivityNet.
    """
    return F.cross_entropy(logits, target) + lam * ratio_penalty(masks, rt)


@contextlib.contextmanager
def record_masks(model: nn.Module) -> Iterator[List[torch.Tensor]]:
    """Collect the differentiable masks ``[N, T]`` of every gate (navigation or fixed policy)
    under ``model`` during the forward passes run inside the ``with`` block, in forward order.

    The model's ``return_masks`` gives detached bool masks; training needs these instead::

        with record_masks(model) as masks:
            logits = model(video)
        loss = afnet_loss(logits, target, masks, rt)
    """
    masks: List[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        masks.append(output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (Navigation, FixedPolicy))]
    try:
        yield masks
    finally:
        for h in handles:
            h.remove()
