"""TSN wrapper: a video ``[N, T, 3, H, W]`` -> per-frame logits averaged over T.

Key names follow the released video checkpoints: the backbone is ``base_model`` and the
ResNet classifier ``new_fc`` (after dropout). Backbones with a classifier of their own
(AF-MobileNetV3) have no ``new_fc``.

Runtime switches:
- ``execution``: ``"sparse"`` (default) runs the inference path in eval: BN folded, only the
  selected frames computed by the focal blocks; ``"dense"`` is the released masked form.
  Training always runs the dense form (it is the differentiable one). The sparse path does
  not build an autograd graph.
- ``backend``: ``"kernels"`` (compiled ``afnet_kernels``) or ``"torch"`` (pure PyTorch).
- ``memory_format``: layout the sparse path runs in (default channels_last, faster with
  oneDNN and cuDNN); None keeps the input's layout.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

import afnet_kernels.reference as reference_ops
from afnet.backend import BACKENDS, get_ops
from afnet.sparse import ExecutionContext

EXECUTIONS = ("dense", "sparse")


class TSN(nn.Module):
    """Temporal Segment Network over an AF backbone.

    Args:
        base_model: maps ``([N*T, 3, H, W], ExecutionContext)`` to ``(out [N*T, F], masks)``.
        num_segments: T.
        num_classes: classes of ``new_fc``; None when ``base_model`` ends in its own classifier.
        dropout: before ``new_fc``.
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
        self._execution = "sparse"
        self._backend = "kernels"
        self.memory_format: Optional[torch.memory_format] = torch.channels_last

    @property
    def execution(self) -> str:
        return self._execution

    @execution.setter
    def execution(self, value: str) -> None:
        if value not in EXECUTIONS:
            raise ValueError(f"execution must be one of {EXECUTIONS}, got {value!r}")
        self._execution = value

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {value!r}")
        self._backend = value

    @property
    def runs_sparse(self) -> bool:
        """Whether the next forward takes the sparse inference path."""
        return self._execution == "sparse" and not self.training

    def check_video(self, video: torch.Tensor) -> None:
        """Raise ``ValueError`` naming what is wrong with ``video`` (expected ``[N, T, 3, H, W]``)."""
        if not isinstance(video, torch.Tensor):
            raise TypeError(f"video must be a torch.Tensor, got {type(video).__name__}")
        if video.dim() != 5:
            raise ValueError(
                f"video must be 5-D [N, T, 3, H, W] with T={self.num_segments}, got shape {tuple(video.shape)}"
            )
        n, t, c, h, w = video.shape
        if t != self.num_segments:
            raise ValueError(f"video has T={t} frames (dim 1) but the model has num_segments={self.num_segments}")
        if c != 3:
            raise ValueError(f"video must have 3 channels (dim 2), got {c}")
        if not video.is_floating_point():
            raise ValueError(f"video must be a floating-point tensor, got {video.dtype}")
        if n == 0 or h == 0 or w == 0:
            raise ValueError(f"video must be non-empty, got shape {tuple(video.shape)}")

    def forward(
        self,
        video: torch.Tensor,
        return_masks: bool = False,
        masks: Optional[Sequence[torch.Tensor]] = None,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Logits ``[N, num_classes]`` for ``video`` ``[N, T, 3, H, W]``.

        Args:
            return_masks: also return the masks, bool ``[N, T]`` per navigation module in
                forward order.
            masks: override every navigation decision with these ``[N, T]`` masks (in forward
                order); for tests and benchmarks at exact ratios.
        """
        self.check_video(video)
        n, t = video.shape[:2]
        x = video.reshape((n * t,) + tuple(video.shape[2:]))
        sparse = self.runs_sparse
        if sparse and self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        ctx = ExecutionContext(sparse, get_ops(self._backend), reference_ops, masks)
        out, gates = self.base_model(x, ctx)
        ctx.check_all_forced_used()
        if self.new_fc is not None:
            out = self.new_fc(self.dropout(out))
        logits = out.reshape(n, t, -1).mean(dim=1)
        if return_masks:
            return logits, [g.detach() > 0.5 for g in gates]
        return logits
