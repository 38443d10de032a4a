"""Tiny training runs for the tests: AF-ResNet18-TSM at 32 px, 4 frames, a few clips."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import torch

from afnet.training.config import TrainConfig, resolve_config

TINY: Dict[str, Any] = dict(frames=4, size=32, resize=32, batch_size=4, epochs=2, workers=0, seed=0, rt=0.5)


def tiny_config(out: Path, sets: Dict[str, Any] = None, **flags: Any) -> TrainConfig:
    """The built-in task (12 clips: 10 train, 2 val) unless data flags are given."""
    base_sets = {"demo_videos": 12, "rt_begin": 0, "rt_end": 2, "nav_bias": [0.0, 2.0]}
    base_sets.update(sets or {})
    return resolve_config(flags={**TINY, "out": str(out), **flags}, sets=base_sets)


def state_of(path: Path) -> Dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
