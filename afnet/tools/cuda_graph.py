"""Capture a whole forward pass as one CUDA graph and replay it: no launch overhead.

At a few videos per call the sparse model is bound by Python and kernel launches, not by
FLOPs. A CUDA graph records every kernel of one forward once and replays them with a single
launch. That needs a forward that never reads back from the device, i.e. static counts: a
frame budget (with a cell budget for learned spatial gates) or fixed policies. For the released
threshold rule use ``torch.compile(afnet.freeze(model), mode="reduce-overhead")`` instead: it
graphs the parts between the per-stage frame-count reads.

    runner = afnet.cuda_graph(frozen_or_model, example_video)   # captures for this shape
    logits = runner(video)                                      # same shape, dtype and device

:class:`StaticGraph` is the capture itself, for any module with static shapes (the benchmark graphs
its torchvision baselines with it). A graph replays fixed memory addresses. The runner therefore
holds everything the graph reads:
the frozen model (``afnet.freeze``), its plan with the folded weights and the ``F(0)`` and mask
caches, and its own static input and output buffers; it copies each input in and returns a copy
of the output. What it promises:

- given a frozen model: that snapshot's answer. After ``frozen.rebuild()`` a replay would use
  the old plan, so the runner raises instead, naming the fix (capture again).
- given a live model: it freezes it (a private snapshot) and checks the live model's weights and
  settings on every call, raising after any change (capture again), so an answer is never stale.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from afnet.engine import FrozenTSN, freeze
from afnet.engine.signature import state_signature
from afnet.models import TSN
from afnet.tools.export import check_static

__all__ = ["CudaGraphRunner", "StaticGraph", "cuda_graph"]


class StaticGraph:
    """One eval forward of ``module`` on inputs shaped like ``example``, captured as a CUDA graph.

    Holds ``module`` (whose weights and buffers the graph reads) and its own static input and
    output buffers; each call copies the input in, replays, and returns a copy of the output.
    It checks nothing about ``module``: a module whose answer can change (a live afnet model)
    needs the checks of :class:`CudaGraphRunner`. The forward must not read back from the
    device (no ``.item()``, no data-dependent shapes): capture fails otherwise.
    """

    def __init__(self, module: nn.Module, example: torch.Tensor, warmup: int = 3) -> None:
        if not isinstance(example, torch.Tensor) or not example.is_cuda:
            where = example.device if isinstance(example, torch.Tensor) else type(example).__name__
            raise ValueError(f"cuda_graph needs a CUDA model and input, got an input on {where}")
        self.module = module
        self._static_input = example.detach().clone()
        # Warm-up on a side stream builds lazy state (plans, F(0), mask caches, cuDNN choices) outside capture.
        side = torch.cuda.Stream(device=example.device)
        side.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(warmup):
                module(self._static_input)
        torch.cuda.current_stream(example.device).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self._graph):
            self._static_output = module(self._static_input)

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        """The output for ``video``, which must match the captured shape, dtype and device."""
        expected = self._static_input
        if video.shape != expected.shape or video.dtype != expected.dtype or video.device != expected.device:
            raise ValueError(
                f"video must match the captured input: shape {tuple(expected.shape)}, {expected.dtype} on "
                f"{expected.device}; got shape {tuple(video.shape)}, {video.dtype} on {video.device} "
                "(capture another runner with afnet.cuda_graph for this shape)"
            )
        self._static_input.copy_(video)
        self._graph.replay()
        return self._static_output.clone()


class CudaGraphRunner:
    """Replays one captured forward of a frozen model for inputs shaped like the example."""

    def __init__(self, model: torch.nn.Module, example: torch.Tensor, warmup: int = 3) -> None:
        self._live: Optional[TSN] = None
        self._live_state: Optional[tuple] = None
        if isinstance(model, FrozenTSN):
            frozen = model
        else:
            frozen = freeze(model)
            self._live = model
            self._live_state = self._state_of(model)
        check_static(frozen)
        if frozen.device != example.device:
            raise ValueError(f"cuda_graph: the model is on {frozen.device} but the example video on {example.device}")
        self.frozen = frozen
        # Held for the graph's lifetime: it reads the folded weights and caches of this plan.
        self._plan = frozen.plan
        self._generation = frozen.generation
        self._graph = StaticGraph(frozen, example, warmup)

    @staticmethod
    def _state_of(model: TSN) -> tuple:
        """What a live model's answer depends on: its weights and settings, and its head."""
        return (state_signature(model), getattr(model, "settings", None))

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        """Logits for ``video``, which must match the captured shape, dtype and device."""
        if self.frozen.generation != self._generation or self.frozen.plan is not self._plan:
            raise RuntimeError("the frozen model was rebuilt since the CUDA graph was captured: call afnet.cuda_graph again")
        if self._live is not None and self._state_of(self._live) != self._live_state:
            raise RuntimeError(
                "the model's weights or settings changed since the CUDA graph was captured: call afnet.cuda_graph "
                "again (or capture a frozen model, afnet.freeze(model), which keeps its snapshot)"
            )
        return self._graph(video)


def cuda_graph(model: torch.nn.Module, example_video: torch.Tensor) -> CudaGraphRunner:
    """A callable replaying the eval forward of ``model`` (a frozen model, or a live one, which is
    frozen and watched) for ``example_video``'s shape ``[N, T, 3, H, W]`` as one CUDA graph.

    The model needs static counts (a frame budget or fixed policies; see the module docstring)
    and lives on the GPU with ``example_video``. Raises ``ValueError`` otherwise.
    """
    return CudaGraphRunner(model, example_video)
