"""AF-ResNet backbones (Bottleneck: AF-ResNet50/101; BasicBlock: AF-ResNet18/34).

Structure and key names follow the released code (``../shared/docs/afnet-reference.md``):
stem ``conv1``/``bn1``/max-pool, three AF stages ``layer1..3`` and plain ``layer4``.
An AF stage (:class:`AFStage`) has ``n = blocks - 1`` navigation modules ``list_gen``,
ample blocks ``base_module`` (width ``out // alpha``, half resolution), focal blocks
``refine_module`` (full width, grouped convs, selected frames only), ``base_transform``,
the fusion ``att_gen`` and one fusion block ``fusion.0``.

The backbone maps frames ``[N*T, 3, H, W]`` to pooled features ``[N*T, C]`` and the masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from afnet.folding import CachedInference, fold_sequence, memory_format_of, run_steps
from afnet.layers import AdditiveFusion, DynamicFusion, FixedPolicy, Navigation
from afnet.models.blocks import SHIFT_DIV, block_type, conv1x1, make_shortcut
from afnet.sparse import ExecutionContext, select_stage, trusted_indices

# depth -> (block, blocks per stage)
RESNET_DEPTHS: Dict[int, Tuple[str, Tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (4, 8, 18, 3)),
}
FUSIONS = ("dynamic", "additive")


@dataclass(frozen=True)
class StageOptions:
    """Options shared by the three AF stages of an AF-ResNet.

    Attributes:
        shift: TSM in every block's residual branch.
        alpha: ample width divisor.
        focal_groups: groups of the focal convs.
        mix_frames: navigation mixes all T frames (paper Eq. 3) instead of groups = T.
        fusion: ``"dynamic"`` (released) or ``"additive"`` (paper Table 8).
        fill_zero_response: unselected frames get ``shortcut + F(0)`` (released) or the residual only.
        policy, rt: ``"navigation"`` or a fixed policy (``random``/``uniform``/``normal``) at ratio rt.
    """

    shift: bool = False
    alpha: int = 2
    focal_groups: int = 2
    mix_frames: bool = False
    fusion: str = "dynamic"
    fill_zero_response: bool = True
    policy: str = "navigation"
    rt: Optional[float] = None

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")


class AFStage(CachedInference):
    """One AF module: ``[N*T, C_in, H, W] -> [N*T, C_out, H/stride, W/stride]`` plus ``n`` masks.

    Args:
        block: ``"bottleneck"`` or ``"basic"``.
        in_channels, out_channels, num_blocks, stride: as in the released ``(in, out, blocks, stride)``.
        num_segments: T.
        options: see :class:`StageOptions`.
    """

    def __init__(
        self,
        block: str,
        in_channels: int,
        out_channels: int,
        num_blocks: int,
        stride: int,
        *,
        num_segments: int,
        options: StageOptions = StageOptions(),
    ) -> None:
        super().__init__()
        if num_blocks < 2:
            raise ValueError(f"an AF stage needs at least 2 blocks, got {num_blocks}")
        Block = block_type(block)
        n = num_blocks - 1
        ample = out_channels // options.alpha
        shift_div = SHIFT_DIV if options.shift else 0
        common = dict(shift_div=shift_div, num_segments=num_segments)

        def gate(c: int) -> nn.Module:
            if options.policy == "navigation":
                return Navigation(c, num_segments, mix_frames=options.mix_frames)
            return FixedPolicy(options.policy, options.rt, num_segments)

        self.list_gen = nn.ModuleList(gate(in_channels if i == 0 else ample) for i in range(n))
        self.base_module = nn.ModuleList(
            Block(
                in_channels if i == 0 else ample,
                ample,
                stride=2 if i == 0 else 1,
                downsample=make_shortcut(in_channels, ample, 2, pool_first=True) if i == 0 else None,
                last_relu=i < n - 1,
                **common,
            )
            for i in range(n)
        )
        self.refine_module = nn.ModuleList(
            Block(
                in_channels if i == 0 else out_channels,
                out_channels,
                groups=options.focal_groups,
                downsample=make_shortcut(in_channels, out_channels, 1, pool_first=False) if i == 0 else None,
                last_relu=i < n - 1,
                fill_zero_response=options.fill_zero_response,
                **common,
            )
            for i in range(n)
        )
        self.base_transform = (
            nn.Sequential(conv1x1(ample, out_channels), nn.BatchNorm2d(out_channels)) if options.alpha != 1 else None
        )
        self.att_gen = DynamicFusion(out_channels) if options.fusion == "dynamic" else AdditiveFusion()
        self.fusion = nn.ModuleList(
            [
                Block(
                    out_channels,
                    out_channels,
                    stride=stride,
                    downsample=make_shortcut(out_channels, out_channels, stride, pool_first=True),
                    **common,
                )
            ]
        )

    def forward(self, x: torch.Tensor, ctx: ExecutionContext) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """``x`` ``[N*T, C_in, H, W]`` -> (``[N*T, C_out, H', W']``, masks ``[N, T]`` float 0/1)."""
        binary = all(getattr(g, "is_binary", True) for g in self.list_gen)
        if ctx.sparse and binary:
            return self._infer(x, ctx)
        base, refine, masks = x, x, []
        for gate, ample_block, focal_block in zip(self.list_gen, self.base_module, self.refine_module):
            masks.append(ctx.gate_mask(gate, base))
            base = ample_block(base)
            refine = focal_block(refine, masks[-1])
        if self.base_transform is not None:
            base = self.base_transform(base)
        out = self.att_gen(base, refine, relu=True, ops=ctx.dense_ops)
        return self.fusion[0](out), masks

    @torch.no_grad()
    def _infer(self, x: torch.Tensor, ctx: ExecutionContext) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        # Every mask only depends on the ample branch, so the ample branch runs first and the
        # stage's K's are read in one host sync before any focal block needs them.
        base, masks = x, []
        for gate, ample_block in zip(self.list_gen, self.base_module):
            masks.append(ctx.gate_mask(gate, base))
            base = ample_block.infer(base, ctx.ops)
        selections = select_stage(masks, ctx.ops)
        refine = x
        for focal_block, selection in zip(self.refine_module, selections):
            refine = focal_block.infer(refine, ctx.ops, selection)
        if self.base_transform is not None:
            fmt = memory_format_of(base)
            values = self.inference_values(self.base_transform)
            steps = values.get(fmt)
            if steps is None:
                steps = values[fmt] = fold_sequence(list(self.base_transform), fmt)
            base = run_steps(steps, base)
        out = self.att_gen(base, refine, relu=True, ops=ctx.ops)
        return self.fusion[0].infer(out, ctx.ops), masks


class AFResNet(CachedInference):
    """AF-ResNet backbone: frames ``[N*T, 3, H, W]`` -> (features ``[N*T, 512·expansion]``, masks).

    Args:
        depth: 18, 34, 50 or 101.
        num_segments: T.
        options: the fields of :class:`StageOptions` (``shift`` also applies to ``layer4``).
    """

    def __init__(self, depth: int = 50, *, num_segments: int, **options: Any) -> None:
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"depth must be one of {sorted(RESNET_DEPTHS)}, got {depth!r}")
        stage_options = StageOptions(**options)
        block, layers = RESNET_DEPTHS[depth]
        expansion = block_type(block).expansion
        self.num_segments = num_segments
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stage = dict(num_segments=num_segments, options=stage_options)
        widths = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
        self.layer1 = AFStage(block, 64, widths[0], layers[0], 2, **stage)
        self.layer2 = AFStage(block, widths[0], widths[1], layers[1], 2, **stage)
        self.layer3 = AFStage(block, widths[1], widths[2], layers[2], 1, **stage)
        Block = block_type(block)
        shift_div = SHIFT_DIV if stage_options.shift else 0
        self.layer4 = nn.Sequential(
            *(
                Block(
                    widths[2] if i == 0 else widths[3],
                    widths[3],
                    stride=2 if i == 0 else 1,
                    downsample=make_shortcut(widths[2], widths[3], 2, pool_first=True) if i == 0 else None,
                    shift_div=shift_div,
                    num_segments=num_segments,
                )
                for i in range(layers[3])
            )
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = widths[3]
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Ample-type blocks (ample, fusion, layer4) start as identities: last BN weight 0.
        for stage in (self.layer1, self.layer2, self.layer3):
            for b in list(stage.base_module) + list(stage.fusion):
                nn.init.zeros_(b.branch_modules()[-1].weight)
        for b in self.layer4:
            nn.init.zeros_(b.branch_modules()[-1].weight)
        for m in self.modules():
            if isinstance(m, Navigation):
                m.reset_gate_bias()

    def stages(self) -> Sequence[AFStage]:
        return (self.layer1, self.layer2, self.layer3)

    def forward(self, x: torch.Tensor, ctx: ExecutionContext) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """``x`` ``[N*T, 3, H, W]`` -> (features ``[N*T, C]``, masks: list of ``[N, T]`` float 0/1)."""
        if ctx.sparse:
            with torch.no_grad(), trusted_indices(ctx.ops):
                return self._run(x, ctx)
        return self._run(x, ctx)

    def _stem(self, x: torch.Tensor, ctx: ExecutionContext) -> torch.Tensor:
        if not ctx.sparse:
            return self.maxpool(self.relu(self.bn1(self.conv1(x))))
        fmt = memory_format_of(x)
        values = self.inference_values(self.conv1, self.bn1)
        steps = values.get(fmt)
        if steps is None:
            steps = values[fmt] = fold_sequence([self.conv1, self.bn1, self.relu, self.maxpool], fmt)
        return run_steps(steps, x)

    def _run(self, x: torch.Tensor, ctx: ExecutionContext) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        x = self._stem(x, ctx)
        masks: List[torch.Tensor] = []
        for stage in self.stages():
            x, stage_masks = stage(x, ctx)
            masks += stage_masks
        for b in self.layer4:
            x = b.infer(x, ctx.ops) if ctx.sparse else b(x)
        return torch.flatten(self.avgpool(x), 1), masks

