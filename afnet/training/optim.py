"""The optimiser of the paper's recipe: SGD with the released parameter groups, and the lr schedule.

Parameter groups follow the released training code (TSN's policy with AFNet's navigation group):

=================  ==================  ============
group              lr                  weight decay
=================  ==================  ============
navigation         ``nav_lr_mult``·lr  yes
linear weights     ``fc_lr_mult``·lr   yes
linear biases      2·``fc_lr_mult``·lr no
other biases       2·lr                no
BatchNorm          lr                  no
other weights      lr                  yes
=================  ==================  ============
"""

from __future__ import annotations

import math
from typing import Dict, List

import torch
import torch.nn as nn

from afnet.layers import Navigation
from afnet.training.config import TrainConfig

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm)


def param_groups(model: nn.Module, cfg: TrainConfig) -> List[Dict]:
    """The groups of the table above; each has ``lr_mult`` (the factor on the scheduled lr)."""
    groups = {
        "navigation": (cfg.nav_lr_mult, cfg.weight_decay),
        "linear_weight": (cfg.fc_lr_mult, cfg.weight_decay),
        "linear_bias": (2 * cfg.fc_lr_mult, 0.0),
        "bias": (2.0, 0.0),
        "norm": (1.0, 0.0),
        "weight": (1.0, cfg.weight_decay),
    }
    params: Dict[str, List[nn.Parameter]] = {name: [] for name in groups}
    navigation = {id(p) for m in model.modules() if isinstance(m, Navigation) for p in m.parameters()}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in navigation:
                key = "navigation"
            elif isinstance(module, nn.Linear):
                key = "linear_bias" if name == "bias" else "linear_weight"
            elif isinstance(module, _NORMS):
                key = "norm"
            else:
                key = "bias" if name == "bias" else "weight"
            params[key].append(p)
    return [
        {"name": name, "params": params[name], "lr_mult": mult, "weight_decay": decay, "lr": cfg.lr * mult}
        for name, (mult, decay) in groups.items()
        if params[name]
    ]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD with momentum over :func:`param_groups`."""
    return torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def learning_rate(cfg: TrainConfig, epoch: int, iteration: int, iters_per_epoch: int) -> float:
    """The base lr at ``iteration`` of ``epoch`` (0-based).

    - warm-up (``warmup_epochs`` > 0): linear from ``lr/(warmup·iters)`` up to ``lr``;
    - ``step``: ``lr · lr_decay^(number of lr_steps <= epoch)``;
    - ``cosine``: ``lr · (1 + cos(π·p))/2`` with ``p`` the progress after the warm-up, per iteration.
    """
    progress = epoch + iteration / iters_per_epoch
    if progress < cfg.warmup_epochs:
        return cfg.lr * (epoch * iters_per_epoch + iteration + 1) / (cfg.warmup_epochs * iters_per_epoch)
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.lr_decay ** sum(epoch >= s for s in cfg.lr_steps)
    p = (progress - cfg.warmup_epochs) / (cfg.epochs - cfg.warmup_epochs)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, p)))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every group ``lr · lr_mult``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]
