"""The video model as a description: TSN over an AF backbone, ``[N, T, 3, H, W]`` -> logits.

Key names follow the released video checkpoints: the backbone is ``base_model`` and the ResNet
classifier ``new_fc`` (after dropout). Backbones with a classifier of their own (AF-MobileNetV3)
have no ``new_fc``.

:class:`TSN` computes the released, masked, differentiable form (every frame computed, unselected
ones on zeros): what training uses. The model :func:`afnet.create_model` returns is its subclass
``afnet.engine.LiveTSN``, whose eval forward runs the inference engine on the selected frames;
``afnet.freeze`` makes the explicit inference form.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

import afnet_kernels.reference as reference_ops
from afnet.layers import FixedPolicy, Navigation, SpatialNavigation, SpatialPolicy
from afnet.models.decisions import Decisions

__all__ = ["Gates", "TSN", "VideoOutput"]


class Gates(NamedTuple):
    """The gates of a backbone in forward order: temporal (navigation modules or fixed
    policies) and spatial ones."""

    temporal: List[nn.Module]
    spatial: List[nn.Module]


class VideoOutput(NamedTuple):
    """What one forward computed: ``logits`` ``[N, classes]``, the frame masks (bool ``[N, T]``
    per navigation module) and the cell masks (bool ``[N, T, Gh, Gw]`` per spatial gate)."""

    logits: torch.Tensor
    masks: List[torch.Tensor]
    cell_masks: List[torch.Tensor]

    def returned(self, return_masks: bool) -> Union[torch.Tensor, Tuple[Any, ...]]:
        """``logits``, or ``(logits, masks)``, or ``(logits, masks, cell_masks)`` for a spatial
        model (every focal block of a spatial model has a spatial gate, so it has cell masks)."""
        if not return_masks:
            return self.logits
        if not self.cell_masks:
            return self.logits, self.masks
        return self.logits, self.masks, self.cell_masks


def find_gates(backbone: nn.Module) -> Gates:
    """The gates of ``backbone`` in forward order: one walk of the module tree."""
    temporal, spatial = [], []
    for m in backbone.modules():
        if isinstance(m, (Navigation, FixedPolicy)):
            temporal.append(m)
        elif isinstance(m, (SpatialNavigation, SpatialPolicy)):
            spatial.append(m)
    return Gates(temporal, spatial)


def check_video(video: Any, num_segments: int, dtype: torch.dtype, device: torch.device) -> None:
    """Raise ``TypeError``/``ValueError`` naming what is wrong with ``video`` for a model of
    ``num_segments`` frames, ``dtype`` and ``device`` (expected ``[N, T, 3, H, W]``)."""
    if not isinstance(video, torch.Tensor):
        raise TypeError(f"video must be a torch.Tensor, got {type(video).__name__}")
    if video.dim() != 5:
        raise ValueError(f"video must be 5-D [N, T, 3, H, W] with T={num_segments}, got shape {tuple(video.shape)}")
    n, t, c, h, w = video.shape
    if t != num_segments:
        raise ValueError(f"video has T={t} frames (dim 1) but the model has num_segments={num_segments}")
    if c != 3:
        raise ValueError(f"video must have 3 channels (dim 2), got {c}")
    if not video.is_floating_point():
        raise ValueError(f"video must be a floating-point tensor, got {video.dtype}")
    if n == 0 or h == 0 or w == 0:
        raise ValueError(f"video must be non-empty, got shape {tuple(video.shape)}")
    if video.dtype != dtype:
        raise ValueError(
            f"video dtype {video.dtype} does not match the model's dtype {dtype}: convert one "
            f"of them (video.to({dtype}) or model.to({video.dtype}))"
        )
    if video.device != device:
        raise ValueError(f"video is on {video.device} but the model is on {device}")


def masks_out(gates: Sequence[torch.Tensor], cells: Sequence[torch.Tensor], n: int, t: int) -> Tuple[list, list]:
    """The bool masks a forward returns: ``[N, T]`` per gate, ``[N, T, Gh, Gw]`` per spatial gate."""
    return [g.detach() > 0.5 for g in gates], [c.detach().reshape(n, t, *c.shape[1:]) > 0.5 for c in cells]


class TSN(nn.Module):
    """Temporal Segment Network over an AF backbone, in its dense (released) form.

    Args:
        base_model: maps ``([N*T, 3, H, W], Decisions)`` to ``(out [N*T, F], masks)``.
        num_segments: T.
        num_classes: classes of ``new_fc``; None when ``base_model`` ends in its own classifier.
        feature_dim: F, the input width of ``new_fc``.
        dropout: before ``new_fc``.
        arch: the registered architecture name.
    """

    def __init__(
        self,
        base_model: nn.Module,
        *,
        num_segments: int,
        num_classes: Optional[int],
        feature_dim: Optional[int] = None,
        dropout: float = 0.5,
        arch: str = "",
    ) -> None:
        super().__init__()
        self.base_model = base_model
        self.num_segments = num_segments
        self.arch = arch
        self.dropout = nn.Dropout(dropout)
        if num_classes is not None:
            self.new_fc = nn.Linear(feature_dim, num_classes)
            nn.init.normal_(self.new_fc.weight, 0.0, 0.001)
            nn.init.zeros_(self.new_fc.bias)
        else:
            self.new_fc = None
        #: every ``create_model`` argument, defaults filled in (set by the registry).
        self.config: Dict[str, Any] = {}

    def gates(self) -> Gates:
        """The temporal and spatial gates in forward order (one walk of the backbone)."""
        return find_gates(self.base_model)

    @property
    def navigation_modules(self) -> List[nn.Module]:
        """The temporal gates (navigation modules or fixed policies) in forward order."""
        return self.gates().temporal

    def gate_names(self) -> List[str]:
        """The qualified names of the temporal gates in forward order: the masks' order."""
        names = {id(m): name for name, m in self.named_modules()}
        return [names[id(gate)] for gate in self.navigation_modules]

    @property
    def is_spatial(self) -> bool:
        """Whether the focal blocks also have spatial gates (``create_model(..., spatial=True)``)."""
        return bool(self.gates().spatial)

    def check_video(self, video: torch.Tensor) -> None:
        """Raise ``ValueError`` naming what is wrong with ``video`` (expected ``[N, T, 3, H, W]``)."""
        weight = next(self.parameters())
        check_video(video, self.num_segments, weight.dtype, weight.device)

    def classify(self, features: torch.Tensor, n: int, t: int) -> torch.Tensor:
        """Per-frame features ``[N*T, F]`` -> logits ``[N, classes]``: the classifier (after
        dropout), then the mean over T (TSN's "avg consensus")."""
        if self.new_fc is not None:
            features = self.new_fc(self.dropout(features))
        return features.reshape(n, t, -1).mean(dim=1)

    def run_dense(
        self,
        video: torch.Tensor,
        ops: ModuleType = reference_ops,
        masks: Optional[Sequence[torch.Tensor]] = None,
        spatial_masks: Optional[Sequence[torch.Tensor]] = None,
        frame_budget: Optional[Sequence[int]] = None,
        cell_budget: Optional[float] = None,
    ) -> VideoOutput:
        """The released computation on ``video`` ``[N, T, 3, H, W]`` with the frame ops ``ops``;
        ``frame_budget`` (frames per navigation module) and ``cell_budget`` apply in any mode."""
        self.check_video(video)
        n, t = video.shape[:2]
        decisions = Decisions(ops, masks, frame_budget, spatial_masks, cell_budget)
        features, gates = self.base_model(video.reshape((n * t,) + tuple(video.shape[2:])), decisions)
        decisions.check_all_gates_used()
        return VideoOutput(self.classify(features, n, t), *masks_out(gates, decisions.cell_masks, n, t))

    def forward(
        self,
        video: torch.Tensor,
        return_masks: bool = False,
        masks: Optional[Sequence[torch.Tensor]] = None,
        spatial_masks: Optional[Sequence[torch.Tensor]] = None,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """Logits ``[N, num_classes]`` for ``video`` ``[N, T, 3, H, W]``.

        Args:
            return_masks: also return the masks, bool ``[N, T]`` per navigation module in
                forward order; a spatial model also returns its spatial masks, bool
                ``[N, T, Gh, Gw]`` per focal block: ``(logits, masks, spatial_masks)``.
            masks: override every navigation decision with these ``[N, T]`` masks (in forward
                order); for tests and benchmarks at exact ratios.
            spatial_masks: override every spatial decision with these ``[N, T, Gh, Gw]`` masks.
        """
        out = self.run_dense(video, masks=masks, spatial_masks=spatial_masks)
        return out.returned(return_masks)
