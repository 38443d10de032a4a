"""FLOPs per video: the released counter's convention and the sparse path's executed MACs."""

from __future__ import annotations

import pytest
import torch

import afnet
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


def _count(model, T, masks):
    return afnet.count_flops(model, torch.randn(2, T, 3, 64, 64), masks=masks)


def test_focal_flops_scale_with_selected_frames() -> None:
    T = 3  # the model the sparse tests build too (cached by build_model)
    model = build_model("af_resnet50", T)
    n = sum(len(s.list_gen) for s in model.base_model.stages())
    none = _count(model, T, [torch.zeros(2, T, dtype=torch.bool)] * n)
    full = _count(model, T, [torch.ones(2, T, dtype=torch.bool)] * n)
    half_mask = torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool)  # 3 of the 6 frames
    half = _count(model, T, [half_mask] * n)
    for kind in ("paper", "executed"):
        lo, mid, hi = getattr(none, kind), getattr(half, kind), getattr(full, kind)
        assert lo < mid < hi
        assert mid == pytest.approx((lo + hi) / 2, rel=1e-9)
    assert model.training is False and model.execution == "sparse"


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
