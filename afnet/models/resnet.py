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

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from afnet.models.decisions import Decisions
from afnet.layers import (
    SPATIAL_POLICIES,
    AdditiveFusion,
    DynamicFusion,
    Navigation,
    SpatialNavigation,
    SpatialPolicy,
    check_fusion,
    is_ratio,
    temporal_gate,
)
from afnet.models.blocks import block_type, conv1x1, make_shortcut
from afnet.models.description import (
    AFStageParts,
    Block,
    DescribedBackbone,
    FrameGate,
    GlobalPool,
    Layers,
    Part,
    SharedGate,
    run_dense_stage,
)
from afnet.models.registry import is_int, register_model
from afnet.models.residual import SHIFT_DIV

# depth -> (block, blocks per stage)
RESNET_DEPTHS: Dict[int, Tuple[str, Tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (4, 8, 18, 3)),
}
# Cells per side of the spatial grid in layer1..3. At 224 px the cells are 14, 7 and 7 px: large
# enough that the 1-px halo of the 3x3 conv costs little (2-px cells pay 4x the 1x1 work).
DEFAULT_GRIDS = (4, 4, 2)


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
        soft_weights: navigation learns soft frame weights (paper Table 1); dense execution only.
        policy, rt: ``"navigation"`` or a fixed policy (``random``/``uniform``/``normal``) at ratio rt.
        spatial: spatial navigation of every focal block (paper §3.3, ``afnet.layers.spatial``).
        spatial_policy, rs: ``"navigation"`` or a fixed ``random``/``center`` policy at ratio rs.
        grids: the cell grid ``G`` of each of the three stages.
        first_layer_navigation: one temporal navigation after the stem decides the frames of every
            focal block (the paper's ActivityNet variant with spatial navigation, §4.1).
    """

    shift: bool = False
    alpha: int = 2
    focal_groups: int = 2
    mix_frames: bool = False
    fusion: str = "dynamic"
    fill_zero_response: bool = True
    soft_weights: bool = False
    policy: str = "navigation"
    rt: Optional[float] = None
    spatial: bool = False
    spatial_policy: str = "navigation"
    rs: Optional[float] = None
    grids: Tuple[int, int, int] = DEFAULT_GRIDS
    first_layer_navigation: bool = False

    def __post_init__(self) -> None:
        check_fusion(self.fusion)


class AFStage(nn.Module):
    """One AF module: ``[N*T, C_in, H, W] -> [N*T, C_out, H/stride, W/stride]`` plus ``n`` masks.

    Args:
        block: ``"bottleneck"`` or ``"basic"``.
        in_channels, out_channels, num_blocks, stride: as in the released ``(in, out, blocks, stride)``.
        num_segments: T.
        options: see :class:`StageOptions`.
        grid: this stage's spatial grid (with ``options.spatial``).
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
        grid: int = 1,
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
            if options.first_layer_navigation:
                return SharedGate(num_segments)
            return temporal_gate(
                options.policy, options.rt, c, num_segments, mix_frames=options.mix_frames, soft=options.soft_weights
            )

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
        if options.spatial:

            def spatial_gate(c: int) -> nn.Module:
                if options.spatial_policy == "navigation":
                    return SpatialNavigation(c, grid)
                return SpatialPolicy(options.spatial_policy, options.rs, grid)

            # Spatial gates read what the temporal gates read: the input of ample block i.
            self.spatial_gen = nn.ModuleList(spatial_gate(in_channels if i == 0 else ample) for i in range(n))
        else:
            self.spatial_gen = None

    def parts(self) -> AFStageParts:
        """The stage's modules, as both interpreters read them."""
        return AFStageParts(
            gates=tuple(self.list_gen),
            ample=tuple(self.base_module),
            focal=tuple(self.refine_module),
            transform=tuple(self.base_transform) if self.base_transform is not None else None,
            fusion=self.att_gen,
            fusion_relu=True,
            fuse=tuple(self.fusion),
            spatial_gates=tuple(self.spatial_gen) if self.spatial_gen is not None else None,
        )

    def forward(self, x: torch.Tensor, ctx: Decisions) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Dense form: ``x`` ``[N*T, C_in, H, W]`` -> (``[N*T, C_out, H', W']``, masks ``[N, T]``)."""
        return run_dense_stage(self.parts(), x, ctx)


class AFResNet(DescribedBackbone):
    """AF-ResNet backbone: frames ``[N*T, 3, H, W]`` -> (features ``[N*T, 512·expansion]``, masks).

    ``forward`` is the dense, differentiable computation (``afnet.models.description``); the
    inference engine runs the same description sparsely.

    Args:
        depth: 18, 34, 50 or 101.
        num_segments: T.
        options: the fields of :class:`StageOptions` (``shift`` also applies to ``layer4``);
            ``grid`` (one G, or one per stage) sets ``grids``.
    """

    def __init__(self, depth: int = 50, *, num_segments: int, **options: Any) -> None:
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"depth must be one of {sorted(RESNET_DEPTHS)}, got {depth!r}")
        grid = options.pop("grid", None)
        if grid is not None:
            options["grids"] = (grid,) * 3 if isinstance(grid, int) else tuple(grid)
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
        grids = stage_options.grids
        self.layer1 = AFStage(block, 64, widths[0], layers[0], 2, grid=grids[0], **stage)
        self.layer2 = AFStage(block, widths[0], widths[1], layers[1], 2, grid=grids[1], **stage)
        self.layer3 = AFStage(block, widths[1], widths[2], layers[2], 1, grid=grids[2], **stage)
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
        self.feature_dim = widths[3]
        # Registered last: the released checkpoints' keys come first and keep their order.
        self.navigation = (
            temporal_gate(
                stage_options.policy, stage_options.rt, 64, num_segments,
                mix_frames=stage_options.mix_frames, soft=stage_options.soft_weights,
            )
            if stage_options.first_layer_navigation
            else None
        )
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
            if isinstance(m, (Navigation, SpatialNavigation)):
                m.reset_gate_bias()

    def stages(self) -> Sequence[AFStage]:
        return (self.layer1, self.layer2, self.layer3)

    def describe(self) -> List[Part]:
        """Stem, the three AF stages, ``layer4``, the global pool: ``[N*T, 3, H, W] -> [N*T, C]``."""
        return [
            Layers((self.conv1, self.bn1, self.relu, self.maxpool)),
            *([FrameGate(self.navigation)] if self.navigation is not None else []),
            *(stage.parts() for stage in self.stages()),
            *(Block(b) for b in self.layer4),
            GlobalPool(),
        ]


# -- registration -------------------------------------------------------------------------------
# The options of every AF-ResNet with their defaults (the released behaviour).
RESNET_OPTIONS: Dict[str, Any] = {
    "alpha": 2, "focal_groups": 2, "mix_frames": False, "fusion": "dynamic", "fill_zero_response": True,
    "soft_weights": False, "spatial": False, "rs": None, "spatial_policy": "navigation", "grid": DEFAULT_GRIDS,
    "first_layer_navigation": False,
}


def _width_gcd(depth: int) -> int:
    """Greatest common divisor of every channel count an AF stage's convs see (``alpha`` divides the
    ample widths and ``focal_groups`` the focal convs' channels, so both must divide this)."""
    block, _ = RESNET_DEPTHS[depth]
    expansion = block_type(block).expansion
    inputs = (64, 64 * expansion, 128 * expansion)
    outputs = (64 * expansion, 128 * expansion, 256 * expansion)
    inner = tuple(w // expansion for w in outputs)  # bottleneck mid width (the output itself for basic)
    return math.gcd(*inputs, *outputs, *inner)


def _check_spatial(options: Mapping[str, Any]) -> None:
    policy = options["spatial_policy"]
    if policy not in SPATIAL_POLICIES:
        raise ValueError(f"spatial_policy must be one of {SPATIAL_POLICIES}, got {policy!r}")
    rs = options["rs"]
    if rs is not None and not is_ratio(rs):
        raise ValueError(f"rs (the ratio of computed cells of the selected frames) must be a number in (0, 1], got {rs!r}")
    if rs is not None and not options["spatial"]:  # it would be ignored: say so rather than run another model
        raise ValueError(f"rs={rs!r} (the ratio of computed cells) needs spatial=True, got spatial=False")
    if options["spatial"] and policy != "navigation" and rs is None:
        raise ValueError(f"spatial_policy={policy!r} needs rs, the ratio of computed cells in (0, 1]")
    grid = options["grid"]
    grids = (grid,) * 3 if is_int(grid) else tuple(grid) if isinstance(grid, (tuple, list)) else None
    if grids is None or len(grids) != 3 or not all(is_int(g) and g >= 1 for g in grids):
        raise ValueError(f"grid must be a positive int or one positive int per AF stage (3), got {grid!r}")


def _checker(depth: int):
    def check(options: Mapping[str, Any]) -> None:
        _check_spatial(options)
        check_fusion(options["fusion"])
        gcd = _width_gcd(depth)
        for name, what in (("alpha", "the ample width divisor"), ("focal_groups", "the focal convs' groups")):
            value = options[name]
            if not is_int(value) or value < 1 or gcd % value:
                divisors = [d for d in range(1, gcd + 1) if gcd % d == 0]
                raise ValueError(
                    f"{name} ({what}) must be a positive int dividing every AF-stage width of af_resnet{depth} "
                    f"(one of {divisors}), got {value!r}"
                )

    return check


def _register(depth: int) -> None:
    @register_model(f"af_resnet{depth}", options=RESNET_OPTIONS, check=_checker(depth))
    def build(*, num_classes: int, num_segments: int, shift: bool, policy: str, rt: Optional[float],
              dropout: float, **options: Any) -> Tuple[nn.Module, int]:
        backbone = AFResNet(depth, num_segments=num_segments, shift=shift, policy=policy, rt=rt, **options)
        return backbone, backbone.feature_dim


for _depth in RESNET_DEPTHS:
    _register(_depth)
