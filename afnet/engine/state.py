"""Facts that tell whether values derived from a module's weights are still valid."""

from __future__ import annotations

from typing import Hashable, List, Tuple

import torch
import torch.nn as nn

__all__ = ["state_signature", "state_tensors", "tensor_version"]


def tensor_version(t: torch.Tensor) -> int:
    """``t``'s version counter, bumped by every in-place write, or -1 for an inference tensor (a
    model converted inside ``inference_mode``), which keeps none: like ``.data`` writes, in-place
    changes to those are not seen."""
    return -1 if t.is_inference() else t._version


def state_tensors(module: nn.Module) -> List[torch.Tensor]:
    """Every parameter and buffer of ``module`` (a tensor shared by two modules comes twice).

    One walk of the module tree: ``parameters()`` and ``buffers()`` walk it once each, with
    de-duplication, which doubled the cost of the plan's per-forward check."""
    return [
        t for m in module.modules() for t in (*m._parameters.values(), *m._buffers.values()) if t is not None
    ]


def state_signature(module: nn.Module) -> Tuple[Hashable, ...]:
    """Changes whenever a parameter or buffer of ``module`` is modified in place (version
    counter), reassigned, or moved to another storage, dtype or device."""
    return tuple((id(t), tensor_version(t), t.data_ptr(), t.dtype, t.device) for t in state_tensors(module))
