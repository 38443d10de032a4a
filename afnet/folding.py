"""BatchNorm folding for inference, and the cache that keeps folded weights valid.

In eval, ``bn(conv(x))`` equals one convolution with weight ``w·s`` and bias
``β − μ·s (+ b·s)``, where ``s = γ / sqrt(σ² + eps)``. Folding removes a full
pass over every activation. The folded tensors are derived from the module's
weights, so they live in an :class:`InferenceCache` that is emptied whenever any
parameter or buffer changes (in-place update, reassignment, ``.to()``) and when
the module goes back to training (:class:`CachedInference`).

Caveat: a write through ``param.data`` bypasses the version counter PyTorch keeps
per tensor; after one, call ``clear_inference_cache(model)``.
"""

from __future__ import annotations

import itertools
from typing import Callable, Dict, Hashable, List, Optional, Sequence, Tuple, TypeVar

import torch
import torch.nn as nn
import torch.nn.functional as F

# The model follows the kernels' layout rule, so its folded weights match what the ops return.
from afnet_kernels.reference import memory_format as memory_format_of

__all__ = [
    "fold_conv_bn",
    "FoldedConv",
    "fold_sequence",
    "run_steps",
    "InferenceCache",
    "CachedInference",
    "clear_inference_cache",
    "state_signature",
    "is_channels_last",
    "memory_format_of",
]

V = TypeVar("V")


@torch.no_grad()
def fold_conv_bn(
    conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d]
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Weight ``[C_out, C_in/groups, k, k]`` and bias ``[C_out]`` (or None) of ``bn ∘ conv`` in eval.

    The result is detached: folded weights are for inference only.
    """
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else None
    if bn is None:
        return weight, bias
    if bn.running_var is None or bn.running_mean is None:
        raise ValueError("fold_conv_bn needs a BatchNorm with running statistics (track_running_stats=True)")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    if bias is not None:
        shift = shift + bias * scale
    return weight * scale.reshape(-1, 1, 1, 1), shift


_MKLDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
# Activations a folded conv can apply to its fresh output (fused into the oneDNN conv on CPU).
_ACTIVATIONS: Dict[type, Tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    nn.ReLU: ("relu", torch.relu_),
    nn.Hardswish: ("hardswish", lambda y: F.hardswish(y, inplace=True)),
}


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is a 4-D tensor laid out channels_last (and not also plain contiguous)."""
    return memory_format_of(x) == torch.channels_last


class FoldedConv:
    """``conv`` with its following BN folded in and an optional activation epilogue.

    Calling it on ``[B, C_in, H, W]`` gives ``[B, C_out, H', W']``. For fp32 channels_last CPU
    inputs without autograd it runs oneDNN directly: the weight is reordered (prepacked) once
    and the activation, or a residual add and ReLU (:meth:`add`), are fused into the conv.
    Otherwise ``F.conv2d`` runs, followed by the in-place activation.
    """

    __slots__ = ("weight", "bias", "stride", "padding", "dilation", "groups", "activation", "_packed")

    def __init__(
        self,
        conv: nn.Conv2d,
        bn: Optional[nn.BatchNorm2d],
        relu: bool = False,
        memory_format: torch.memory_format = torch.contiguous_format,
        activation: Optional[nn.Module] = None,
    ) -> None:
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"FoldedConv supports numeric zero padding only, got {conv.padding!r}/{conv.padding_mode}")
        if relu and activation is not None:
            raise ValueError("pass either relu=True or an activation module, not both")
        activation = nn.ReLU() if relu else activation
        if activation is not None and type(activation) not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {[t.__name__ for t in _ACTIVATIONS]}, got {activation!r}")
        weight, self.bias = fold_conv_bn(conv, bn)
        self.weight = weight.contiguous(memory_format=memory_format)
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.activation = type(activation) if activation is not None else None
        self._packed: Optional[torch.Tensor] = None

    @property
    def relu(self) -> bool:
        return self.activation is nn.ReLU

    def _onednn(self, x: torch.Tensor) -> bool:
        return (
            _MKLDNN
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and is_channels_last(x)
            and not (torch.is_grad_enabled() and x.requires_grad)
        )

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        if self._packed is None:
            self._packed = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, self.padding, self.stride, self.dilation, self.groups, list(x.shape)
            )
        return self._packed

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._onednn(x):
            attr = _ACTIVATIONS[self.activation][0] if self.activation is not None else "none"
            return torch.ops.mkldnn._convolution_pointwise(
                x, self._packed_weight(x), self.bias, self.padding, self.stride, self.dilation, self.groups,
                attr, [], "",
            )
        y = self._conv(x)
        return _ACTIVATIONS[self.activation][1](y) if self.activation is not None else y

    def add(self, x: torch.Tensor, other: torch.Tensor, relu: bool) -> torch.Tensor:
        """``conv(x) + other``, then ReLU if ``relu``; one fused pass on oneDNN.

        ``other`` has the output's shape and is not modified. Only for convs without activation.
        """
        if self.activation is not None:
            raise ValueError("FoldedConv.add needs a conv without activation")
        if self._onednn(x) and is_channels_last(other) and other.dtype == x.dtype:
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, other, self._packed_weight(x), self.bias, self.padding, self.stride, self.dilation,
                self.groups, "add", 1.0, "relu" if relu else None, [], "",
            )
        y = self._conv(x).add_(other)
        return y.relu_() if relu else y


Step = Callable[[torch.Tensor], torch.Tensor]


def fold_sequence(
    modules: Sequence[nn.Module], memory_format: torch.memory_format = torch.contiguous_format
) -> List[Step]:
    """Inference steps equal to applying ``modules`` in order (eval mode).

    Each ``Conv2d`` absorbs a directly following ``BatchNorm2d`` and then a following ``ReLU``
    or ``Hardswish`` (fused on oneDNN, else applied in place on the fresh conv output). Other
    modules (pooling, other activations) are kept as they are. Returns callables ``x -> y``.
    """
    steps: List[Step] = []
    i = 0
    while i < len(modules):
        m = modules[i]
        if isinstance(m, nn.Conv2d):
            bn = modules[i + 1] if i + 1 < len(modules) and isinstance(modules[i + 1], nn.BatchNorm2d) else None
            j = i + 1 + (bn is not None)
            act = modules[j] if j < len(modules) and type(modules[j]) in _ACTIVATIONS else None
            steps.append(FoldedConv(m, bn, memory_format=memory_format, activation=act))
            i = j + (act is not None)
        else:
            steps.append(m)
            i += 1
    return steps


def run_steps(steps: Sequence[Step], x: torch.Tensor) -> torch.Tensor:
    """Apply ``steps`` (from :func:`fold_sequence`) in order."""
    for step in steps:
        x = step(x)
    return x


def state_signature(*modules: nn.Module) -> Tuple[Hashable, ...]:
    """A value that changes whenever any parameter or buffer of ``modules`` is modified or replaced."""
    return tuple(
        (t._version, t.data_ptr(), t.dtype, t.device, t.shape)
        for m in modules
        for t in itertools.chain(m.parameters(), m.buffers())
    )


class InferenceCache:
    """Values derived from one module's weights (folded convs, zero responses).

    :meth:`values` returns the dict of cached values, emptied first if the module's
    :func:`state_signature` changed since the last call, so each forward pays one
    signature check per module, not one per value.
    """

    def __init__(self) -> None:
        self._signature: Optional[Tuple[Hashable, ...]] = None
        self._values: Dict[Hashable, object] = {}

    def values(self, *modules: nn.Module) -> Dict[Hashable, object]:
        signature = state_signature(*modules)
        if signature != self._signature:
            self._values = {}
            self._signature = signature
        return self._values

    def clear(self) -> None:
        self._signature = None
        self._values = {}

    def __len__(self) -> int:
        return len(self._values)


class CachedInference(nn.Module):
    """Base for modules with an inference cache, emptied when the module is set to training.

    Subclasses call ``self.inference_values()`` (one validity check) and fill the dict.
    """

    def __init__(self) -> None:
        super().__init__()
        self._inference_cache = InferenceCache()

    def inference_values(self, *parts: nn.Module) -> Dict[Hashable, object]:
        """The cache dict, valid for the current weights of ``parts`` (default: the whole module)."""
        return self._inference_cache.values(*(parts or (self,)))

    def cached(self, key: Hashable, compute: Callable[[], V]) -> V:
        """``compute()`` once per weight state for ``key`` (one signature check per call)."""
        values = self.inference_values()
        if key not in values:
            values[key] = compute()
        return values[key]  # type: ignore[return-value]

    def train(self, mode: bool = True) -> "CachedInference":
        if mode:
            self._inference_cache.clear()
        return super().train(mode)


def clear_inference_cache(model: nn.Module) -> None:
    """Drop every cached folded weight and zero response under ``model``."""
    for m in model.modules():
        if isinstance(m, CachedInference):
            m._inference_cache.clear()
