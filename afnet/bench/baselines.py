"""Baselines that AFNet is timed against: torchvision's ResNet-50 as TSN and as TSM.

Both take a clip batch ``[N, T, 3, H, W]``, run the 2-D network on the ``N*T``
frames (frame-major, row ``n*T + t``) and average the per-frame logits over T
(TSN's "avg consensus"), giving ``[N, num_classes]``.

TSM puts the temporal shift in every bottleneck's residual branch: the input of
``conv1`` is shifted, the shortcut takes the unshifted input (the "residual
shift" of the TSM paper, as AFNet-TSM uses it).

:class:`PlannedVideoResNet50` runs the same network on afnet's inference engine
(``afnet.engine``): BN folded into every convolution, prepacked oneDNN weights,
ReLU and the residual add fused into the convolutions, the TSM shift fused into
one gather. That is exactly the treatment the AF models get, so that the
benchmark compares AFNet with TSN at its best, not with an unfused TSN.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.resnet import Bottleneck

from afnet.engine.context import ExecutionContext
from afnet.engine.counters import active_counter
from afnet.engine.executor import run_plan
from afnet.engine.plan import InferencePlan, build_plan
from afnet.models.description import Block, GlobalPool, Layers, Part
from afnet.ops import BACKENDS, get_ops, shift_frames

BASELINES = ("tsn_resnet50", "tsm_resnet50")
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


def add_temporal_shift_(resnet: nn.Module, num_segments: int, shift_div: int = 8) -> nn.Module:
    """Shift the input of ``conv1`` in every bottleneck of ``resnet``, in place; the shortcut stays unshifted."""
    for block in resnet.modules():
        if isinstance(block, Bottleneck) and not isinstance(block.conv1, ShiftedConv):
            block.conv1 = ShiftedConv(block.conv1, num_segments, shift_div)
    return resnet


class VideoResNet50(nn.Module):
    """torchvision ResNet-50 applied per frame, logits averaged over T.

    ``video`` ``[N, T, 3, H, W]`` -> logits ``[N, num_classes]``. With ``shift``
    it is TSM-ResNet-50 (shift in every bottleneck's residual branch), without
    it TSN-ResNet-50. Random initialisation: weights cannot be downloaded here
    and do not change the time.
    """

    def __init__(self, num_classes: int, num_segments: int, *, shift: bool = False, shift_div: int = 8) -> None:
        super().__init__()
        if num_segments < 1:
            raise ValueError(f"num_segments must be >= 1, got {num_segments}")
        self.num_segments = num_segments
        self.shift = shift
        self.base = torchvision.models.resnet50(weights=None, num_classes=num_classes)
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


def create_baseline(name: str, *, num_classes: int, num_segments: int) -> VideoResNet50:
    """``"tsn_resnet50"`` or ``"tsm_resnet50"``."""
    if name not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {name!r}")
    return VideoResNet50(num_classes, num_segments, shift=name == "tsm_resnet50")


class BottleneckAdapter:
    """A torchvision ``Bottleneck`` as the engine sees a residual block.

    The engine's plan (``afnet.engine.plan.build_plan``) reads these attributes of an afnet
    ``ResidualBlock``: the branch ``conv1 → bn1 → ReLU → conv2 → bn2 → ReLU → conv3 → bn3``, the
    shortcut ``downsample`` (None: identity), the ReLU after the add, and the TSM shift of the
    branch input (``shift_div`` 0: none; a :class:`ShiftedConv` ``conv1`` gives its fold).
    BN must not be folded yet: the plan folds it itself and fuses the ReLU behind it.
    """

    has_residual = True
    last_relu = True
    fill_zero_response = True  # read for focal blocks only; a baseline has none

    def __init__(self, block: Bottleneck, num_segments: int) -> None:
        if not all(isinstance(getattr(block, f"bn{i}"), nn.BatchNorm2d) for i in (1, 2, 3)):
            raise ValueError(
                "BottleneckAdapter needs the block's BatchNorms (the plan folds them itself); "
                "this block's BN was already folded by fold_batchnorm_"
            )
        self.block = block
        self.num_segments = num_segments
        shifted = isinstance(block.conv1, ShiftedConv)
        self.shift_div = block.conv1.shift_div if shifted else 0
        self._conv1 = block.conv1.conv if shifted else block.conv1

    def branch_modules(self) -> List[nn.Module]:
        b = self.block
        return [self._conv1, b.bn1, b.relu, b.conv2, b.bn2, b.relu, b.conv3, b.bn3]

    def shortcut_modules(self) -> Optional[List[nn.Module]]:
        return list(self.block.downsample) if self.block.downsample is not None else None


class PlannedVideoResNet50(nn.Module):
    """A :class:`VideoResNet50` (TSN or TSM) run by afnet's inference engine, for inference only.

    ``video`` ``[N, T, 3, H, W]`` -> logits ``[N, num_classes]``, equal to ``model(video)`` in
    eval up to the summation order of the folded convolutions. The frames run in
    ``memory_format`` (set it between calls to try both layouts). One plan is made per layout,
    dtype and device at its first call: a snapshot of ``model``'s weights at that time, as the AF
    models' frozen form is. ``backend`` selects the frame ops of the TSM shift (``"kernels"`` or ``"torch"``). The
    BN of ``model`` must not be folded.
    """

    def __init__(
        self, model: VideoResNet50, backend: str = "kernels",
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
        base = model.base
        # Validates every block now (BN not folded), not at the first forward.
        self._blocks = [
            BottleneckAdapter(b, model.num_segments)
            for layer in (base.layer1, base.layer2, base.layer3, base.layer4) for b in layer
        ]
        self._plans: Dict[tuple, InferencePlan] = {}

    def describe(self) -> List[Part]:
        """Stem, the 16 bottlenecks, the global pool: ``[N*T, 3, H, W] -> [N*T, 2048]``."""
        base = self.video_model.base
        return [Layers((base.conv1, base.bn1, base.relu, base.maxpool)),
                *(Block(b) for b in self._blocks), GlobalPool()]

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("PlannedVideoResNet50 runs inference only (BN running statistics): call .eval()")
        self.video_model.check_video(video)
        n, t = video.shape[:2]
        x = video.flatten(0, 1).contiguous(memory_format=self.memory_format)
        ctx = ExecutionContext(get_ops(self.backend), counter=active_counter())
        weight = self.video_model.base.conv1.weight  # a plan per layout, dtype and device
        key = (self.memory_format, weight.dtype, weight.device)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = build_plan(self.describe(), self.memory_format)
        features, _ = run_plan(plan, x, ctx)
        logits = self.video_model.base.fc(features)
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


def fold_batchnorm_(model: VideoResNet50) -> VideoResNet50:
    """Fold every BatchNorm into the conv before it, in place (eval models only).

    The same inference-time treatment the AF models get, so that the baseline
    is not slowed by work AFNet skips. Returns ``model``.
    """
    if model.training:
        raise ValueError("fold_batchnorm_ needs a model in eval mode (BN statistics are frozen into the convs)")
    base = model.base
    _fuse_pair(base, "conv1", "bn1")
    for block in base.modules():
        if isinstance(block, Bottleneck):
            for i in (1, 2, 3):
                _fuse_pair(block, f"conv{i}", f"bn{i}")
            if block.downsample is not None:
                _fuse_pair(block.downsample, "0", "1")
    return model


def count_gflops(model: VideoResNet50, video: torch.Tensor) -> float:
    """GFLOPs per video of a baseline on ``video`` ``[N, T, 3, H, W]``, in the paper's convention.

    Multiply-accumulates of convs (``c_in*c_out*h_out*w_out*k²/groups``) and
    linears (``in*out``), plus ``9*`` the output elements of the stem max-pool;
    BN, ReLU, shift and pooling elsewhere count zero. Runs one forward pass.
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
