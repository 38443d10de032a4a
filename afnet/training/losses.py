"""AFNet training loss: cross-entropy plus the selection-ratio penalty."""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from afnet.layers import FixedPolicy, Navigation, SpatialNavigation, SpatialPolicy


def ratio_penalty(masks: Sequence[torch.Tensor], rt: float) -> torch.Tensor:
    """``mean_over_masks((mean(mask) − rt)²)``; each mask ``[N, T]`` (any shape), averaged
    over the whole batch as the released code does."""
    if len(masks) == 0:
        raise ValueError("masks must hold at least one navigation mask, got none")
    terms = [(m.float().mean() - rt) ** 2 for m in masks]
    return torch.stack(terms).mean()


def spatial_ratio_penalty(
    masks: Sequence[torch.Tensor], spatial_masks: Sequence[torch.Tensor], rs: float
) -> torch.Tensor:
    """``mean_over_blocks((r_b − rs)²)``, ``r_b`` the share of computed cells among the cells of
    the frames block ``b`` selected (paper §3.3's RS).

    Args:
        masks: the temporal masks ``[N, T]``, one per focal block, or a single one shared by
            every block (first-layer navigation). Detached here: this term trains the spatial gates.
        spatial_masks: differentiable cell masks ``[N*T, Gh, Gw]``, one per focal block.
    """
    if len(spatial_masks) == 0:
        raise ValueError("spatial_masks must hold at least one spatial mask, got none")
    if len(masks) not in (1, len(spatial_masks)):
        raise ValueError(f"masks: expected 1 or {len(spatial_masks)} temporal masks, got {len(masks)}")
    terms = []
    for b, cells in enumerate(spatial_masks):
        frames = masks[b if len(masks) > 1 else 0].detach().reshape(-1, 1, 1).to(cells.dtype)
        selected_cells = (frames.sum() * cells[0].numel()).clamp_min(1.0)
        terms.append(((cells * frames).sum() / selected_cells - rs) ** 2)
    return torch.stack(terms).mean()


def selected_ratio(masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean selected fraction over all masks (a scalar, for logging)."""
    return torch.stack([m.float().mean() for m in masks]).mean()


def navigation_penalty(
    masks: Sequence[torch.Tensor],
    rt: float,
    spatial_masks: Optional[Sequence[torch.Tensor]] = None,
    rs: Optional[float] = None,
) -> torch.Tensor:
    """The ratio term of the loss: ``ratio_penalty(masks, rt)``, plus
    ``spatial_ratio_penalty(masks, spatial_masks, rs)`` with spatial navigation."""
    penalty = ratio_penalty(masks, rt)
    if spatial_masks:
        if rs is None:
            raise ValueError("rs, the spatial target ratio, is needed with spatial_masks")
        penalty = penalty + spatial_ratio_penalty(masks, spatial_masks, rs)
    return penalty


def afnet_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    masks: Sequence[torch.Tensor],
    rt: float,
    lam: float = 0.5,
    spatial_masks: Optional[Sequence[torch.Tensor]] = None,
    rs: Optional[float] = None,
) -> torch.Tensor:
    """``CE(logits, target) + lam · ratio_penalty(masks, rt)`` (``+ lam · spatial_ratio_penalty``
    with spatial navigation).

    Args:
        logits: ``[N, classes]``; target: int64 ``[N]``.
        masks: differentiable float masks ``[N, T]`` from the navigation modules (training mode).
        rt: the current target ratio (see ``afnet.training.schedules.target_ratio``).
        lam: 0.5 for Something-Something and Jester, 1 for Mini-Kinetics and ActivityNet.
        spatial_masks, rs: the differentiable cell masks (:func:`record_spatial_masks`) and the
            target ratio of computed cells of the selected frames.
    """
    return F.cross_entropy(logits, target) + lam * navigation_penalty(masks, rt, spatial_masks, rs)


@contextlib.contextmanager
def record_masks(model: nn.Module) -> Iterator[List[torch.Tensor]]:
    """Collect the differentiable masks ``[N, T]`` of every gate (navigation or fixed policy)
    under ``model`` during the forward passes run inside the ``with`` block, in forward order.

    The model's ``return_masks`` gives detached bool masks; training needs these instead::

        with record_masks(model) as masks:
            logits = model(video)
        loss = afnet_loss(logits, target, masks, rt)
    """
    with _recording(model, (Navigation, FixedPolicy)) as masks:
        yield masks


@contextlib.contextmanager
def record_spatial_masks(model: nn.Module) -> Iterator[List[torch.Tensor]]:
    """Like :func:`record_masks`, for the differentiable cell masks ``[N*T, Gh, Gw]`` of the
    spatial gates, in forward order."""
    with _recording(model, (SpatialNavigation, SpatialPolicy)) as masks:
        yield masks


@contextlib.contextmanager
def _recording(model: nn.Module, kinds: tuple) -> Iterator[List[torch.Tensor]]:
    outputs: List[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        outputs.append(output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()
