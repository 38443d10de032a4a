"""Device names as users write them (command lines, configs)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["is_device_name"]


def is_device_name(value: Any) -> bool:
    """Whether ``value`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (visible or not)."""
    if value == "auto":
        return True
    try:
        return isinstance(value, str) and torch.device(value).type in ("cpu", "cuda")
    except RuntimeError:
        return False
