"""FLOPs per video: the released counter's convention and the sparse path's executed MACs."""

from __future__ import annotations

import pytest
import torch

import afnet
from hand_flops import CLASSES, CONVS, FOCAL, NAV_CONV, NAV_POOL, NEW_FC, PAPER_ONLY, nav_gs
from model_utils import build_model, fixture_state_dict, fixture_video, load_fixture

pytestmark = pytest.mark.usefixtures("two_threads")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["af_resnet50_t8", "af_resnet50_tsm_t8"])
def test_matches_released_counter(name: str) -> None:
    fx = load_fixture(name)
    model = afnet.create_model("af_resnet50", num_classes=174, num_segments=8, shift=fx["shift"])
    model.load_state_dict(fixture_state_dict(fx))
    # The navigation decides (no forced masks), as in the released run.
    flops = afnet.count_flops(model, fixture_video(fx))
    golden = fx["gflops_per_video_official_counter"]
    assert abs(flops.paper / golden - 1) < 0.005, (flops, golden)
    assert flops.executed < flops.paper


# -- AF-ResNet18, T = 2, 32x32 px, 4 classes, counted by hand (tests/hand_flops.py) ------------
HAND_T = 2


def hand_model(**options) -> torch.nn.Module:
    model = afnet.create_model("af_resnet18", num_classes=CLASSES, num_segments=HAND_T, **options).eval()
    for gate in model.navigation_modules:  # conv_gs weights 0: the keep bias (10 > 1) keeps every frame
        with torch.no_grad():
            gate.conv_gs.weight.zero_()
    return model


def test_flops_pinned_by_hand() -> None:
    model = hand_model()
    video = torch.randn(1, HAND_T, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    T = HAND_T
    # The navigation decides (every frame): it is counted, and every focal conv runs.
    flops = afnet.count_flops(model, video)
    assert round(flops.paper * 1e9) == T * (CONVS + PAPER_ONLY + sum(FOCAL) + NAV_POOL + NAV_CONV) + 3 * nav_gs(T) == 51_101_848
    assert round(flops.executed * 1e9) == T * (CONVS + NEW_FC + sum(FOCAL) + NAV_CONV) + 3 * nav_gs(T)
    # Forced masks (the navigation does not run): no frame, then frame 0 of 2 in every AF stage.
    for selected, mask in ((0, [[False, False]]), (1, [[True, False]])):
        flops = afnet.count_flops(model, video, masks=[torch.tensor(mask)] * 3)
        assert round(flops.paper * 1e9) == T * (CONVS + PAPER_ONLY) + selected * sum(FOCAL), selected
        assert round(flops.executed * 1e9) == T * (CONVS + NEW_FC) + selected * sum(FOCAL), selected
    assert (T * (CONVS + PAPER_ONLY), T * (CONVS + NEW_FC)) == (39_293_056, 38_626_304)


def test_spatial_paper_flops_pinned_by_hand() -> None:
    """The focal convs scale with the output pixels in computed cells of selected frames. Grids at
    32 px: 4x4 cells of 2x2 px in layer1 (8x8), 4x4 of 1 px in layer2 (4x4), 2x2 of 1 px in layer3."""
    model = hand_model(spatial=True)
    video = torch.randn(1, HAND_T, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    every_frame = [torch.ones(1, HAND_T, dtype=torch.bool)] * 3
    layer1 = torch.zeros(1, HAND_T, 4, 4, dtype=torch.bool)
    layer1[0, 0, 0, 0] = True  # one cell (4 of 64 px) of frame 0, nothing of frame 1
    layer2 = torch.zeros(1, HAND_T, 4, 4, dtype=torch.bool)
    layer2[..., :2, :] = True  # the top half of both frames
    layer3 = torch.ones(1, HAND_T, 2, 2, dtype=torch.bool)  # every cell
    flops = afnet.count_flops(model, video, masks=every_frame, spatial_masks=[layer1, layer2, layer3])
    # Frames x share: layer1 4/64 of one frame, layer2 1/2 of two, layer3 all of two.
    expected = HAND_T * (CONVS + PAPER_ONLY) + FOCAL[0] * 4 // 64 + FOCAL[1] * 2 // 2 + FOCAL[2] * 2
    assert round(flops.paper * 1e9) == expected == 44_748_928


def test_executed_counts_convs_of_a_known_block() -> None:
    # AF-ResNet18 at 64x64, every frame selected, no navigation or pools in "executed":
    # compare with a direct count over every conv and linear, run densely.
    T = 2
    model = build_model("af_resnet18", T)
    macs = []

    def hook(m, inputs, out):
        if isinstance(m, torch.nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            macs.append(out.numel() * m.in_channels // m.groups * k)
        else:
            macs.append(out.numel() * m.in_features)

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    masks = [torch.ones(2, T, dtype=torch.bool)] * 3
    model.execution = "dense"
    video = torch.randn(2, T, 3, 64, 64)
    model(video, masks=masks)
    for h in hooks:
        h.remove()
    flops = afnet.count_flops(model, video, masks=masks)
    assert flops.executed == pytest.approx(sum(macs) / 2 / 1e9, rel=1e-12)
