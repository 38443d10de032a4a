"""Baselines that AFNet is timed against: torchvision's ResNet-50 and MobileNetV3-Large as TSN and TSM.

Each takes a clip batch ``[N, T, 3, H, W]``, runs the 2-D network on the ``N*T`` frames
(frame-major, row ``n*T + t``) and averages the per-frame logits over T (TSN's "avg
consensus"), giving ``[N, num_classes]``. ResNet-50 is AF-ResNet50's reference, MobileNetV3
AF-MobileNetV3's.

TSM puts the temporal shift in every residual block's branch: the input of the block's first
conv (a bottleneck's ``conv1``, an inverted residual's expansion or depthwise conv) is
shifted, the shortcut takes the unshifted input (the "residual shift" of the TSM paper, as
AFNet-TSM uses it). MobileNetV3 blocks without a shortcut get the shift too: AF-MobileNetV3
shifts the input of every block, and the baseline does the same work.

:class:`PlannedBaseline` runs either network on afnet's inference engine (``afnet.engine``):
BN folded into every convolution, prepacked oneDNN weights, ReLU/h-swish and the residual add
fused into the convolutions, the TSM shift fused into one gather. That is exactly the
treatment the AF models get, so that the benchmark compares AFNet with TSN at its best, not
with an unfused TSN.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.mobilenetv3 import InvertedResidual
from torchvision.models.resnet import Bottleneck

from afnet.engine.context import ExecutionContext
from afnet.engine.counters import active_counter
from afnet.engine.executor import run_plan
from afnet.engine.plan import InferencePlan, build_plan
from afnet.models.description import Block, GlobalPool, Layers, Part
from afnet.ops import BACKENDS, get_ops, shift_frames

BASELINES = ("tsn_resnet50", "tsm_resnet50", "tsn_mobilenetv3", "tsm_mobilenetv3")
MEMORY_FORMATS = (torch.contiguous_format, torch.channels_last)


class ShiftedConv(nn.Module):
    """``conv(temporal_shift(x))`` for ``x`` ``[N*T, C, H, W]``.

    ``shift_div`` sets the shifted fold ``C // shift_div`` per direction.
    """

    def __init__(self, conv: nn.Conv2d, num_segments: int, shift_div: int = 8) -> None:
        super().__init__()
        self.conv = conv
        self.num_segments = num_segments
        self.shift_div = shift_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The compiled shift-gather: one pass, where the pure-PyTorch shift makes several full
        # copies, work AFNet-TSM does not do either.
        return self.conv(shift_frames(x, self.num_segments, self.shift_div))


def _first_conv(block: nn.Module) -> Tuple[nn.Module, str]:
    """The module holding the first conv of a residual block's branch, and its attribute name."""
    if isinstance(block, Bottleneck):
        return block, "conv1"
    return block.block[0], "0"  # InvertedResidual: the first Conv2dNormActivation's conv


def add_temporal_shift_(backbone: nn.Module, num_segments: int, shift_div: int = 8) -> nn.Module:
    """Shift the input of the first conv of every residual block (ResNet bottleneck, MobileNetV3
    inverted residual) of the torchvision ``backbone``, in place; shortcuts stay unshifted."""
    for block in backbone.modules():
        if isinstance(block, (Bottleneck, InvertedResidual)):
            owner, name = _first_conv(block)
            conv = getattr(owner, name)
            if not isinstance(conv, ShiftedConv):
                setattr(owner, name, ShiftedConv(conv, num_segments, shift_div))
    return backbone


class BlockAdapter:
    """A torchvision residual block as the engine sees one.

    The engine's plan (``afnet.engine.plan.build_plan``) reads these attributes of an afnet
    ``ResidualBlock``: the branch modules in order (conv, BN, activation, squeeze-excitation,
    ...), the shortcut modules (None: identity), whether the block adds a shortcut at all and
    applies a ReLU after the add, and the TSM shift of the branch input (``shift_div`` 0: none;
    a :class:`ShiftedConv` first conv gives its fold). BN must not be folded yet: the plan folds
    it itself and fuses the activation behind it.
    """

    fill_zero_response = True  # read for focal blocks only; a baseline has none

    def __init__(self, block: nn.Module, num_segments: int) -> None:
        if not any(isinstance(m, nn.BatchNorm2d) for m in block.modules()):
            raise ValueError(
                f"BlockAdapter needs the {type(block).__name__}'s BatchNorms (the plan folds them itself); "
                "this block's BN was already folded by fold_batchnorm_"
            )
        self.block = block
        self.num_segments = num_segments
        owner, name = _first_conv(block)
        first = getattr(owner, name)
        self.shift_div = first.shift_div if isinstance(first, ShiftedConv) else 0
        self._first = first.conv if isinstance(first, ShiftedConv) else first
        if isinstance(block, Bottleneck):
            self.has_residual, self.last_relu = True, True
        else:  # MobileNetV3: no activation after the add, and a shortcut only where shapes allow
            self.has_residual, self.last_relu = block.use_res_connect, False

    def branch_modules(self) -> List[nn.Module]:
        b = self.block
        if isinstance(b, Bottleneck):
            return [self._first, b.bn1, b.relu, b.conv2, b.bn2, b.relu, b.conv3, b.bn3]
        modules: List[nn.Module] = []
        for layer in b.block:  # Conv2dNormActivation (conv, BN[, act]) or SqueezeExcitation
            modules += list(layer) if isinstance(layer, nn.Sequential) else [layer]
        modules[0] = self._first
        return modules

    def shortcut_modules(self) -> Optional[List[nn.Module]]:
        downsample = getattr(self.block, "downsample", None)
        return list(downsample) if downsample is not None else None


class VideoBaseline(nn.Module):
    """A torchvision 2-D network applied per frame, logits averaged over T.

    ``video`` ``[N, T, 3, H, W]`` -> logits ``[N, num_classes]``. With ``shift`` it is the TSM
    form (shift in every residual block's branch), without it TSN. Random initialisation:
    weights cannot be downloaded here and do not change the time. Subclasses say how the
    engine sees the network (:meth:`describe`, :meth:`head`).
    """

    def __init__(self, base: nn.Module, num_segments: int, *, shift: bool, shift_div: int) -> None:
        super().__init__()
        if num_segments < 1:
            raise ValueError(f"num_segments must be >= 1, got {num_segments}")
        self.num_segments = num_segments
        self.shift = shift
        self.base = base
        if shift:
            add_temporal_shift_(self.base, num_segments, shift_div)

    def check_video(self, video: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``video`` is ``[N, T, 3, H, W]`` with this model's T."""
        if video.dim() != 5 or video.shape[1] != self.num_segments or video.shape[2] != 3:
            raise ValueError(
                f"video must be [N, {self.num_segments}, 3, H, W], got {list(video.shape)}"
            )

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        self.check_video(video)
        n, t = video.shape[:2]
        logits = self.base(video.flatten(0, 1))
        return logits.view(n, t, -1).mean(dim=1)

    def residual_blocks(self) -> List[nn.Module]:
        """The torchvision residual blocks, in forward order."""
        return [m for m in self.base.modules() if isinstance(m, (Bottleneck, InvertedResidual))]

    def describe(self) -> List[Part]:
        """The backbone as an engine description: ``[N*T, 3, H, W] -> [N*T, C]`` features."""
        raise NotImplementedError

    def head(self) -> nn.Module:
        """The classifier on the pooled features ``[N*T, C]``."""
        raise NotImplementedError


class VideoResNet50(VideoBaseline):
    """torchvision ResNet-50 per frame: TSN-ResNet50, or TSM-ResNet50 with ``shift``."""

    def __init__(self, num_classes: int, num_segments: int, *, shift: bool = False, shift_div: int = 8) -> None:
        base = torchvision.models.resnet50(weights=None, num_classes=num_classes)
        super().__init__(base, num_segments, shift=shift, shift_div=shift_div)

    def describe(self) -> List[Part]:
        """Stem, the 16 bottlenecks, the global pool."""
        b = self.base
        blocks = [BlockAdapter(m, self.num_segments) for m in self.residual_blocks()]
        return [Layers((b.conv1, b.bn1, b.relu, b.maxpool)), *(Block(m) for m in blocks), GlobalPool()]

    def head(self) -> nn.Module:
        return self.base.fc


class VideoMobileNetV3(VideoBaseline):
    """torchvision MobileNetV3-Large per frame: TSN-MobileNetV3, or TSM-MobileNetV3 with ``shift``."""

    def __init__(self, num_classes: int, num_segments: int, *, shift: bool = False, shift_div: int = 8) -> None:
        base = torchvision.models.mobilenet_v3_large(weights=None, num_classes=num_classes)
        super().__init__(base, num_segments, shift=shift, shift_div=shift_div)

    def describe(self) -> List[Part]:
        """Stem conv, the 15 inverted residuals, the last 1x1 conv, the global pool."""
        features = self.base.features
        blocks = [BlockAdapter(m, self.num_segments) for m in self.residual_blocks()]
        return [Layers(tuple(features[0])), *(Block(m) for m in blocks), Layers(tuple(features[-1])), GlobalPool()]

    def head(self) -> nn.Module:
        return self.base.classifier


_ARCHS = {
    "tsn_resnet50": (VideoResNet50, False), "tsm_resnet50": (VideoResNet50, True),
    "tsn_mobilenetv3": (VideoMobileNetV3, False), "tsm_mobilenetv3": (VideoMobileNetV3, True),
}


def create_baseline(name: str, *, num_classes: int, num_segments: int) -> VideoBaseline:
    """One of :data:`BASELINES`: ``tsn_``/``tsm_`` + ``resnet50``/``mobilenetv3``."""
    if name not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {name!r}")
    model_class, shift = _ARCHS[name]
    return model_class(num_classes, num_segments, shift=shift)


class PlannedBaseline(nn.Module):
    """A :class:`VideoBaseline` (TSN or TSM) run by afnet's inference engine, for inference only.

    ``video`` ``[N, T, 3, H, W]`` -> logits ``[N, num_classes]``, equal to ``model(video)`` in
    eval up to the summation order of the folded convolutions. The frames run in
    ``memory_format`` (set it between calls to try both layouts). One plan is made per layout,
    dtype and device at its first call: a snapshot of ``model``'s weights at that time, as the AF
    models' frozen form is. ``backend`` selects the frame ops of the TSM shift (``"kernels"`` or
    ``"torch"``). The BN of ``model`` must not be folded.
    """

    def __init__(
        self, model: VideoBaseline, backend: str = "kernels",
        memory_format: torch.memory_format = torch.channels_last,
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory_format must be one of {MEMORY_FORMATS}, got {memory_format!r}")
        self.video_model = model
        self.backend = backend
        self.memory_format = memory_format
        self._parts = model.describe()  # validates every block now (BN not folded), not at the first forward
        self._plans: Dict[tuple, InferencePlan] = {}

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("PlannedBaseline runs inference only (BN running statistics): call .eval()")
        self.video_model.check_video(video)
        n, t = video.shape[:2]
        x = video.flatten(0, 1).contiguous(memory_format=self.memory_format)
        ctx = ExecutionContext(get_ops(self.backend), counter=active_counter())
        weight = next(self.video_model.parameters())  # a plan per layout, dtype and device
        key = (self.memory_format, weight.dtype, weight.device)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = build_plan(self._parts, self.memory_format)
        features, _ = run_plan(plan, x, ctx)
        logits = self.video_model.head()(features)
        return logits.view(n, t, -1).mean(dim=1)


def _fuse_pair(owner: nn.Module, conv_name: str, bn_name: str) -> None:
    conv = getattr(owner, conv_name)
    inner = conv.conv if isinstance(conv, ShiftedConv) else conv
    fused = fuse_conv_bn_eval(inner, getattr(owner, bn_name))
    if isinstance(conv, ShiftedConv):
        conv.conv = fused
    else:
        setattr(owner, conv_name, fused)
    setattr(owner, bn_name, nn.Identity())


def _conv_bn_pairs(owner: nn.Module) -> List[Tuple[str, str]]:
    """The (conv, BN) attribute pairs of ``owner`` where the BN directly follows the conv: the
    ResNet stem and bottlenecks name them, ``nn.Sequential`` (a shortcut, MobileNetV3's
    ``Conv2dNormActivation``) lists them in order."""
    if isinstance(owner, torchvision.models.ResNet):
        return [("conv1", "bn1")]
    if isinstance(owner, Bottleneck):
        return [(f"conv{i}", f"bn{i}") for i in (1, 2, 3)]
    if isinstance(owner, nn.Sequential):
        mods = owner._modules
        names = list(mods)
        return [(a, b) for a, b in zip(names, names[1:])
                if isinstance(mods[a], (nn.Conv2d, ShiftedConv)) and isinstance(mods[b], nn.BatchNorm2d)]
    return []


def fold_batchnorm_(model: VideoBaseline) -> VideoBaseline:
    """Fold every BatchNorm into the conv before it, in place (eval models only).

    The same inference-time treatment the AF models get, so that the baseline
    is not slowed by work AFNet skips. Returns ``model``.
    """
    if model.training:
        raise ValueError("fold_batchnorm_ needs a model in eval mode (BN statistics are frozen into the convs)")
    pairs = [(owner, conv, bn) for owner in model.base.modules() for conv, bn in _conv_bn_pairs(owner)]
    for owner, conv, bn in pairs:  # collected first: folding replaces modules
        _fuse_pair(owner, conv, bn)
    return model


def count_gflops(model: VideoBaseline, video: torch.Tensor) -> float:
    """GFLOPs per video of a baseline on ``video`` ``[N, T, 3, H, W]``, in the paper's convention.

    Multiply-accumulates of convs (``c_in*c_out*h_out*w_out*k²/groups``) and
    linears (``in*out``), plus ``9*`` the output elements of the ResNet stem's max-pool;
    BN, activations (ReLU, h-swish, h-sigmoid), shift and the other pools count zero.
    MobileNetV3's squeeze-excitation FCs (1x1 convs on the pooled vector) count ``in*out``
    per frame, as linears: the convention in which ``afnet.count_flops`` counts
    AF-MobileNetV3 (its SE FCs are ``nn.Linear``). Runs one forward pass.
    """
    total = 0

    def conv_hook(m: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    def pool_hook(m: nn.MaxPool2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * 9

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, nn.MaxPool2d):
            hooks.append(m.register_forward_hook(pool_hook))
    try:
        with torch.inference_mode():
            model(video)
    finally:
        for h in hooks:
            h.remove()
    return total / video.shape[0] / 1e9
