"""AF-MobileNetV3 (large), computing exactly what the released AFNet code computes.

Frames are rows ``n*T + t`` of ``[N*T, C, H, W]``. Every block shifts its input (TSM), whatever
the model's ``shift`` option says, as in the released network. Stages 2 and 3 are AF stages: an
ample branch at half resolution, a focal branch at full resolution whose blocks only see the
frames their navigation module keeps, then dynamic fusion (no ReLU) and one fuse block.

In eval with ``execution="sparse"`` every conv is BN-folded (cached, see ``afnet.folding``), an
AF stage runs its ample branch and all its gates first (one host sync for the stage's frame
counts), and each focal block gathers its selected frames with the shift fused, runs its convs
on them only and scatters back with its shortcut and the cached ``F(0)`` (``afnet.sparse``).
Build it with ``afnet.create_model("af_mobilenetv3", ...)``.
"""

from __future__ import annotations

from types import ModuleType
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from afnet.folding import CachedInference, fold_sequence, memory_format_of, run_steps
from afnet.layers import AdditiveFusion, DynamicFusion, FixedPolicy, Navigation
from afnet.models.blocks import SHIFT_DIV, all_rows, masked_branch
from afnet.models.tsn import TSN
from afnet.sparse import (
    ExecutionContext,
    FrameSelection,
    cached_zero_response,
    select_stage,
    sparse_residual,
    trusted_indices,
)

# (kernel, expansion, out channels, SE, h-swish, stride) per block, as released.
HEAD = [(3, 1, 16, 0, 0, 1)]
STAGE1 = [(3, 4, 24, 0, 0, 2), (3, 3, 24, 0, 0, 2)]
STAGE2_AMPLE = [(5, 3, 40, 1, 0, 2), (5, 3, 40, 1, 0, 1)]
STAGE2_FOCAL = [(5, 3, 40, 1, 0, 1), (5, 3, 40, 1, 0, 1)]
STAGE2_FUSE = [(5, 3, 40, 1, 0, 2)]
STAGE3_AMPLE = [(3, 6, 80, 0, 1, 2), (3, 2.5, 80, 0, 1, 1), (3, 2.3, 80, 0, 1, 1)]
STAGE3_FOCAL = [(3, 6, 80, 0, 1, 1), (3, 2.5, 80, 0, 1, 1), (3, 2.3, 80, 0, 1, 1)]
STAGE3_FUSE = [(3, 2.3, 80, 0, 1, 1)]
STAGE4 = [(3, 6, 112, 1, 1, 1), (3, 6, 112, 1, 1, 1)]
STAGE5 = [(5, 6, 160, 1, 1, 2), (5, 6, 160, 1, 1, 1), (5, 6, 160, 1, 1, 1)]
LAST_CHANNELS = 960
HIDDEN_FC = 1280


def make_divisible(v: float, divisor: int = 8) -> int:
    """Nearest multiple of ``divisor``, at least ``divisor``, never below 90% of ``v``."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class SqueezeExcite(nn.Module):
    """``x · h_sigmoid(fc(mean_hw(x)))``; ``fc = Linear(C, make_divisible(C//4)) → ReLU → Linear``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = make_divisible(channels // 4)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.hardsigmoid(self.fc(x.mean(dim=(2, 3))))
        return x * y[:, :, None, None]

    @staticmethod
    def paper_flops(x: torch.Tensor) -> int:
        """The released counter's cost of this layer per frame of ``x`` ``[B, C, H, W]``:
        ``c·h·w + 2·(c²//4) + c`` (pooling, both FCs as if C/4 wide, the scaling)."""
        c, h, w = x.shape[1:]
        return c * h * w + (c * c // 4) * 2 + c



class InvertedResidual(CachedInference):
    """MobileNetV3 block over frames ``[N*T, C, H, W]``; every block shifts its input (TSM).

    Ample-type (``focal=False``): ``F(shift(x))``, plus ``x`` when stride 1 and in = out.
    Focal (``focal=True``): ``shortcut(x) + F(mask ⊙ shift(x))`` with groups = 2 on the pointwise
    convs; the shortcut is the identity or ``res_connect = [conv1x1 groups=2 stride s, BN]``.
    ``F`` with expansion: pw → BN → act → dw → BN → SE → act → pw → BN; without (hidden = in):
    dw → BN → act → SE → pw → BN. act is h-swish or ReLU.

    Args:
        fill_zero_response: focal only: unselected frames get ``shortcut + F(0)`` (released)
            when True, the shortcut alone (paper) when False.
    """

    def __init__(
        self,
        inp: int,
        hidden: int,
        oup: int,
        kernel_size: int,
        stride: int,
        use_se: bool,
        use_hs: bool,
        *,
        num_segments: int,
        focal: bool = False,
        fill_zero_response: bool = True,
    ) -> None:
        super().__init__()
        self.num_segments = num_segments
        self.focal = focal
        self.fill_zero_response = fill_zero_response
        self.identity = stride == 1 and inp == oup
        pw_groups = 2 if focal else 1
        self.res_connect = (
            nn.Sequential(nn.Conv2d(inp, oup, 1, stride, 0, groups=2, bias=False), nn.BatchNorm2d(oup))
            if focal and not self.identity
            else None
        )
        self.expand = inp != hidden
        dw = nn.Conv2d(hidden, hidden, kernel_size, stride, (kernel_size - 1) // 2, groups=hidden, bias=False)
        self.act = nn.Hardswish() if use_hs else nn.ReLU()
        if self.expand:
            self.conv1 = nn.Conv2d(inp, hidden, 1, bias=False, groups=pw_groups)
            self.bn1 = nn.BatchNorm2d(hidden)
            self.conv2 = dw
            self.bn2 = nn.BatchNorm2d(hidden)
            self.se = SqueezeExcite(hidden) if use_se else nn.Identity()
            self.conv3 = nn.Conv2d(hidden, oup, 1, bias=False, groups=pw_groups)
            self.bn3 = nn.BatchNorm2d(oup)
        else:
            self.conv1 = dw
            self.bn1 = nn.BatchNorm2d(hidden)
            self.se = SqueezeExcite(hidden) if use_se else nn.Identity()
            self.conv2 = nn.Conv2d(hidden, oup, 1, bias=False, groups=pw_groups)
            self.bn2 = nn.BatchNorm2d(oup)

    def branch_modules(self) -> List[nn.Module]:
        """``F`` as a module sequence (what BN folding walks)."""
        if self.expand:
            return [self.conv1, self.bn1, self.act, self.conv2, self.bn2, self.se, self.act, self.conv3, self.bn3]
        return [self.conv1, self.bn1, self.act, self.se, self.conv2, self.bn2]

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Dense, differentiable form; ``mask`` ``[N, T]`` 0/1 for focal blocks."""
        y = masked_branch(
            x, self.branch_modules(), mask,
            num_segments=self.num_segments, shift_div=SHIFT_DIV, fill_zero_response=self.fill_zero_response,
        )
        if self.res_connect is not None:
            return y + self.res_connect(x)
        return y + x if self.identity else y

    def _folded(self, fmt: torch.memory_format):
        values = self.inference_values()
        key = ("folded", fmt)
        if key not in values:
            shortcut = fold_sequence(list(self.res_connect), fmt) if self.res_connect is not None else None
            values[key] = (fold_sequence(self.branch_modules(), fmt), shortcut)
        return values, values[key]

    @torch.no_grad()
    def infer(self, x: torch.Tensor, ops: ModuleType, selection: Optional[FrameSelection] = None) -> torch.Tensor:
        """Eval form with BN folded; with ``selection`` only the selected frames run ``F``
        (gather with the shift fused, scatter with shortcut and ``F(0)`` fill fused)."""
        values, (branch_steps, shortcut_steps) = self._folded(memory_format_of(x))

        def branch(z: torch.Tensor) -> torch.Tensor:
            return run_steps(branch_steps, z)

        if shortcut_steps is not None:
            shortcut = run_steps(shortcut_steps, x)
        else:
            shortcut = x if self.identity else None
        if selection is None:
            y = branch(ops.gather_frames(x, all_rows(x), self.num_segments, SHIFT_DIV))
            return y if shortcut is None else y.add_(shortcut)
        fill = cached_zero_response(values, branch, x) if self.fill_zero_response else None
        return sparse_residual(
            x, selection, branch, shortcut, fill=fill, relu=False, ops=ops, shift_div=SHIFT_DIV
        )


FUSIONS = ("dynamic", "additive")


class AFMobileNetV3(CachedInference):
    """AF-MobileNetV3 (large) backbone with its classifier: frames ``[N*T, 3, H, W]`` ->
    (per-frame logits ``[N*T, num_classes]``, masks: 5 float 0/1 ``[N, T]`` in forward order).

    Args:
        num_classes: classifier outputs.
        num_segments: T.
        dropout: inside the classifier (released 0.5).
        mix_frames: navigation mixes all T frames (paper Eq. 3) instead of groups = T (released).
        fusion: ``"dynamic"`` (released) or ``"additive"`` (paper Table 8).
        fill_zero_response: unselected frames get ``shortcut + F(0)`` (released) or the shortcut only.
        soft_weights: navigation learns soft frame weights (paper Table 1); dense execution only.
        policy, rt: ``"navigation"`` or a fixed policy (``random``/``uniform``/``normal``) at ratio rt.
    """

    def __init__(
        self,
        num_classes: int,
        num_segments: int,
        *,
        dropout: float = 0.5,
        mix_frames: bool = False,
        fusion: str = "dynamic",
        fill_zero_response: bool = True,
        soft_weights: bool = False,
        policy: str = "navigation",
        rt: Optional[float] = None,
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.num_segments = num_segments
        self._channels = make_divisible(16)

        def blocks(cfgs: Sequence[tuple], focal: bool = False, inp: Optional[int] = None) -> nn.Sequential:
            c_in = self._channels if inp is None else inp
            layers = []
            for k, t, c, se, hs, s in cfgs:
                out = make_divisible(c)
                layers.append(
                    InvertedResidual(
                        c_in, make_divisible(c_in * t), out, k, s, bool(se), bool(hs),
                        num_segments=num_segments, focal=focal, fill_zero_response=fill_zero_response,
                    )
                )
                c_in = out
            self._channels = c_in
            return nn.Sequential(*layers)

        def gates(cfgs: Sequence[tuple]) -> nn.ModuleList:
            c_in, mods = self._channels, []
            for cfg in cfgs:
                if policy == "navigation":
                    mods.append(Navigation(c_in, num_segments, mix_frames=mix_frames, soft=soft_weights))
                else:
                    mods.append(FixedPolicy(policy, rt, num_segments))
                c_in = make_divisible(cfg[2])
            return nn.ModuleList(mods)

        def fusion_module(c: int) -> nn.Module:
            return DynamicFusion(c, reduction=16, bias=True) if fusion == "dynamic" else AdditiveFusion()

        # Registration order = the released state_dict order.
        self.conv = nn.Conv2d(3, self._channels, 3, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(self._channels)
        self.act = nn.Hardswish()
        self.features_head = blocks(HEAD)
        self.features_stage1 = blocks(STAGE1)
        stage_in = self._channels
        self.list_gen2 = gates(STAGE2_AMPLE)
        self.features_stage2_base = blocks(STAGE2_AMPLE)
        self.features_stage2_refine = blocks(STAGE2_FOCAL, focal=True, inp=stage_in)
        self.features_stage2_fuse = blocks(STAGE2_FUSE)
        self.att_gen2 = fusion_module(self._channels)
        stage_in = self._channels
        self.list_gen3 = gates(STAGE3_AMPLE)
        self.features_stage3_base = blocks(STAGE3_AMPLE)
        self.features_stage3_refine = blocks(STAGE3_FOCAL, focal=True, inp=stage_in)
        self.features_stage3_fuse = blocks(STAGE3_FUSE)
        self.att_gen3 = fusion_module(self._channels)
        self.features_stage4 = blocks(STAGE4)
        self.features_stage5 = blocks(STAGE5)
        last = LAST_CHANNELS
        self.conv_last = nn.Conv2d(self._channels, last, 1, bias=False)
        self.bn_last = nn.BatchNorm2d(last)
        self.act_last = nn.Hardswish()
        self.fc = nn.Sequential(
            nn.Linear(last, HIDDEN_FC), nn.Hardswish(), nn.Dropout(dropout), nn.Linear(HIDDEN_FC, num_classes)
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """Released initialization: convs ``N(0, 2/(k²·C_out))``, BN 1/0, linears ``N(0, 0.01²)``/0;
        the navigation bias keeps every frame selected."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, Navigation):
                m.reset_gate_bias()

    def af_stages(self) -> Tuple[Tuple[nn.ModuleList, nn.Sequential, nn.Sequential, nn.Module, nn.Sequential], ...]:
        """(gates, ample, focal, fusion, fuse) of stages 2 and 3."""
        return (
            (self.list_gen2, self.features_stage2_base, self.features_stage2_refine, self.att_gen2,
             self.features_stage2_fuse),
            (self.list_gen3, self.features_stage3_base, self.features_stage3_refine, self.att_gen3,
             self.features_stage3_fuse),
        )

    def plain_blocks(self, before: bool) -> List[InvertedResidual]:
        """Ample-type blocks before (head, stage 1) or after (stages 4, 5) the AF stages."""
        parts = (self.features_head, self.features_stage1) if before else (self.features_stage4, self.features_stage5)
        return [b for part in parts for b in part]

    def forward(self, x: torch.Tensor, ctx: ExecutionContext) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """``x`` ``[N*T, 3, H, W]`` -> (per-frame logits ``[N*T, classes]``, masks ``[N, T]``)."""
        binary = all(g.is_binary for g in list(self.list_gen2) + list(self.list_gen3))
        if ctx.sparse and binary:
            with torch.no_grad(), trusted_indices(ctx.ops):
                return self._infer(x, ctx)
        return self._dense(x, ctx)

    def _dense(self, x: torch.Tensor, ctx: ExecutionContext) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        x = self.act(self.bn(self.conv(x)))
        for b in self.plain_blocks(before=True):
            x = b(x)
        masks: List[torch.Tensor] = []
        for gates, ample, focal, fusion, fuse in self.af_stages():
            base, refine = x, x
            for gate, ample_block, focal_block in zip(gates, ample, focal):
                masks.append(ctx.gate_mask(gate, base))
                base = ample_block(base)
                refine = focal_block(refine, masks[-1])
            x = fuse[0](fusion(base, refine, relu=False, ops=ctx.dense_ops))
        for b in self.plain_blocks(before=False):
            x = b(x)
        x = self.act_last(self.bn_last(self.conv_last(x)))
        return self.fc(x.mean(dim=(2, 3))), masks

    def _folded_ends(self, fmt: torch.memory_format):
        values = self.inference_values(self.conv, self.bn, self.conv_last, self.bn_last)
        key = ("ends", fmt)
        if key not in values:
            values[key] = (
                fold_sequence([self.conv, self.bn, self.act], fmt),
                fold_sequence([self.conv_last, self.bn_last, self.act_last], fmt),
            )
        return values[key]

    def _infer(self, x: torch.Tensor, ctx: ExecutionContext) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        stem, head = self._folded_ends(memory_format_of(x))
        x = run_steps(stem, x)
        for b in self.plain_blocks(before=True):
            x = b.infer(x, ctx.ops)
        masks: List[torch.Tensor] = []
        for gates, ample, focal, fusion, fuse in self.af_stages():
            # Masks depend on the ample branch only: run it first, then read every K of the
            # stage in one host sync before the focal blocks need them.
            base, stage_masks = x, []
            for gate, ample_block in zip(gates, ample):
                stage_masks.append(ctx.gate_mask(gate, base))
                base = ample_block.infer(base, ctx.ops)
            refine = x
            for focal_block, selection in zip(focal, select_stage(stage_masks, ctx.ops)):
                refine = focal_block.infer(refine, ctx.ops, selection)
            x = fuse[0].infer(fusion(base, refine, relu=False, ops=ctx.ops), ctx.ops)
            masks += stage_masks
        for b in self.plain_blocks(before=False):
            x = b.infer(x, ctx.ops)
        x = run_steps(head, x)
        return self.fc(x.mean(dim=(2, 3))), masks


MOBILENET_OPTIONS = ("mix_frames", "fusion", "fill_zero_response", "soft_weights")


def create_af_mobilenetv3(
    *,
    num_classes: int,
    num_segments: int,
    shift: bool = True,
    policy: str = "navigation",
    rt: Optional[float] = None,
    dropout: float = 0.5,
    **options,
) -> TSN:
    """AF-MobileNetV3 video model (TSN over the backbone; the classifier sits in the backbone,
    so there is no ``new_fc``). ``shift`` is accepted for API parity: this network always shifts.

    Options: ``mix_frames``, ``fusion``, ``fill_zero_response``, ``soft_weights`` (see
    :class:`AFMobileNetV3`).
    """
    unknown = sorted(set(options) - set(MOBILENET_OPTIONS))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for af_mobilenetv3; valid: {MOBILENET_OPTIONS}")
    backbone = AFMobileNetV3(num_classes, num_segments, dropout=dropout, policy=policy, rt=rt, **options)
    return TSN(backbone, num_segments=num_segments, num_classes=None, arch="af_mobilenetv3")
