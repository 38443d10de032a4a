"""FLOPs per video of an AF model for the masks it actually uses.

Two numbers (:class:`FlopCount`), both in GFLOPs per video:

- ``paper``: the released counter's convention (multiply–accumulates called FLOPs):
  conv ``c_in·c_out·h·w·k²/groups``; linear ``in·out``; 3x3 average/max pools ``9·`` their
  output elements; navigation adds its pooling ``c·h·w``; dynamic fusion adds ``c·h·w + c``
  (its two FCs count as linears); focal convs are scaled by the block's fraction of selected
  frames (with spatial navigation, by the share of output pixels in computed cells of selected
  frames); BN, ReLU, shift and upsampling count zero, and so does ``F(0)``, a constant of the
  weights that the dense spatial form recomputes per call. The released video models replaced
  ``fc`` by dropout, so their counter adds ``C·C`` per frame for the head (C = feature width)
  and never counts ``new_fc``; we reproduce that.
- ``executed``: multiply–accumulates of the convolutions and linears the inference engine
  really ran, read from the MAC counter of a sparse pass of the frozen model (``afnet.freeze``):
  focal convs on the K selected frames only (their shortcut on every frame), the zero response
  ``F(0)`` being cached; pools and element-wise ops not counted. A model that cannot run
  sparse (soft-weight navigation) executes every conv densely, and is counted so.

Both passes run on a private copy of the model: the user's model, its mode and its settings are
left as they are (another thread may be running it).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from afnet.engine import MacCounter, freeze
from afnet.engine.budget import frames_per_module
from afnet.layers import DynamicFusion, Navigation
from afnet.layers.spatial import upsample_cells
from afnet.models import TSN
from afnet.models.residual import ResidualBlock

__all__ = ["FlopCount", "count_flops"]

_FOCAL_BLOCK = re.compile(r"^(.*refine[^.]*\.\d+)\.")


@dataclass(frozen=True)
class FlopCount:
    """GFLOPs per video: ``paper`` (released counter's convention) and ``executed`` (sparse path MACs)."""

    paper: float
    executed: float

    def __float__(self) -> float:
        return self.paper


def _conv_macs(m: nn.Conv2d, out: torch.Tensor) -> float:
    k = m.kernel_size[0] * m.kernel_size[1]
    # c_in·c_out·h·w·k²/groups for one row of the output batch.
    return m.in_channels * k / m.groups * out[0].numel()


def _module_macs(module: nn.Module, out: torch.Tensor) -> float:
    """MACs of an ``nn.Conv2d`` or ``nn.Linear`` call that produced ``out`` (all rows)."""
    if isinstance(module, nn.Conv2d):
        return _conv_macs(module, out) * out.shape[0]
    return module.in_features * module.out_features * (out.numel() / out.shape[-1])


@torch.no_grad()
def count_flops(
    model: TSN,
    video: torch.Tensor,
    masks: Optional[List[torch.Tensor]] = None,
    spatial_masks: Optional[List[torch.Tensor]] = None,
) -> FlopCount:
    """Count the FLOPs of ``model`` on ``video`` ``[N, T, 3, H, W]``, per video.

    A private copy of the model runs in eval mode with the model's settings (its navigation
    decides the masks unless ``masks`` forces them; its frame budget applies): once densely,
    where every layer's shape is seen, for the paper convention, and once frozen with the
    inference engine, whose MAC counter gives the executed count. ``model`` is not changed. With
    forced ``masks`` (``spatial_masks``) the navigation does not run, so neither count includes
    it (about 1e-6 of the total).
    """
    if not isinstance(model, TSN):
        raise TypeError(
            f"count_flops needs the model (afnet.create_model), got {type(model).__name__}: the paper count "
            "reads the layers a frozen model no longer has"
        )
    work = copy.deepcopy(model).eval()
    n = video.shape[0]
    names = {m: name for name, m in work.named_modules()}
    fraction: Dict[str, float] = {}
    paper = [0.0]
    module_macs = [0.0]
    hooks = []

    def focal_prefix(module: nn.Module) -> Optional[str]:
        match = _FOCAL_BLOCK.match(names[module])
        if match is None or ".downsample" in names[module] or "res_connect" in names[module]:
            return None
        return match.group(1)

    def on_focal_block(module: nn.Module, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("mask", args[1] if len(args) > 1 else None)
        if mask is None:
            return
        kept = (mask > 0.5).double().reshape(-1)
        cells = kwargs.get("spatial")
        if cells is not None:  # the share of each frame's output pixels in computed cells
            pixels = upsample_cells((cells > 0.5).double(), args[0].shape[-2:])
            kept = kept * pixels.mean(dim=(1, 2, 3))
        fraction[names[module]] = float(kept.mean())

    # A spatial focal block's dense form recomputes F(0) on one zero frame per call
    # (ResidualBlock.zero_response): a constant of the weights, which the engine caches, not
    # per-video work. Its convs are not counted (they ran on 1 row whatever N: the count per
    # video would depend on the batch).
    in_zero_response = [False]

    def uncounted(zero_response):
        def run(x: torch.Tensor) -> torch.Tensor:
            in_zero_response[0] = True
            try:
                return zero_response(x)
            finally:
                in_zero_response[0] = False

        return run

    for m in work.modules():
        if isinstance(m, ResidualBlock):
            m.zero_response = uncounted(m.zero_response)  # on the private copy only

    def on_conv(module: nn.Conv2d, inputs: tuple, out: torch.Tensor) -> None:
        if in_zero_response[0]:
            return
        macs = _module_macs(module, out) / n
        prefix = focal_prefix(module)
        paper[0] += macs * (fraction.get(prefix, 1.0) if prefix is not None else 1.0)
        module_macs[0] += macs

    def on_linear(module: nn.Linear, inputs: tuple, out: torch.Tensor) -> None:
        macs = _module_macs(module, out) / n
        module_macs[0] += macs
        if names[module] != "new_fc":
            paper[0] += macs

    def on_pool(module: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        paper[0] += 9 * out.numel() / n

    def on_navigation(module: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        paper[0] += inputs[0].numel() / n

    def on_fusion(module: nn.Module, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
        focal = args[1] if len(args) > 1 else kwargs["focal"]
        paper[0] += (focal.numel() + focal.shape[0] * focal.shape[1]) / n

    for name, m in work.named_modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(on_conv))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(on_linear))
        elif isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
            hooks.append(m.register_forward_hook(on_pool))
        elif isinstance(m, Navigation):
            hooks.append(m.register_forward_hook(on_navigation))
        elif isinstance(m, DynamicFusion):
            hooks.append(m.register_forward_hook(on_fusion, with_kwargs=True))
        if re.fullmatch(r".*refine[^.]*\.\d+", name):
            hooks.append(m.register_forward_pre_hook(on_focal_block, with_kwargs=True))

    settings = getattr(work, "settings", None)
    gates = work.gates()
    budget = frames_per_module(settings.frame_budget, work.num_segments, len(gates.temporal)) if settings else None
    work.run_dense(video, masks=masks, spatial_masks=spatial_masks, frame_budget=budget,
                   cell_budget=settings.cell_budget if settings else None)
    for h in hooks:
        h.remove()
    dense_paper, executed = paper[0], module_macs[0]
    if all(getattr(g, "is_binary", True) for g in gates.temporal):
        counter = MacCounter()
        frozen = freeze(work, execution="sparse")
        # The engine's folded convs are counted by its MAC counter; the modules it runs as they
        # are (gates, fusion, squeeze-excitation, the classifier) by hooks on their layers.
        unfolded = [0.0]

        def on_unfolded(module: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
            unfolded[0] += _module_macs(module, out) / n

        hooks = [
            m.register_forward_hook(on_unfolded)
            for top in frozen.unfolded_modules()
            for m in top.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))
        ]
        frozen.run(video, masks=masks, spatial_masks=spatial_masks, counter=counter)
        for h in hooks:
            h.remove()
        executed = unfolded[0] + counter.macs / n

    new_fc = getattr(work, "new_fc", None)
    if isinstance(new_fc, nn.Linear):
        # The released video counter's head: a C x C "fc" per frame, new_fc never counted.
        dense_paper += new_fc.in_features**2 * video.shape[1]
    return FlopCount(paper=dense_paper / 1e9, executed=executed / 1e9)
