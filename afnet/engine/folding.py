"""BatchNorm folding: the convolutions of an inference plan.

In eval, ``bn(conv(x))`` equals one convolution with weight ``w·s`` and bias
``β − μ·s (+ b·s)``, where ``s = γ / sqrt(σ² + eps)``. Folding removes a full
pass over every activation, and the activation after it (ReLU, h-swish) or a
residual add and ReLU are fused into the convolution where oneDNN allows.

Every step of a plan is called as ``step(x, options)``, where ``options`` (a
:class:`StepOptions`, or the call's ``ExecutionContext``) says two things:
``exact`` asks for NaN-preserving epilogues (oneDNN's fused ReLU maps NaN to 0,
while the dense reference computation keeps NaN, so on non-finite input the plan
runs the unfused epilogues instead), and ``counter`` is the call's MAC counter.
"""

from __future__ import annotations

import copy
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

# The model follows the kernels' layout rule, so its folded weights match what the ops return.
from afnet_kernels.reference import memory_format as memory_format_of

from afnet.engine.counters import MacCounter

__all__ = [
    "fold_conv_bn",
    "FoldedConv",
    "ModuleStep",
    "PLAIN",
    "Step",
    "StepOptions",
    "fold_sequence",
    "run_steps",
    "is_channels_last",
    "onednn_applies",
    "memory_format_of",
]


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


class StepOptions(NamedTuple):
    """How the steps of one call run: NaN-preserving epilogues, and the MAC counter (or None)."""

    exact: bool = False
    counter: Optional[MacCounter] = None


#: fused epilogues, nothing counted.
PLAIN = StepOptions()

_MKLDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
# Activations a folded conv can apply to its fresh output (fused into the oneDNN conv on CPU).
_ACTIVATIONS: Dict[type, Tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    nn.ReLU: ("relu", torch.relu_),
    nn.Hardswish: ("hardswish", lambda y: F.hardswish(y, inplace=True)),
}


def onednn_applies(x: torch.Tensor) -> bool:
    """Whether folded convs on ``x`` run oneDNN directly (prepacked weights, fused epilogues):
    fp32 channels_last CPU tensors outside autograd and outside ``torch.compile``."""
    return (
        _MKLDNN
        and not torch.compiler.is_compiling()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and is_channels_last(x)
        and not (torch.is_grad_enabled() and x.requires_grad)
    )


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is a 4-D tensor laid out channels_last (and not also plain contiguous)."""
    return memory_format_of(x) == torch.channels_last


class FoldedConv:
    """``conv`` with its following BN folded in and an optional activation epilogue.

    Calling it on ``[B, C_in, H, W]`` gives ``[B, C_out, H', W']``. For fp32 channels_last CPU
    inputs without autograd it runs oneDNN directly: the weight is reordered (prepacked) once
    and the activation, or a residual add and ReLU (:meth:`add`), are fused into the conv.
    Otherwise, or when ``options.exact`` asks for NaN-preserving epilogues, ``F.conv2d`` runs,
    followed by the in-place activation. Every call is reported to the call's MAC counter
    (``options.counter``, ``afnet.engine.counters``).
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

    def without_padding(self) -> "FoldedConv":
        """The same conv (shared folded weights) with no padding: VALID inside spatial tiles,
        whose halo holds the pixels the padding would have supplied."""
        valid = copy.copy(self)
        valid.padding = [0] * len(self.padding)
        valid._packed = None  # oneDNN prepacks for a given padding
        return valid

    def _onednn(self, x: torch.Tensor) -> bool:
        return onednn_applies(x) and self.weight.dtype == torch.float32

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        if self._packed is None:
            self._packed = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, self.padding, self.stride, self.dilation, self.groups, list(x.shape)
            )
        return self._packed

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def __call__(self, x: torch.Tensor, options: StepOptions = PLAIN) -> torch.Tensor:
        if self._onednn(x) and not (options.exact and self.activation is not None):
            attr = _ACTIVATIONS[self.activation][0] if self.activation is not None else "none"
            y = torch.ops.mkldnn._convolution_pointwise(
                x, self._packed_weight(x), self.bias, self.padding, self.stride, self.dilation, self.groups,
                attr, [], "",
            )
        else:
            y = self._conv(x)
            if self.activation is not None:
                y = _ACTIVATIONS[self.activation][1](y)
        if options.counter is not None:
            options.counter.record(self.weight, self.groups, y)
        return y

    def add(
        self, x: torch.Tensor, other: torch.Tensor, relu: bool, options: StepOptions = PLAIN, *, into: bool = False
    ) -> torch.Tensor:
        """``conv(x) + other``, then ReLU if ``relu``; one fused pass on oneDNN.

        ``other`` has the output's shape. With ``into``, the caller gives ``other`` away (a residual
        nobody reads afterwards): on oneDNN the result is written into it (the binary post-op in
        place), so no new output is allocated; otherwise ``other`` is not modified. Only for convs
        without activation.
        """
        if self.activation is not None:
            raise ValueError("FoldedConv.add needs a conv without activation")
        fused_relu_ok = not (options.exact and relu)
        if self._onednn(x) and is_channels_last(other) and other.dtype == x.dtype and fused_relu_ok:
            fused = torch.ops.mkldnn._convolution_pointwise_.binary if into else torch.ops.mkldnn._convolution_pointwise.binary
            first, second = (other, x) if into else (x, other)
            y = fused(
                first, second, self._packed_weight(x), self.bias, self.padding, self.stride, self.dilation,
                self.groups, "add", 1.0, "relu" if relu else None, [], "",
            )
        else:
            y = self._conv(x).add_(other)
            if relu:
                y = y.relu_()
        if options.counter is not None:
            options.counter.record(self.weight, self.groups, y)
        return y


class ModuleStep:
    """A module kept as it is in a plan (pools, squeeze-excitation, activations)."""

    __slots__ = ("module",)

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, x: torch.Tensor, options: StepOptions = PLAIN) -> torch.Tensor:
        return self.module(x)


Step = Callable[[torch.Tensor, StepOptions], torch.Tensor]


def fold_sequence(
    modules: Sequence[nn.Module], memory_format: torch.memory_format = torch.contiguous_format
) -> List[Step]:
    """Inference steps equal to applying ``modules`` in order (eval mode).

    Each ``Conv2d`` absorbs a directly following ``BatchNorm2d`` and then a following ``ReLU``
    or ``Hardswish`` (fused on oneDNN, else applied in place on the fresh conv output). Other
    modules (pooling, other activations) are kept as they are. Returns callables
    ``(x, options) -> y``.
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
            steps.append(ModuleStep(m))
            i += 1
    return steps


def run_steps(steps: Sequence[Step], x: torch.Tensor, options: StepOptions = PLAIN) -> torch.Tensor:
    """Apply ``steps`` (from :func:`fold_sequence`) in order."""
    for step in steps:
        x = step(x, options)
    return x


