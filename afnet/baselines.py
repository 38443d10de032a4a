"""Baselines that AFNet is timed against: torchvision's ResNet-50 as TSN and as TSM.

Both take a clip batch ``[N, T, 3, H, W]``, run the 2-D network on the ``N*T``
frames (frame-major, row ``n*T + t``) and average the per-frame logits over T
(TSN's "avg consensus"), giving ``[N, num_classes]``.

TSM puts the temporal shift in every bottleneck's residual branch: the input of
``conv1`` is shifted, the shortcut takes the unshifted input (the "residual
shift" of the TSM paper, as AFNet-TSM uses it).
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.resnet import Bottleneck

from afnet.backend import shift_frames

BASELINES = ("tsn_resnet50", "tsm_resnet50")


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

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if video.dim() != 5 or video.shape[1] != self.num_segments or video.shape[2] != 3:
            raise ValueError(
                f"video must be [N, {self.num_segments}, 3, H, W], got {list(video.shape)}"
            )
        n, t = video.shape[:2]
        logits = self.base(video.flatten(0, 1))
        return logits.view(n, t, -1).mean(dim=1)


def create_baseline(name: str, *, num_classes: int, num_segments: int) -> VideoResNet50:
    """``"tsn_resnet50"`` or ``"tsm_resnet50"``."""
    if name not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {name!r}")
    return VideoResNet50(num_classes, num_segments, shift=name == "tsm_resnet50")


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
