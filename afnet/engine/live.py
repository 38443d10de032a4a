"""The live model: what :func:`create_model` returns.

A :class:`LiveTSN` is the model description (:class:`afnet.models.TSN`, whose forward is the
released dense computation, what training runs) plus inference settings. In eval its forward
runs the inference engine on the **current** weights: the plan (folded weights, ``F(0)``) is
rebuilt whenever a fact it was built from changes (``afnet.engine.signature``): an optimizer
step, an in-place ``no_grad`` update, ``load_state_dict``, ``.to()``, a replaced parameter or
module, a changed setting. Writes through ``param.data`` bypass PyTorch's version counters: call
:meth:`LiveTSN.refresh_plan` after one.

Checking those facts costs one walk of the module tree per eval forward. The explicit inference
form without that walk is ``afnet.freeze(model)``: a snapshot, which ``torch.compile``, CUDA
graphs and export build on. ``torch.compile`` of the live model itself refuses the engine path
with an error that points there (a compiled graph would keep the weights it was traced with).
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from afnet.engine.budget import frames_per_module
from afnet.engine.counters import active_counter
from afnet.engine.folding import memory_format_of
from afnet.engine.plan import InferencePlan, build_plan
from afnet.engine.runtime import InferenceSettings, run_engine
from afnet.engine.signature import StateSignature, state_signature
from afnet.models import build_model
from afnet.models.tsn import TSN, VideoOutput, find_gates
from afnet.ops import get_ops

__all__ = ["LIVE_COMPILE_REASON", "LiveTSN", "create_model"]

LIVE_COMPILE_REASON = (
    "torch.compile of a live afnet model in eval runs its sparse engine eagerly, outside the graph: "
    "the engine checks the current weights on every call, which a compiled graph cannot do (it would "
    "keep the weights it was traced with). To compile the engine, compile the explicit inference "
    "form: torch.compile(afnet.freeze(model)), a snapshot you rebuild after a weight change "
    "(frozen.rebuild()); or set model.execution = 'dense' to compile the released computation"
)


class _LivePlans:
    """The plans of one backbone, per memory format, valid for the facts they were built from."""

    def __init__(self) -> None:
        self._plans: Dict[torch.memory_format, InferencePlan] = {}
        self._signature: Optional[StateSignature] = None

    def get(self, backbone: nn.Module, memory_format: torch.memory_format) -> Tuple[InferencePlan, StateSignature]:
        """The plan of ``backbone`` for ``memory_format`` (rebuilt if any fact changed), and the
        facts of this one walk of the module tree."""
        signature = state_signature(backbone)
        if signature != self._signature:
            self._plans = {}
            self._signature = signature
        plan = self._plans.get(memory_format)
        if plan is None:
            plan = self._plans[memory_format] = build_plan(backbone.describe(), memory_format)
        return plan, signature

    def clear(self) -> None:
        self._plans = {}
        self._signature = None

    def __len__(self) -> int:
        return len(self._plans)

    def __deepcopy__(self, memo: dict) -> "_LivePlans":
        return _LivePlans()  # a copy has other modules: its plans are rebuilt from them


class _Setting:
    """An attribute of the live model backed by the field of the same name of its
    :class:`~afnet.engine.runtime.InferenceSettings`, checked when assigned."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, model: Optional["LiveTSN"], owner: type) -> Any:
        return self if model is None else getattr(model._settings, self.name)

    def __set__(self, model: "LiveTSN", value: Any) -> None:
        model._set(**{self.name: value})


class LiveTSN(TSN):
    """The video model :func:`create_model` returns: the description plus inference settings.

    Training (``model.train()``) always runs the dense, differentiable form. In eval the forward
    follows ``execution`` (see :class:`~afnet.engine.runtime.InferenceSettings` for every
    setting): ``"sparse"`` (default) runs the inference engine on the selected frames only,
    ``"folded"`` every frame on the folded plan, ``"dense"`` the released computation. An eval
    forward while autograd records takes the dense path with a warning (the engine builds no
    autograd graph). ``last_execution`` says which path the last call took.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._settings = InferenceSettings()
        self._plans = _LivePlans()
        #: ``"sparse"``, ``"folded"`` or ``"dense"``: the path the last forward took.
        self.last_execution: Optional[str] = None

    # -- settings: each one field of InferenceSettings, checked on assignment -------------------
    execution = _Setting()
    backend = _Setting()
    frame_budget = _Setting()
    cell_budget = _Setting()
    pad_counts = _Setting()
    memory_format = _Setting()

    @property
    def settings(self) -> InferenceSettings:
        """The inference settings (set them through the attributes above)."""
        return self._settings

    def _set(self, **changes: Any) -> None:
        settings = replace(self._settings, **changes)
        if "frame_budget" in changes or "cell_budget" in changes:
            gates = self.gates()
            settings = settings.checked(gates.temporal, gates.spatial, self.config)
        self._settings = settings

    @property
    def runs_sparse(self) -> bool:
        """Whether an inference-mode forward takes the engine (eval, ``execution`` sparse or
        folded, binary gates; soft-weight navigation can only run dense)."""
        return (
            not self.training
            and self._settings.execution != "dense"
            and all(getattr(g, "is_binary", True) for g in self.navigation_modules)
        )

    # -- the plan -----------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "LiveTSN":
        super().train(mode)
        if mode:
            self._plans.clear()  # frees the folded weights; stale once training updates them
        return self

    def refresh_plan(self) -> None:
        """Rebuild the inference plan on the next forward (after writes through ``param.data``,
        which PyTorch's version counters do not see)."""
        self._plans.clear()

    # -- forward ------------------------------------------------------------------------------
    def forward(
        self,
        video: torch.Tensor,
        return_masks: bool = False,
        masks: Optional[Sequence[torch.Tensor]] = None,
        spatial_masks: Optional[Sequence[torch.Tensor]] = None,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """Logits ``[N, num_classes]`` for ``video`` ``[N, T, 3, H, W]``; see :meth:`TSN.forward`."""
        if torch.compiler.is_compiling() and not self.training and self._settings.execution != "dense":
            return _live_eval_outside_the_graph(self, video, return_masks, masks, spatial_masks)
        return self._forward(video, masks, spatial_masks).returned(return_masks)

    def _forward(
        self, video: torch.Tensor, masks: Optional[Sequence[torch.Tensor]], spatial_masks: Optional[Sequence[torch.Tensor]]
    ) -> VideoOutput:
        self.check_video(video)
        settings = self._settings
        if not self.training and settings.execution != "dense":
            frames = video.reshape((-1,) + tuple(video.shape[2:]))
            plan, signature = self._plans.get(self.base_model, settings.memory_format or memory_format_of(frames))
            if not all(getattr(g, "is_binary", True) for g in plan.temporal_gates):
                pass  # soft-weight navigation: only the dense form exists
            elif torch.is_grad_enabled() and (video.requires_grad or signature.requires_grad):
                warnings.warn(
                    "model.eval() forward with autograd recording runs the dense, differentiable path; "
                    "use torch.inference_mode() or torch.no_grad() for the sparse engine",
                    stacklevel=5,  # the caller of model(...), past nn.Module's call wrappers
                )
            else:
                self.last_execution = settings.execution
                return run_engine(
                    plan, self.classify, video, settings, masks=masks, spatial_masks=spatial_masks,
                    counter=active_counter(),
                )
        budget = cells = None
        if not self.training:
            if settings.frame_budget is not None:
                gates = find_gates(self.base_model).temporal
                budget = frames_per_module(settings.frame_budget, self.num_segments, len(gates))
            cells = settings.cell_budget
        self.last_execution = "dense"
        return self.run_dense(video, get_ops(settings.backend), masks, spatial_masks, budget, cells)


@torch.compiler.disable(reason=LIVE_COMPILE_REASON)
def _live_eval_outside_the_graph(
    model: LiveTSN, video: torch.Tensor, return_masks: bool, masks: Any, spatial_masks: Any
) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
    """The live eval forward of a compiled model, run eagerly: it checks the weights on every call
    and so always answers for the current ones."""
    warnings.warn(LIVE_COMPILE_REASON, stacklevel=2)
    return model._forward(video, masks, spatial_masks).returned(return_masks)


def create_model(
    arch: str,
    *,
    num_classes: int,
    num_segments: int,
    shift: bool = False,
    policy: str = "navigation",
    rt: Optional[float] = None,
    dropout: float = 0.5,
    **options: Any,
) -> LiveTSN:
    """An AF video model: ``model(video [N, T, 3, H, W]) -> logits [N, num_classes]``, the live
    :class:`LiveTSN` of architecture ``arch`` (``afnet.models.architectures()``).

    Args:
        num_classes: output classes. num_segments: T, frames per video.
        shift: TSM in the residual branches (AFNet-TSM). AF-MobileNetV3 always shifts.
        policy: ``navigation`` (learned gates) or a fixed policy ``random``/``uniform``/``normal``.
        rt: in (0, 1]. With a fixed policy, the ratio of selected frames (required); with
            ``navigation``, the target of the training's ratio loss (it does not change the forward).
        dropout: before the classifier, in [0, 1).
        options: the architecture's own (``afnet.models.architecture(arch).options`` holds them with
            their defaults, the released behaviour; the README's table says what each does).

    Raises ``ValueError``/``TypeError`` naming the argument for any invalid value, before
    building anything. ``model.config`` holds every argument, defaults filled in. The model
    starts in training mode; ``model.eval()`` runs the sparse execution by default.
    """
    return build_model(
        arch, model_class=LiveTSN, num_classes=num_classes, num_segments=num_segments, shift=shift,
        policy=policy, rt=rt, dropout=dropout, **options,
    )
