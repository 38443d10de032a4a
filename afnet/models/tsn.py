"""TSN wrapper: a video ``[N, T, 3, H, W]`` -> per-frame logits averaged over T.

Key names follow the released video checkpoints: the backbone is ``base_model`` and the
ResNet classifier ``new_fc`` (after dropout). Backbones with a classifier of their own
(AF-MobileNetV3) have no ``new_fc``.

Runtime switches:
- ``execution``: ``"sparse"`` (default) runs the inference engine in eval (``afnet.engine``):
  BN folded, only the selected frames computed by the focal blocks; ``"dense"`` is the released
  masked form; ``"folded"`` is the released form (every frame computed) with the engine's folded
  convolutions, to tell the gain of folding from the gain of skipping frames. Training always runs the dense form (the differentiable one), and so does an eval
  forward while autograd records (a warning says so): the engine builds no autograd graph.
- ``backend``: ``"kernels"`` (compiled ``afnet_kernels``) or ``"torch"`` (pure PyTorch), in both
  executions.
- ``memory_format``: layout the engine runs in (default channels_last, faster with oneDNN and
  cuDNN); None keeps the input's layout.
- ``frame_budget``: None (the released threshold rule) or the ratio of frames each navigation
  module keeps in inference (``afnet.budget``).
- ``pad_counts``: None, or ``"pow2"`` to pad the frame counts the threshold rule reads up to a
  power of two (the padding rows are computed and dropped), so that ``torch.compile`` (e.g.
  ``mode="reduce-overhead"``, CUDA graphs) sees a bounded set of shapes. Same results.

The engine's plan is built on ``eval()`` and rebuilt whenever a parameter or buffer changes (their
version counters, storage, dtype and device). Writes through ``param.data`` bypass version counters:
call :meth:`TSN.refresh_plan` after one.
"""

from __future__ import annotations

import warnings
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from afnet.backend import BACKENDS, get_ops
from afnet.budget import FrameBudget, frames_per_module, validate_frame_budget
from afnet.engine.context import ExecutionContext
from afnet.engine.executor import run_plan
from afnet.engine.folding import memory_format_of
from afnet.engine.plan import PlanCache
from afnet.engine.selection import COUNT_BUCKETS

EXECUTIONS = ("dense", "sparse", "folded")


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
        self._frame_budget: FrameBudget = None
        self._pad_counts: Optional[str] = None
        self.memory_format: Optional[torch.memory_format] = torch.channels_last
        self._plans = PlanCache()
        #: ``"sparse"``, ``"folded"`` or ``"dense"``: the path the last forward took (tests assert it).
        self.last_execution: Optional[str] = None

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
    def frame_budget(self) -> FrameBudget:
        """None (threshold rule), a ratio in (0, 1] for every navigation module, or one ratio per
        navigation module in forward order. Each module then keeps exactly
        ``floor(r·T + 1/2)`` frames of every video in eval: the largest keep margins."""
        return self._frame_budget

    @frame_budget.setter
    def frame_budget(self, value: FrameBudget) -> None:
        self._frame_budget = validate_frame_budget(self, value)

    @property
    def pad_counts(self) -> Optional[str]:
        """None (exact counts) or ``"pow2"`` (counts read by the threshold rule padded to powers of two)."""
        return self._pad_counts

    @pad_counts.setter
    def pad_counts(self, value: Optional[str]) -> None:
        if value is not None and value not in COUNT_BUCKETS:
            raise ValueError(f"pad_counts must be None or one of {tuple(COUNT_BUCKETS)}, got {value!r}")
        self._pad_counts = value

    def _gates(self) -> Tuple[List[nn.Module], bool]:
        """(the temporal gates in forward order, whether there are spatial gates): one walk of
        the backbone, which a forward pays once."""
        from afnet.layers import FixedPolicy, Navigation, SpatialNavigation, SpatialPolicy

        temporal, spatial = [], False
        for m in self.base_model.modules():
            if isinstance(m, (Navigation, FixedPolicy)):
                temporal.append(m)
            spatial = spatial or isinstance(m, (SpatialNavigation, SpatialPolicy))
        return temporal, spatial

    @property
    def navigation_modules(self) -> List[nn.Module]:
        """The temporal gates (navigation modules or fixed policies) in forward order."""
        return self._gates()[0]

    @property
    def is_spatial(self) -> bool:
        """Whether the focal blocks also have spatial gates (``create_model(..., spatial=True)``)."""
        return self._gates()[1]

    @property
    def runs_sparse(self) -> bool:
        """Whether an inference-mode forward takes the engine (eval, ``execution`` sparse or
        folded, binary gates; soft-weight navigation can only run dense)."""
        return self._runs_sparse(self.navigation_modules)

    def _runs_sparse(self, temporal_gates: List[nn.Module]) -> bool:
        return (
            self._execution != "dense"
            and not self.training
            and all(getattr(g, "is_binary", True) for g in temporal_gates)
        )

    def train(self, mode: bool = True) -> "TSN":
        super().train(mode)
        if mode:
            self._plans.clear()  # frees the folded weights; stale once training updates them
        elif self.runs_sparse and self.memory_format is not None:
            self._plans.get(self.base_model, self.memory_format)
        return self

    def refresh_plan(self) -> None:
        """Rebuild the inference plan on the next forward (after writes through ``param.data``,
        which PyTorch's version counters do not see)."""
        self._plans.clear()

    def _records_autograd(self, video: torch.Tensor) -> bool:
        return torch.is_grad_enabled() and (
            video.requires_grad or any(p.requires_grad for p in self.parameters())
        )

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
        weight = next(self.parameters())
        if video.dtype != weight.dtype:
            raise ValueError(
                f"video dtype {video.dtype} does not match the model's dtype {weight.dtype}: convert one "
                f"of them (video.to({weight.dtype}) or model.to({video.dtype}))"
            )
        if video.device != weight.device:
            raise ValueError(f"video is on {video.device} but the model is on {weight.device}")

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
        self.check_video(video)
        n, t = video.shape[:2]
        x = video.reshape((n * t,) + tuple(video.shape[2:]))
        temporal_gates, is_spatial = self._gates()
        budget = None if self.training else frames_per_module(
            self._frame_budget, self.num_segments, len(temporal_gates)
        )
        if spatial_masks is not None and not is_spatial:
            raise ValueError("spatial_masks: this model has no spatial navigation (create_model(..., spatial=True))")
        ctx = ExecutionContext(
            get_ops(self._backend), forced_masks=masks, frame_budget=budget, forced_cells=spatial_masks,
            skip_frames=self._execution == "sparse", pad_counts=self._pad_counts,
        )
        on_engine = self._runs_sparse(temporal_gates)
        if on_engine and self._records_autograd(video):
            warnings.warn(
                "model.eval() forward with autograd recording runs the dense, differentiable path; "
                "use torch.inference_mode() or torch.no_grad() for the sparse engine",
                stacklevel=4,  # the caller of model(...), past nn.Module's call wrappers
            )
            on_engine = False
        if on_engine:
            x = x.contiguous(memory_format=self.memory_format or memory_format_of(x))
            plan = self._plans.get(self.base_model, memory_format_of(x))
            out, gates = run_plan(plan, x, ctx)
        else:
            out, gates = self.base_model(x, ctx)
        self.last_execution = self._execution if on_engine else "dense"
        ctx.check_all_gates_used()
        if self.new_fc is not None:
            out = self.new_fc(self.dropout(out))
        logits = out.reshape(n, t, -1).mean(dim=1)
        if not return_masks:
            return logits
        frame_masks = [g.detach() > 0.5 for g in gates]
        if not is_spatial:
            return logits, frame_masks
        return logits, frame_masks, [c.detach().reshape(n, t, *c.shape[1:]) > 0.5 for c in ctx.cell_masks]
