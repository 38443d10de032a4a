"""Facts that tell whether values derived from a module tree are still valid.

The inference plan folds weights and bakes in settings (a block's last ReLU, its shift, whether
unselected frames get ``F(0)``, BN's ``eps``, a conv's stride and padding). A cached plan is
valid while none of these facts changed: every parameter and buffer (version counter, storage,
dtype, device), every module (its identity, so a replaced module counts) and the settings the
plan reads from it.
"""

from __future__ import annotations

from typing import Dict, Hashable, List, Tuple

import torch
import torch.nn as nn

__all__ = ["PLAN_SETTINGS", "StateSignature", "state_signature", "state_tensors", "tensor_version"]

#: Settings of torch's own modules that a folded plan bakes in. Modules of this project list
#: theirs in a ``plan_settings`` class attribute (``afnet.models.residual.ResidualBlock``).
PLAN_SETTINGS: Dict[type, Tuple[str, ...]] = {
    nn.Conv2d: ("stride", "padding", "dilation", "groups", "padding_mode"),
    nn.BatchNorm2d: ("eps", "track_running_stats"),
    nn.AvgPool2d: ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    nn.MaxPool2d: ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
}


def tensor_version(t: torch.Tensor) -> int:
    """``t``'s version counter, bumped by every in-place write, or -1 for an inference tensor (a
    model converted inside ``inference_mode``), which keeps none: like ``.data`` writes, in-place
    changes to those are not seen."""
    return -1 if t.is_inference() else t._version


def state_tensors(module: nn.Module) -> List[torch.Tensor]:
    """Every parameter and buffer of ``module`` (a tensor shared by two modules comes twice)."""
    return [
        t for m in module.modules() for t in (*m._parameters.values(), *m._buffers.values()) if t is not None
    ]


class StateSignature(tuple):
    """The facts of one walk of a module tree (compare with ``==``), and whether any parameter
    requires a gradient (read in the same walk)."""

    requires_grad: bool


def _settings_of(kind: type) -> Tuple[str, ...]:
    names = _SETTINGS_OF.get(kind)
    if names is None:
        names = _SETTINGS_OF[kind] = PLAN_SETTINGS.get(kind) or tuple(getattr(kind, "plan_settings", ()))
    return names


_SETTINGS_OF: Dict[type, Tuple[str, ...]] = {}


def state_signature(module: nn.Module) -> StateSignature:
    """Changes whenever a parameter or buffer of ``module`` is modified in place (version counter),
    reassigned, or moved to another storage, dtype or device; whenever a module is replaced; and
    whenever a setting the plan bakes in changes (:data:`PLAN_SETTINGS`, ``plan_settings``).
    One walk of the module tree (it runs before every eval forward of a live model: kept lean)."""
    facts: List[Hashable] = []
    requires_grad = False
    for m in module.modules():
        facts.append(id(m))
        for name in _settings_of(type(m)):
            facts.append(getattr(m, name))
        for t in m._parameters.values():
            if t is not None:
                facts.append((id(t), tensor_version(t), t.data_ptr(), t.dtype, t.device))
                requires_grad = requires_grad or t.requires_grad
        for t in m._buffers.values():
            if t is not None:
                facts.append((id(t), tensor_version(t), t.data_ptr(), t.dtype, t.device))
    signature = StateSignature(facts)
    signature.requires_grad = requires_grad
    return signature
