"""FLOPs of AF-ResNet18 at 32x32 px with 4 classes, counted by hand from the architecture: the
independent count that ``afnet.count_flops`` and the eval report are checked against.

All constants are per frame in MACs (the paper convention calls them FLOPs); a video of T frames
costs T times them, plus its focal convs on the frames each AF stage selects.
"""

from __future__ import annotations

# The architecture (afnet/models/resnet.py): the stem takes 32 px to 16 (conv) and 8 (max pool);
# each AF stage has one navigation module, one ample block (half width, stride 2) and one focal
# block (full width, groups 2, the stage's input size), a 1x1 base_transform to full width, the
# dynamic fusion (fc C -> C/16 -> C) and one fusion block with the stage's stride (2, 2, 1).
# Stage inputs: layer1 64 ch @ 8x8, layer2 64 @ 4x4, layer3 128 @ 2x2, layer4 256 @ 2x2.
CLASSES = 4


def conv(c_in: int, c_out: int, k: int, pixels: int, groups: int = 1) -> int:
    """MACs of a k x k conv over ``pixels`` output pixels of one frame."""
    return c_in // groups * c_out * k * k * pixels


def pool(c: int, pixels: int) -> int:
    """The paper convention's 3x3 pool: 9 per output element."""
    return 9 * c * pixels


# Per frame, every conv and linear that runs on every frame (both conventions count these).
CONVS = (
    conv(3, 64, 7, 16 * 16)  # stem
    # layer1: ample 64->32 (3x3 s2, 3x3, 1x1 shortcut after the pool) at 4x4, base_transform 32->64,
    # fusion fc 64->4->64, fusion block 64->64 3x3 s2 + 3x3 at 4x4
    + conv(64, 32, 3, 16) + conv(32, 32, 3, 16) + conv(64, 32, 1, 16) + conv(32, 64, 1, 16)
    + 64 * 4 + 4 * 64 + 2 * conv(64, 64, 3, 16)
    # layer2: ample 64->64 at 2x2 (pool-only shortcut), the focal block's 1x1 shortcut 64->128 at
    # 4x4 (every frame), base_transform 64->128 at 2x2, fc 128->8->128, fusion block at 2x2
    + 2 * conv(64, 64, 3, 4) + conv(64, 128, 1, 16) + conv(64, 128, 1, 4) + 2 * 128 * 8 + 2 * conv(128, 128, 3, 4)
    # layer3: ample 128->128 at 1x1, focal shortcut 128->256 at 2x2, base_transform at 1x1,
    # fc 256->16->256, fusion block (stride 1, identity shortcut) at 2x2
    + 2 * conv(128, 128, 3, 1) + conv(128, 256, 1, 4) + conv(128, 256, 1, 1) + 2 * 256 * 16 + 2 * conv(256, 256, 3, 4)
    # layer4: 256->512 3x3 s2 + 3x3 and the 1x1 shortcut at 1x1, then a 512->512 block
    + conv(256, 512, 3, 1) + conv(512, 512, 3, 1) + conv(256, 512, 1, 1) + 2 * conv(512, 512, 3, 1)
)
# Per frame, counted by the paper convention only: the 3x3 pools (stem max pool to 8x8; shortcut
# pools of layer1's ample and fusion blocks, layer2's, layer3's ample, layer4's), the fusions'
# pooling c*h*w + c of the focal output, and the released head's C x C "fc".
PAPER_ONLY = (
    pool(64, 64) + 2 * pool(64, 16) + pool(64, 4) + pool(128, 4) + pool(128, 1) + pool(256, 1)
    + (64 * 64 + 64) + (128 * 16 + 128) + (256 * 4 + 256)
    + 512 * 512
)
NEW_FC = 512 * CLASSES  # the classifier, per frame: executed only
# Per frame, each AF stage's focal block: two grouped 3x3 convs at the stage's input size.
FOCAL = (
    2 * conv(64, 64, 3, 64, groups=2),
    conv(64, 128, 3, 16, groups=2) + conv(128, 128, 3, 16, groups=2),
    conv(128, 256, 3, 4, groups=2) + conv(256, 256, 3, 4, groups=2),
)
# Navigation per frame: its pooling c*h*w (paper only) and conv_pool c -> 2 on the pooled frame;
# per video, each module's conv_gs (nav_gs).
NAV_POOL = 64 * 64 + 64 * 16 + 128 * 4
NAV_CONV = 64 * 2 + 64 * 2 + 128 * 2


def nav_gs(num_segments: int) -> int:
    """MACs of one module's conv_gs per video: 2T -> 2T channels in T groups on a 1x1 map."""
    return 2 * 2 * num_segments
