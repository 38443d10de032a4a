"""Capture a whole forward pass as one CUDA graph and replay it: no launch overhead.

At a few videos per call the sparse model is bound by Python and kernel launches, not by
FLOPs. A CUDA graph records every kernel of one forward once and replays them with a single
launch. That needs a forward that never reads back from the device, i.e. static frame
counts: a frame budget (``model.frame_budget``) or a fixed policy. For the released
threshold rule use ``torch.compile(model, mode="reduce-overhead")`` instead: it graphs the
parts between the per-stage frame-count reads.

    runner = afnet.cuda_graph(model, example_video)   # captures for example_video's shape
    logits = runner(video)                            # same shape, dtype and device

A graph replays fixed memory addresses: the runner copies each input into its own static
buffer and returns a copy of the static output. It also holds the weights it was captured
with: after any weight change (checked on every call) capture again.
"""

from __future__ import annotations

from typing import Callable

import torch

from afnet.engine.state import state_tensors, tensor_version
from afnet.export import check_exportable

__all__ = ["CudaGraphRunner", "cuda_graph"]


class CudaGraphRunner:
    """Replays one captured forward of ``model`` for inputs shaped like the example."""

    def __init__(self, model: torch.nn.Module, example: torch.Tensor, warmup: int = 3) -> None:
        if not example.is_cuda:
            raise ValueError(f"cuda_graph needs a CUDA model and input, got an input on {example.device}")
        check_exportable(model)
        model.eval()
        # The weights the graph holds; checked on every call, without walking the modules again.
        self._state = state_tensors(model)
        self._signature = self._weights_signature()
        self._static_input = example.detach().clone()
        # Warm-up on a side stream builds the plan, F(0) and the cuDNN choices outside capture.
        side = torch.cuda.Stream(device=example.device)
        side.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(warmup):
                model(self._static_input)
        torch.cuda.current_stream(example.device).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self._graph):
            self._static_output = model(self._static_input)

    def _weights_signature(self) -> list:
        return [(tensor_version(t), t.data_ptr()) for t in self._state]

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        """Logits for ``video``, which must match the captured shape, dtype and device."""
        expected = self._static_input
        if video.shape != expected.shape or video.dtype != expected.dtype or video.device != expected.device:
            raise ValueError(
                f"video must match the captured input: shape {tuple(expected.shape)}, {expected.dtype} on "
                f"{expected.device}; got shape {tuple(video.shape)}, {video.dtype} on {video.device} "
                "(capture another runner with afnet.cuda_graph for this shape)"
            )
        if self._weights_signature() != self._signature:
            raise RuntimeError("the model's weights changed since the CUDA graph was captured: call afnet.cuda_graph again")
        self._static_input.copy_(video)
        self._graph.replay()
        return self._static_output.clone()


def cuda_graph(model: torch.nn.Module, example_video: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable replaying ``model``'s eval forward for ``example_video``'s shape as one CUDA graph.

    ``model`` needs static frame counts (``frame_budget`` or a fixed policy) and lives on the GPU
    with ``example_video`` ``[N, T, 3, H, W]``. Raises ``ValueError`` otherwise.
    """
    return CudaGraphRunner(model, example_video)
