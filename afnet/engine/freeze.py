"""``afnet.freeze``: the explicit inference form of a model.

``frozen = afnet.freeze(model)`` returns an eval-only ``nn.Module`` that owns everything it runs:
a private copy of the gates and the classifier, the plan with the folded weights, the ``F(0)``
and mask caches, and its settings (execution, backend, budgets, layout), all fixed when it is
made. It is a **snapshot**, like a TensorRT engine or a model compiled with inductor's
``freezing``: later changes to the source model (an optimizer step, ``load_state_dict``, a new
budget) do not reach it. :meth:`FrozenTSN.rebuild` makes it again from the source's current
weights, explicitly.

Because it never checks anything per call, a frozen model has no host work beyond running the
plan, and it is what ``torch.compile``, ``afnet.cuda_graph``, export, calibration and
``count_flops`` build on: a compiled graph or a captured CUDA graph of it stays right as long as
the frozen model lives (``rebuild`` replaces its plan object, so a compiled graph recompiles and a
CUDA-graph runner refuses to replay).
"""

from __future__ import annotations

import copy
import functools
import weakref
from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from afnet.engine.budget import FrameBudget, is_static
from afnet.engine.counters import MacCounter, active_counter
from afnet.engine.plan import InferencePlan, build_plan
from afnet.engine.runtime import ENGINE_EXECUTIONS, InferenceSettings, run_engine
from afnet.models.tsn import TSN, VideoOutput, check_video, find_gates

__all__ = ["FrozenTSN", "freeze"]

_UNSET: Any = object()


def _classify(head: Optional[nn.Module], features: torch.Tensor, n: int, t: int) -> torch.Tensor:
    """``TSN.classify`` in eval (dropout is the identity): the classifier, then the mean over T."""
    if head is not None:
        features = head(features)
    return features.reshape(n, t, -1).mean(dim=1)


class FrozenTSN(nn.Module):
    """An eval-only snapshot of a model's inference (made by :func:`freeze`).

    ``frozen(video [N, T, 3, H, W], return_masks=False, masks=None, spatial_masks=None)`` works like
    the model's forward. Attributes: ``settings`` (the resolved :class:`InferenceSettings`),
    ``plan``, ``num_segments``, ``config`` (the source's ``create_model`` arguments), ``dtype``,
    ``device``, ``generation`` (incremented by every :meth:`rebuild`).

    It cannot train and cannot move: ``train()``, ``.to()``, ``.cuda()``, ``.half()`` raise an error
    saying to freeze the model again after changing it.
    """

    def __init__(self, source: TSN, settings: InferenceSettings) -> None:
        super().__init__()
        if settings.execution not in ENGINE_EXECUTIONS:
            raise ValueError(
                f"freeze: execution must be one of {ENGINE_EXECUTIONS} (the engine's), got {settings.execution!r}; "
                "the dense computation is the model itself"
            )
        self._requested = settings
        self._source = weakref.ref(source)
        self.generation = 0
        self._build(copy.deepcopy(source))
        super().train(False)

    def _build(self, model: TSN) -> None:
        """Make the snapshot from ``model``, a private copy of the source."""
        model.eval()
        gates = find_gates(model.base_model)
        if not all(getattr(g, "is_binary", True) for g in gates.temporal):
            raise ValueError("freeze needs binary navigation; a soft_weights model runs only the dense computation")
        settings = self._requested.checked(gates.temporal, gates.spatial, model.config)
        if settings.memory_format is None:  # one layout per snapshot: inputs are converted to it
            settings = replace(settings, memory_format=torch.channels_last)
        weight = next(model.parameters())
        self.plan: InferencePlan = build_plan(model.base_model.describe(), settings.memory_format)
        self.settings = settings
        self.static_counts = is_static(gates.temporal, gates.spatial, settings.frame_budget, settings.cell_budget)
        self.num_segments = model.num_segments
        self.arch = model.arch
        self.config: Dict[str, Any] = dict(model.config)
        self.dtype, self.device = weight.dtype, weight.device
        self._classify = functools.partial(_classify, model.new_fc)
        self.generation += 1

    @property
    def navigation_modules(self) -> Tuple[nn.Module, ...]:
        """The temporal gates (the snapshot's copies) in forward order."""
        return self.plan.temporal_gates

    @property
    def is_spatial(self) -> bool:
        return bool(self.plan.spatial_gates)

    @property
    def head(self) -> Optional[nn.Module]:
        """The snapshot's classifier (``new_fc``), or None when the backbone classifies itself."""
        return self._classify.args[0]

    def unfolded_modules(self) -> List[nn.Module]:
        """The modules this snapshot runs as they are (gates, fusion, pools, squeeze-excitation,
        the classifier): the work the MAC counter of its folded convs does not see."""
        return self.plan.unfolded_modules() + ([self.head] if self.head is not None else [])

    def rebuild(self, source: Optional[TSN] = None) -> "FrozenTSN":
        """Make the snapshot again from ``source`` (default: the model it was frozen from) with the
        settings it was frozen with, in place; returns ``self``. Compiled graphs of it recompile;
        CUDA-graph runners of it must be captured again."""
        source = source if source is not None else self._source()
        if source is None:
            raise RuntimeError("the model this was frozen from no longer exists: pass it, frozen.rebuild(model)")
        self._source = weakref.ref(source)
        self._build(copy.deepcopy(source))
        return self

    def train(self, mode: bool = True) -> "FrozenTSN":
        if mode:
            raise RuntimeError(
                "a frozen model is eval-only: train the source model, then call frozen.rebuild() "
                "(or afnet.freeze(model) again)"
            )
        return super().train(False)

    def _apply(self, fn: Any, recurse: bool = True) -> "FrozenTSN":
        raise RuntimeError(
            f"a frozen model is fixed to {self.device} and {self.dtype}: move or convert the source model, "
            "then freeze it again (afnet.freeze(model.to(...)))"
        )

    def run(
        self,
        video: torch.Tensor,
        *,
        masks: Optional[Sequence[torch.Tensor]] = None,
        spatial_masks: Optional[Sequence[torch.Tensor]] = None,
        counter: Optional[MacCounter] = None,
    ) -> VideoOutput:
        """The forward as a :class:`~afnet.models.tsn.VideoOutput` (logits, masks, cell masks);
        ``counter`` (default: this thread's ``afnet.engine.count_macs`` counter) counts the MACs
        this call's folded convolutions ran."""
        check_video(video, self.num_segments, self.dtype, self.device)
        if counter is None and not torch.compiler.is_compiling():
            counter = active_counter()
        return run_engine(
            self.plan, self._classify, video, self.settings, masks=masks, spatial_masks=spatial_masks, counter=counter
        )

    def forward(
        self,
        video: torch.Tensor,
        return_masks: bool = False,
        masks: Optional[Sequence[torch.Tensor]] = None,
        spatial_masks: Optional[Sequence[torch.Tensor]] = None,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """Logits ``[N, classes]``; with ``return_masks`` also the masks (see ``TSN.forward``)."""
        return self.run(video, masks=masks, spatial_masks=spatial_masks).returned(return_masks)

    def extra_repr(self) -> str:
        s = self.settings
        return (
            f"arch={self.arch!r}, num_segments={self.num_segments}, execution={s.execution!r}, backend={s.backend!r}, "
            f"frame_budget={s.frame_budget!r}, cell_budget={s.cell_budget!r}, dtype={self.dtype}, device={self.device}"
        )


def freeze(
    model: TSN,
    *,
    frame_budget: FrameBudget = _UNSET,
    cell_budget: Optional[float] = _UNSET,
    memory_format: Optional[torch.memory_format] = _UNSET,
    backend: Optional[str] = _UNSET,
    execution: str = _UNSET,
    pad_counts: Optional[str] = _UNSET,
) -> FrozenTSN:
    """The explicit inference form of ``model`` (see the module docstring): a snapshot.

    Every setting not given is taken from ``model`` (a live model's ``frame_budget``,
    ``backend``, ...; the defaults of :class:`InferenceSettings` for a plain description). A
    ``memory_format`` of None becomes channels_last: a snapshot runs one layout. ``model`` is
    not changed. Raises ``ValueError`` naming a bad setting.
    """
    if isinstance(model, FrozenTSN):
        raise TypeError("freeze: model is already frozen; freeze the model it was made from (or call .rebuild())")
    if not isinstance(model, TSN):
        raise TypeError(f"freeze needs an afnet model (afnet.create_model), got {type(model).__name__}")
    settings = getattr(model, "settings", InferenceSettings())
    if settings.execution == "dense":
        settings = replace(settings, execution="sparse")
    given = dict(
        frame_budget=frame_budget, cell_budget=cell_budget, memory_format=memory_format, backend=backend,
        execution=execution, pad_counts=pad_counts,
    )
    settings = replace(settings, **{k: v for k, v in given.items() if v is not _UNSET})
    return FrozenTSN(model, settings)
