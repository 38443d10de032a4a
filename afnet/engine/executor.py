"""The executor: runs an inference plan, computing only the frames the gates keep.

A focal block runs **select → gather → branch on K → scatter**:

1. *select*: the stage's masks become row indices (:mod:`afnet.engine.selection`);
2. *gather*: the K selected rows of the block input, TSM shift fused (``gather_frames``);
3. *branch on K*: the folded convolutions on those K frames only;
4. *scatter*: the results added into the shortcut, every other row getting ``F(0)`` (the
   branch's response to a zero frame, cached per geometry) and the ReLU, in one pass
   (``scatter_frames``).

In eval, BN uses running statistics, so this equals the released dense computation, where
unselected frames are multiplied by zero and still computed. Masks of a stage depend only on
its ample branch, so the ample branch and every gate run first and the stage's frame counts
are read once.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from afnet.engine.context import ExecutionContext
from afnet.engine.folding import FoldedConv, StepOptions, is_channels_last, onednn_applies, run_steps
from afnet.engine.plan import BlockPlan, InferencePlan, LayersPlan, StagePlan
from afnet.engine.selection import CellSelection, Selection, select_stage
from afnet.layers.spatial import upsample_cells
from afnet.models.decisions import CellDecision
from afnet.models.description import FrameGate, GlobalPool
from afnet.ops import shift_frames
from afnet_kernels.reference import tile_valid_mask

__all__ = ["run_plan", "run_block", "run_focal_block", "run_masked_focal_block", "run_stage", "zero_response"]


def _shortcut(block: BlockPlan, x: torch.Tensor, ctx: ExecutionContext) -> Optional[torch.Tensor]:
    if not block.has_residual:
        return None
    return x if block.shortcut is None else run_steps(block.shortcut, x, ctx)


def run_block(block: BlockPlan, x: torch.Tensor, ctx: ExecutionContext, owns_input: bool = False) -> torch.Tensor:
    """A residual block on every frame of ``x`` ``[N*T, C, H, W]``. ``owns_input``: nobody reads
    ``x`` after this block, so an identity shortcut may receive the block's output in place."""
    shortcut = _shortcut(block, x, ctx)
    if block.shift_div:
        x = shift_frames(x, block.num_segments, block.shift_div, ctx.ops)
    *head, last = block.branch
    y = run_steps(head, x, ctx)
    if shortcut is None:
        return last(y, ctx)
    # The last conv (BN folded) adds the shortcut and applies the ReLU in one pass, into the
    # shortcut when that is a fresh tensor or a dead input: one full-size allocation fewer.
    assert isinstance(last, FoldedConv), "a residual branch ends in a conv with its BN"
    return last.add(y, shortcut, block.relu, ctx, into=owns_input or block.shortcut is not None)


def zero_response(block: BlockPlan, x: torch.Tensor, exact: bool) -> torch.Tensor:
    """``F(0)`` ``[C', H', W']`` for input frames shaped like ``x``, cached in the plan per
    geometry, dtype, device and layout (it does not depend on the input)."""
    key = (tuple(x.shape[1:]), x.dtype, x.device, is_channels_last(x))
    f0 = block.zero_responses.get(key)
    if f0 is None:
        zeros = torch.zeros((1,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
        if is_channels_last(x):
            zeros = zeros.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(False), torch.no_grad():
            # Kept in the branch's layout: for channels_last the [C, H, W] view is HWC in
            # memory, which is how the scatter kernels read a fill row, so they need no copy.
            # Not counted: a cached constant of the weights, not per-video work.
            f0 = block.zero_responses[key] = run_steps(block.branch, zeros, StepOptions(exact))[0]
    return f0


def run_focal_block(
    block: BlockPlan, x: torch.Tensor, selection: Selection, ctx: ExecutionContext, owns_input: bool = False
) -> torch.Tensor:
    """A focal block on the selected frames (or cells) of ``x`` ``[N*T, C, H, W]`` only.

    Selected rows (cells) get ``shortcut + F(shift(x))``; the others ``shortcut + F(0)`` (or the
    shortcut alone without ``fill_zero_response``); then the block's ReLU. ``owns_input``: nobody
    reads ``x`` after this block.
    """
    shortcut = _shortcut(block, x, ctx)
    # The output is written into the shortcut when nobody reads it afterwards (a fresh downsample
    # output, or an input given away): no new full-size tensor, whose fresh pages cost more than
    # the scatter's own pass on the CPU.
    writable = owns_input or block.shortcut is not None
    fill = zero_response(block, x, ctx.exact) if block.fill_zero_response else None
    if selection.is_empty:  # K = 0: F is skipped entirely
        out = shortcut if fill is None else (shortcut.add_(fill) if writable else shortcut + fill)
        if not block.relu:
            return out
        return out.relu_() if writable or fill is not None else torch.relu(out)
    if isinstance(selection, CellSelection):
        return _run_focal_tiles(block, x, selection, shortcut, fill, ctx)
    # The indices come from select_frames: valid by construction, so no check (a host read on CUDA).
    rows = ctx.ops.gather_frames(
        x, selection.index, block.num_segments, block.shift_div, validate=False, padded=selection.padded
    )
    computed = run_steps(block.branch, rows, ctx)
    scatter = ctx.ops.scatter_frames_ if writable else ctx.ops.scatter_frames
    return scatter(shortcut, computed, selection.index, fill, block.relu, validate=False)


def _run_focal_tiles(
    block: BlockPlan,
    x: torch.Tensor,
    selection: CellSelection,
    shortcut: torch.Tensor,
    fill: Optional[torch.Tensor],
    ctx: ExecutionContext,
) -> torch.Tensor:
    """Gather the selected cells as tiles with a halo (shift fused), run the VALID branch on them,
    zeroing halo pixels outside the image where a later conv would have padded with zeros, and
    scatter the cells into the shortcut with ``F(0)`` elsewhere."""
    tiles = block.tiles
    size = tuple(x.shape[-2:])  # focal blocks keep their input's size
    y = ctx.ops.gather_tiles(
        x, selection.index, selection.grid, size, 1, tiles.halo, block.num_segments, block.shift_div, validate=False
    )
    for step, halo in zip(tiles.steps, tiles.halos):
        y = step(y, ctx)
        if halo and isinstance(step, FoldedConv):
            y = y.mul_(tile_valid_mask(selection.index, selection.grid, size, size, 1, halo).to(y.dtype))
    return ctx.ops.scatter_tiles(shortcut, y, selection.index, selection.grid, fill, block.relu, validate=False)


def run_masked_focal_block(
    block: BlockPlan, x: torch.Tensor, mask: torch.Tensor, ctx: ExecutionContext, cells: Optional[CellDecision] = None
) -> torch.Tensor:
    """A focal block computed on every frame, unselected ones on zeros, as released, but with
    the folded convolutions: ``execution="folded"``, which shows the gain of folding apart
    from the gain of skipping frames. ``mask`` ``[N, T]`` float 0/1; ``cells``: the spatial
    decision, whose cells not computed get ``F(0)`` (or nothing)."""
    frame_mask = mask.reshape(-1, 1, 1, 1)
    rows = shift_frames(x, block.num_segments, block.shift_div, ctx.ops) if block.shift_div else x
    computed = run_steps(block.branch, rows * frame_mask, ctx)
    if not block.fill_zero_response:
        computed = computed * frame_mask
    if cells is not None:
        kept = upsample_cells(cells.mask, computed.shape[-2:]).to(computed.dtype)
        computed = computed * kept
        if block.fill_zero_response:
            computed = computed + (1 - kept) * zero_response(block, x, ctx.exact)
    out = computed.add_(_shortcut(block, x, ctx))
    return out.relu_() if block.relu else out


def run_stage(stage: StagePlan, x: torch.Tensor, ctx: ExecutionContext) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """An AF stage on ``x`` ``[N*T, C_in, H, W]``; returns (output, masks ``[N, T]``)."""
    base, decisions, cells = x, [], []
    spatial_gates = stage.spatial_gates or (None,) * len(stage.gates)
    for gate, spatial_gate, ample_block in zip(stage.gates, spatial_gates, stage.ample):
        decisions.append(ctx.decide(gate, base))
        if spatial_gate is not None:
            cells.append(ctx.decide_cells(spatial_gate, base, x.shape[-2:]))
        base = run_block(ample_block, base, ctx, owns_input=base is not x)  # x: the focal branch's too
    refine = x
    if ctx.skip_frames:
        selections = select_stage(decisions, ctx.ops, cells or None, ctx.pad_counts)
        for focal_block, selection in zip(stage.focal, selections):
            # The stage input is done with once the ample branch and the gates have read it.
            refine = run_focal_block(focal_block, refine, selection, ctx, owns_input=True)
    else:
        for focal_block, decision, cell in zip(stage.focal, decisions, cells or (None,) * len(decisions)):
            refine = run_masked_focal_block(focal_block, refine, decision.mask, ctx, cell)
    if stage.transform is not None:
        base = run_steps(stage.transform, base, ctx)
    out = stage.fusion(base, refine, relu=stage.fusion_relu, ops=ctx.ops)
    for block in stage.fuse:
        out = run_block(block, out, ctx, owns_input=True)
    return out, [d.mask for d in decisions if not d.shared]


def run_plan(plan: InferencePlan, x: torch.Tensor, ctx: ExecutionContext) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Run ``plan`` on frames ``x`` ``[N*T, 3, H, W]``; returns (output, masks in forward order).

    Non-finite input sets ``ctx.exact``: oneDNN's fused ReLU maps NaN to 0, and the engine must
    propagate NaN and Inf as the dense computation does."""
    # One pass: a NaN or Inf anywhere makes the sum non-finite (so may an overflow, which only
    # costs the fused epilogues), where isfinite().all() makes five.
    ctx.exact = ctx.exact or (onednn_applies(x) and not bool(x.sum().isfinite()))
    masks: List[torch.Tensor] = []
    frames = x  # the caller's tensor (a view of the video): never written
    for part in plan.parts:
        if isinstance(part, LayersPlan):
            x = run_steps(part.steps, x, ctx)
        elif isinstance(part, BlockPlan):
            x = run_block(part, x, ctx, owns_input=x is not frames)
        elif isinstance(part, StagePlan):
            x, stage_masks = run_stage(part, x, ctx)
            masks += stage_masks
        elif isinstance(part, FrameGate):
            masks.append(ctx.decide(part.gate, x).mask)
        elif isinstance(part, GlobalPool):
            x = x.mean(dim=(2, 3))
        else:  # pragma: no cover - build_plan only makes the parts above
            raise TypeError(f"unknown plan part {type(part).__name__}")
    return x, masks
