"""AF-MobileNetV3 (large), computing exactly what the released AFNet code computes.

Frames are rows ``n*T + t`` of ``[N*T, C, H, W]``. Every block shifts its input (TSM), whatever
the model's ``shift`` option says, as in the released network. Stages 2 and 3 are AF stages: an
ample branch at half resolution, a focal branch at full resolution whose blocks only see the
frames their navigation module keeps, then dynamic fusion (no ReLU) and one fuse block.

The modules here are the description (:meth:`AFMobileNetV3.describe`); the dense form
interprets it as released, and in eval the inference engine (``afnet.engine``) runs the same
description with folded convolutions on the selected frames only.
Build it with ``afnet.create_model("af_mobilenetv3", ...)``.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from afnet.layers import AdditiveFusion, DynamicFusion, Navigation, check_fusion, temporal_gate
from afnet.models.description import AFStageParts, Block, DescribedBackbone, GlobalPool, Layers, Part
from afnet.models.registry import register_model
from afnet.models.residual import SHIFT_DIV, ResidualBlock

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


class InvertedResidual(ResidualBlock):
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
        self.shift_div = SHIFT_DIV  # every block of the released network shifts
        self.focal = focal
        self.fill_zero_response = fill_zero_response
        self.identity = stride == 1 and inp == oup
        self.has_residual = focal or self.identity
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

    def shortcut_modules(self) -> Optional[List[nn.Module]]:
        return list(self.res_connect) if self.res_connect is not None else None




class AFMobileNetV3(DescribedBackbone):
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
        check_fusion(fusion)
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
                mods.append(temporal_gate(policy, rt, c_in, num_segments, mix_frames=mix_frames, soft=soft_weights))
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

    def describe(self) -> List[Part]:
        """Stem, head and stage-1 blocks, AF stages 2 and 3 (fusion without ReLU), stages 4-5,
        the last conv, the global pool and the classifier: ``[N*T, 3, H, W] -> [N*T, classes]``."""
        stages = [
            AFStageParts(
                gates=tuple(gates), ample=tuple(ample), focal=tuple(focal), transform=None,
                fusion=fusion, fusion_relu=False, fuse=tuple(fuse),
            )
            for gates, ample, focal, fusion, fuse in (
                (self.list_gen2, self.features_stage2_base, self.features_stage2_refine, self.att_gen2,
                 self.features_stage2_fuse),
                (self.list_gen3, self.features_stage3_base, self.features_stage3_refine, self.att_gen3,
                 self.features_stage3_fuse),
            )
        ]
        before = [*self.features_head, *self.features_stage1]
        after = [*self.features_stage4, *self.features_stage5]
        return [
            Layers((self.conv, self.bn, self.act)),
            *(Block(b) for b in before),
            *stages,
            *(Block(b) for b in after),
            Layers((self.conv_last, self.bn_last, self.act_last)),
            GlobalPool(),
            Layers((self.fc,)),
        ]


MOBILENET_OPTIONS = {"mix_frames": False, "fusion": "dynamic", "fill_zero_response": True, "soft_weights": False}


def _check(options) -> None:
    check_fusion(options["fusion"])


@register_model(
    "af_mobilenetv3",
    options=MOBILENET_OPTIONS,
    check=_check,
    unavailable={
        "spatial": "its blocks' squeeze-excitation pools every pixel, so a block cannot compute only some "
        "regions; use an AF-ResNet",
    },
    always_shifts=True,
)
def build_af_mobilenetv3(
    *, num_classes: int, num_segments: int, shift: bool, policy: str, rt: Optional[float], dropout: float,
    **options: Any,
) -> Tuple[nn.Module, None]:
    """AF-MobileNetV3: the classifier sits in the backbone, so the video model has no ``new_fc``.
    ``shift`` is accepted for API parity: this network always shifts. Options: ``mix_frames``,
    ``fusion``, ``fill_zero_response``, ``soft_weights`` (see :class:`AFMobileNetV3`)."""
    return AFMobileNetV3(num_classes, num_segments, dropout=dropout, policy=policy, rt=rt, **options), None
