"""Loading and saving AF model weights.

Accepted layouts (all read with ``torch.load(..., weights_only=True)``):

- released ImageNet backbones: ``{'state_dict': {'module.<backbone key>': tensor}}``; the
  backbone's ``fc`` becomes the model's ``new_fc`` when the model has one;
- released video models: ``{'state_dict': {'module.base_model.*', 'module.new_fc.*'}, 'arch', ...}``,
  with or without the ``module.`` prefix;
- our own format (:func:`save_checkpoint`): ``{'afnet_checkpoint': 1, 'config': {...},
  'state_dict': model.state_dict()}``;
- a bare state dict in any of these key layouts.

Missing, unexpected and wrongly shaped keys are fatal unless ``strict=False`` (partial
loading, e.g. an ImageNet backbone fine-tuned onto new classes); a checkpoint sharing no key
with the model is always an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Tuple, Union

import torch
import torch.nn as nn


__all__ = ["CheckpointError", "LoadReport", "load_checkpoint", "save_checkpoint"]

FORMAT_KEY = "afnet_checkpoint"
FORMAT_VERSION = 1
_SHOW = 8


class CheckpointError(ValueError):
    """The checkpoint does not fit the model."""


@dataclass
class LoadReport:
    """What a :func:`load_checkpoint` call matched (keys in the model's naming)."""

    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)
    layout: str = ""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        def head(items: List[Any]) -> str:
            shown = ", ".join(str(i) for i in items[:_SHOW])
            return shown + (f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else "")

        lines = [f"layout {self.layout!r}: {len(self.loaded)} tensors match"]
        if self.missing:
            lines.append(f"{len(self.missing)} missing in checkpoint: {head(self.missing)}")
        if self.unexpected:
            lines.append(f"{len(self.unexpected)} unexpected in checkpoint: {head(self.unexpected)}")
        if self.mismatched:
            items = [f"{k} (checkpoint {tuple(c)} vs model {tuple(m)})" for k, c, m in self.mismatched]
            lines.append(f"{len(self.mismatched)} with wrong shape: {head(items)}")
        return "; ".join(lines)


def _read(path_or_dict: Union[str, os.PathLike, Mapping[str, Any]]) -> Mapping[str, Any]:
    if isinstance(path_or_dict, Mapping):
        return path_or_dict
    if isinstance(path_or_dict, (str, os.PathLike)):
        return torch.load(path_or_dict, map_location="cpu", weights_only=True)
    raise TypeError(f"path_or_dict must be a path or a dict, got {type(path_or_dict).__name__}")


def _state_dict_of(checkpoint: Mapping[str, Any]) -> Tuple[Dict[str, torch.Tensor], str, Dict[str, Any]]:
    """(tensors, layout name, metadata) from any accepted container."""
    meta = {k: v for k, v in checkpoint.items() if k != "state_dict" and not isinstance(v, torch.Tensor)}
    if FORMAT_KEY in checkpoint:
        return dict(checkpoint["state_dict"]), "afnet", meta
    if "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], Mapping):
        return dict(checkpoint["state_dict"]), "released", meta
    tensors = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"no tensors in checkpoint (keys: {sorted(checkpoint)[:_SHOW]})")
    return tensors, "state_dict", {}


def _to_model_keys(
    tensors: Dict[str, torch.Tensor], model_keys: Mapping[str, torch.Tensor]
) -> Tuple[Dict[str, torch.Tensor], str]:
    """Rename checkpoint keys into the model's naming; returns (renamed, layout description)."""
    bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint state_dict holds non-tensors at {bad[:_SHOW]}")
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    if any(k.startswith("base_model.") for k in tensors):
        return tensors, "video model"
    # A backbone: prefix base_model., its classifier fc -> new_fc when the model has new_fc.
    has_new_fc = any(k.startswith("new_fc.") for k in model_keys)
    renamed = {}
    for k, v in tensors.items():
        if has_new_fc and k.startswith("fc."):
            renamed["new_fc." + k[len("fc.") :]] = v
        else:
            renamed["base_model." + k] = v
    return renamed, "backbone"


def _match(model_state: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor], layout: str) -> LoadReport:
    report = LoadReport(layout=layout)
    for key, value in tensors.items():
        if key not in model_state:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(model_state[key].shape):
            report.mismatched.append((key, tuple(value.shape), tuple(model_state[key].shape)))
        else:
            report.loaded.append(key)
    report.missing = [k for k in model_state if k not in tensors]
    return report


def load_checkpoint(
    model: nn.Module,
    path_or_dict: Union[str, os.PathLike, Mapping[str, Any]],
    *,
    strict: bool = True,
) -> LoadReport:
    """Load weights into ``model`` from any accepted layout (see module docstring).

    Args:
        model: an ``afnet`` model (``create_model``).
        path_or_dict: a file path or an already loaded checkpoint dict.
        strict: raise :class:`CheckpointError` on any missing, unexpected or wrongly shaped key.
            With False, the matching tensors are loaded and the rest is reported.

    Returns a :class:`LoadReport`. Raises :class:`CheckpointError` when the checkpoint does not fit
    (always when no key matches, e.g. another architecture).
    """
    checkpoint = _read(path_or_dict)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"checkpoint must be a dict, got {type(checkpoint).__name__}")
    tensors, container, meta = _state_dict_of(checkpoint)
    model_state = model.state_dict()
    tensors, layout = _to_model_keys(tensors, model_state)
    report = _match(model_state, tensors, f"{container} {layout}")
    arch = getattr(model, "arch", type(model).__name__)
    source = meta.get("config", {}).get("arch") if isinstance(meta.get("config"), Mapping) else meta.get("arch")
    where = f"checkpoint (arch {source!r}) " if source else "checkpoint "
    if not report.loaded:
        raise CheckpointError(f"{where}does not fit model {arch!r}: no tensor matches. {report.describe()}")
    if strict and not report.ok:
        raise CheckpointError(
            f"{where}does not fit model {arch!r} (pass strict=False to load the matching part): "
            + report.describe()
        )
    with torch.no_grad():
        for key in report.loaded:
            model_state[key].copy_(tensors[key])
    if hasattr(model, "refresh_plan"):  # copy_ bumps version counters too; this states it
        model.refresh_plan()
    return report


def save_checkpoint(model: nn.Module, path: Union[str, os.PathLike], **extra: Any) -> None:
    """Save ``model`` in our format: its config (when it has one), its state dict and ``extra``."""
    payload: Dict[str, Any] = {FORMAT_KEY: FORMAT_VERSION, "state_dict": model.state_dict()}
    config = getattr(model, "config", None)
    if config is not None:
        payload["config"] = dict(config)
    payload.update(extra)
    torch.save(payload, path)
