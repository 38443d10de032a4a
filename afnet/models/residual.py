"""The residual block every AF backbone is made of, in its dense (training) form.

A block computes ``out = act(shortcut(x) + F(g(x)))``:

- ``g`` is the TSM shift of the branch input (when ``shift_div > 0``) and, in a focal block,
  the per-frame mask: ``F(mask ⊙ shift(x))``, as the released code computes it (every frame
  runs, unselected ones on zeros);
- ``shortcut`` is the identity or a module sequence (pool/conv/BN), or absent
  (``has_residual`` False: MobileNetV3 blocks that change shape);
- ``act`` is a ReLU when ``last_relu``.

A focal block with a spatial mask ``M`` (cells of its output, ``afnet.layers.spatial``) keeps
``F`` at the computed cells and ``F(0)`` elsewhere (the shortcut alone without
``fill_zero_response``). ``F(0)`` is the branch's response to a zero frame under BN's running
statistics: in eval exactly what the sparse engine fills in; in training a detached constant.

Subclasses only build their modules and list them (:meth:`branch_modules`,
:meth:`shortcut_modules`): the inference engine (``afnet.engine``) folds exactly these lists,
so the dense and the sparse forms cannot drift apart.

Shapes: ``x`` ``[N*T, C_in, H, W]`` frame-major (row ``n*T + t``); ``mask`` ``[N, T]`` 0/1.
"""

from __future__ import annotations

from types import ModuleType
from typing import List, Optional, Sequence

import torch
import torch.nn as nn

import afnet_kernels.reference as reference_ops
from afnet.ops import shift_frames
from afnet.layers.spatial import upsample_cells

SHIFT_DIV = 8


class ResidualBlock(nn.Module):
    """Base of every residual block (AF-ResNet bottleneck/basic, MobileNetV3 inverted residual).

    Attributes read by the engine: ``shift_div`` (0: no shift), ``num_segments`` (T),
    ``last_relu``, ``has_residual``, ``fill_zero_response`` (focal blocks: unselected frames
    get ``shortcut + F(0)`` as released when True, the shortcut alone when False).
    """

    shift_div: int = 0
    num_segments: int = 1
    last_relu: bool = False
    has_residual: bool = True
    fill_zero_response: bool = True
    #: the attributes above, which an inference plan bakes in (``afnet.engine.signature``).
    plan_settings = ("shift_div", "num_segments", "last_relu", "has_residual", "fill_zero_response")

    def branch_modules(self) -> List[nn.Module]:
        """``F`` as its modules in order (conv, bn, activation, ...)."""
        raise NotImplementedError

    def shortcut_modules(self) -> Optional[List[nn.Module]]:
        """The shortcut's modules, or None for the identity (ignored without ``has_residual``)."""
        raise NotImplementedError

    def forward(
        self,
        x: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        ops: Optional[ModuleType] = None,
        spatial: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Dense form ``[N*T, C_in, H, W] -> [N*T, C_out, H', W']``, differentiable.

        ``mask`` ``[N, T]`` (focal blocks) or None (every frame); ``ops``: the frame ops the
        shift runs on (``afnet.ops.get_ops``; default the pure-PyTorch reference);
        ``spatial`` ``[N*T, Gh, Gw]`` 0/1: the cells of the output computed (None: all).
        """
        y = masked_branch(
            x, self.branch_modules(), mask, num_segments=self.num_segments, shift_div=self.shift_div,
            fill_zero_response=self.fill_zero_response, ops=ops or reference_ops,
        )
        if spatial is not None:
            cells = upsample_cells(spatial, y.shape[-2:]).to(y.dtype)
            y = y * cells
            if self.fill_zero_response:
                y = y + (1 - cells) * self.zero_response(x)
        if self.has_residual:
            shortcut = self.shortcut_modules()
            if shortcut is None:
                y = y + x
            else:
                s = x
                for m in shortcut:
                    s = m(s)
                y = y + s
        return torch.relu(y) if self.last_relu else y

    def zero_response(self, x: torch.Tensor) -> torch.Tensor:
        """``F(0)`` ``[C_out, H', W']`` for frames shaped like ``x``, with BN's running statistics,
        detached (a constant of the weights)."""
        modules = self.branch_modules()
        modes = [m.training for m in modules]
        try:
            with torch.no_grad():
                for m in modules:
                    m.train(False)
                y = x.new_zeros((1,) + tuple(x.shape[1:]))
                for m in modules:
                    y = m(y)
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)
        return y[0]


def masked_branch(
    x: torch.Tensor,
    branch: Sequence[nn.Module],
    mask: Optional[torch.Tensor],
    *,
    num_segments: int,
    shift_div: int,
    fill_zero_response: bool,
    ops: ModuleType = reference_ops,
) -> torch.Tensor:
    """The dense (released) residual branch ``F(mask ⊙ shift(x))``, differentiable.

    ``x`` ``[N*T, C, H, W]``; ``branch``: the modules of ``F`` in order; ``mask`` ``[N, T]`` 0/1 or
    None (every frame); ``shift_div`` 0: no TSM shift. With ``fill_zero_response`` False the
    unselected frames' ``F(0)`` is masked out too, leaving them the shortcut alone.
    """
    y = x if shift_div == 0 else shift_frames(x, num_segments, shift_div, ops)
    if mask is not None:
        frame_mask = mask.reshape(-1, 1, 1, 1).to(y.dtype)
        y = y * frame_mask
    for m in branch:
        y = m(y)
    if mask is not None and not fill_zero_response:
        y = y * frame_mask
    return y


__all__ = ["ResidualBlock", "SHIFT_DIV", "masked_branch"]
