"""Device names as users write them (command lines, configs), and the CPUs a process may use."""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["available_cpus", "is_device_name"]


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and ``taskset`` set;
    the machine's count where the OS has no such mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def is_device_name(value: Any) -> bool:
    """Whether ``value`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (visible or not)."""
    if value == "auto":
        return True
    try:
        return isinstance(value, str) and torch.device(value).type in ("cpu", "cuda")
    except RuntimeError:
        return False
