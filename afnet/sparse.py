"""Sparse execution of focal blocks: compute the selected frames only.

A focal block computes ``out = shortcut(x) + F(mask ⊙ shift(x))`` (then ReLU). In
eval, BN uses running statistics, so an unselected frame's row is exactly
``shortcut(x) + F(0)``, with ``F(0)`` independent of the input. The sparse path

1. gathers the K selected rows of ``x`` (the TSM shift fused into the gather),
2. runs ``F`` on those K frames only,
3. scatters the result into the shortcut, filling every other row with the cached
   ``F(0)`` and applying the final ReLU in the same pass.

Host syncs: reading K is the only one. :func:`select_stage` reads the K's of all
the masks of a stage at once (:func:`count_selected`), so a stage costs one sync.

Layout: ``[N*T, C, H, W]``, frame-major (row ``n*T + t``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, ContextManager, Dict, Hashable, List, Optional, Sequence

import torch

from afnet.folding import is_channels_last

__all__ = [
    "FrameSelection",
    "count_selected",
    "select_stage",
    "zero_response",
    "sparse_residual",
    "trusted_indices",
    "cached_zero_response",
    "ExecutionContext",
]

Branch = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class FrameSelection:
    """The frames one focal block computes.

    Attributes:
        index: int64 ``[K]``, rows ``n*T + t`` in ascending order.
        count: K, known on the host.
        num_segments: T.
        num_rows: N*T.
    """

    index: torch.Tensor
    count: int
    num_segments: int
    num_rows: int

    @property
    def is_empty(self) -> bool:
        return self.count == 0


def count_selected(masks: Sequence[torch.Tensor]) -> List[int]:
    """Number of selected frames of each mask ``[N, T]``: the stage's single host sync."""
    return torch.stack([m.reshape(-1) for m in masks]).ne(0).sum(1).tolist()


def select_stage(masks: Sequence[torch.Tensor], ops: ModuleType) -> List[FrameSelection]:
    """Frame selections for all masks ``[N, T]`` of one stage, with one host sync in total."""
    if not masks:
        return []
    counts = count_selected(masks)
    selections = []
    for mask, count in zip(masks, counts):
        n, t = mask.shape
        index = ops.select_frames(mask, num_selected=count)[0]
        selections.append(FrameSelection(index, count, t, n * t))
    return selections


def trusted_indices(ops: ModuleType) -> ContextManager:
    """``ops.trusted_indices()`` when the ops module offers it (skips the index-range check,
    itself a device sync on CUDA; our indices come from ``select_frames``), else a no-op."""
    factory = getattr(ops, "trusted_indices", None)
    return factory() if factory is not None else contextlib.nullcontext()


@torch.no_grad()
def zero_response(branch: Branch, x: torch.Tensor) -> torch.Tensor:
    """``F(0)`` ``[C', H', W']``: the branch's output for one all-zero frame shaped like a row of ``x``."""
    zeros = torch.zeros((1,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
    if is_channels_last(x):
        zeros = zeros.contiguous(memory_format=torch.channels_last)
    # Kept in the branch's layout: for channels_last the [C, H, W] view is HWC in memory, which
    # is how the scatter kernels read a fill row, so they need no copy of it.
    return branch(zeros)[0]


def cached_zero_response(values: Dict[Hashable, object], branch: Branch, x: torch.Tensor) -> torch.Tensor:
    """:func:`zero_response` stored in ``values`` (an inference-cache dict) per input shape, dtype,
    device and layout."""
    key = ("zero_response", tuple(x.shape[1:]), x.dtype, x.device, is_channels_last(x))
    f0 = values.get(key)
    if f0 is None:
        f0 = values[key] = zero_response(branch, x)
    return f0  # type: ignore[return-value]


def sparse_residual(
    x: torch.Tensor,
    selection: FrameSelection,
    branch: Branch,
    shortcut: torch.Tensor,
    *,
    fill: Optional[torch.Tensor],
    relu: bool,
    ops: ModuleType,
    shift_div: int = 0,
) -> torch.Tensor:
    """``shortcut + F(shift(x))`` on the selected rows, ``shortcut + fill`` elsewhere, then ReLU.

    Args:
        x: block input ``[N*T, C, H, W]``.
        selection: the rows to compute.
        branch: the residual branch ``F``: ``[K, C, H, W] -> [K, C', H', W']``.
        shortcut: ``[N*T, C', H', W']``; never modified.
        fill: value of the unselected rows' branch, ``F(0)`` ``[C', H', W']`` or ``[C']``;
            None for the residual-only form.
        relu: apply the block's final ReLU.
        ops: the frame ops (``afnet.backend.get_ops``).
        shift_div: TSM fold divisor fused into the gather (0: no shift).

    Returns ``[N*T, C', H', W']``.
    """
    if selection.is_empty:
        # K = 0: F is skipped entirely.
        if fill is None:
            return torch.relu(shortcut) if relu else shortcut
        out = shortcut + (fill if fill.dim() == 3 else fill.reshape(-1, 1, 1))
        return out.relu_() if relu else out
    src = ops.gather_frames(x, selection.index, selection.num_segments, shift_div)
    return ops.scatter_frames(shortcut, branch(src), selection.index, fill, relu)


class ExecutionContext:
    """How one forward pass runs, passed down from the model wrapper to every AF stage.

    Attributes:
        sparse: eval inference path (folded BN, selected frames only); False: dense masked form.
        ops: frame ops for the sparse path (``afnet.backend.get_ops``).
        dense_ops: frame ops for the dense path (the pure-PyTorch reference, as released).
        forced_masks: optional masks ``[N, T]`` overriding the gates, consumed in forward order.
    """

    def __init__(
        self,
        sparse: bool,
        ops: ModuleType,
        dense_ops: ModuleType,
        forced_masks: Optional[Sequence[torch.Tensor]] = None,
    ) -> None:
        self.sparse = sparse
        self.ops = ops
        self.dense_ops = dense_ops
        self._forced = list(forced_masks) if forced_masks is not None else None
        self._used = 0

    def next_forced_mask(self) -> Optional[torch.Tensor]:
        """The next forced mask, or None when the gates decide."""
        if self._forced is None:
            return None
        if self._used >= len(self._forced):
            raise ValueError(f"masks: got {len(self._forced)} masks but the model has more navigation modules")
        mask = self._forced[self._used]
        self._used += 1
        return mask

    def gate_mask(self, gate: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Mask ``[N, T]`` of ``gate`` (a navigation module or fixed policy, with ``num_segments``)
        on frames ``x`` ``[N*T, C, H, W]``, or the next forced mask: checked to be ``[N, T]``, then
        cast to ``x``'s device and dtype."""
        forced = self.next_forced_mask()
        if forced is None:
            return gate(x)
        expected = (x.shape[0] // gate.num_segments, gate.num_segments)
        if tuple(forced.shape) != expected:
            raise ValueError(f"masks: expected shape {expected}, got {tuple(forced.shape)}")
        return forced.to(device=x.device, dtype=x.dtype)

    def check_all_forced_used(self) -> None:
        if self._forced is not None and self._used != len(self._forced):
            raise ValueError(
                f"masks: got {len(self._forced)} masks but the model has {self._used} navigation modules"
            )
