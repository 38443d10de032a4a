"""AF-ResNet family and the TSN wrapper: golden fixtures, API, options, bad input."""

from __future__ import annotations

import pytest
import torch

import afnet
import afnet_kernels
from model_utils import (
    build_model,
    fixture_masks,
    fixture_state_dict,
    fixture_video,
    load_fixture,
    random_masks,
    relative_error,
)

pytestmark = pytest.mark.usefixtures("two_threads")

RESNETS = ("af_resnet18", "af_resnet34", "af_resnet50", "af_resnet101")


def kernels_built() -> bool:
    return bool(afnet_kernels.backends()["cpu"]["usable"])


def small_model(arch: str = "af_resnet50", T: int = 3, seed: int = 0, **kwargs) -> afnet.models.TSN:
    return build_model(arch, T, seed, **kwargs)


# -- golden fixtures ----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["af_resnet50_t8", "af_resnet50_tsm_t8"])
def test_golden_fixture(name: str) -> None:
    fx = load_fixture(name)
    model = afnet.create_model(
        "af_resnet50", num_classes=fx["num_classes"], num_segments=fx["num_segments"], shift=fx["shift"]
    )
    # Strict: every released key name and shape must exist in our model.
    model.load_state_dict(fixture_state_dict(fx), strict=True)
    model.eval()
    video = fixture_video(fx)
    runs = [("dense", "torch"), ("sparse", "torch")]
    if kernels_built():
        runs.append(("sparse", "kernels"))
    golden_masks = fixture_masks(fx)
    with torch.no_grad():
        for execution, backend in runs:
            model.execution, model.backend = execution, backend
            logits, masks = model(video, return_masks=True)
            assert len(masks) == len(golden_masks) == 10
            for i, (ours, gold) in enumerate(zip(masks, golden_masks)):
                assert torch.equal(ours, gold), f"{execution}/{backend}: mask {i} differs"
            err = relative_error(logits, fx["logits"])
            assert err <= 1e-4, f"{execution}/{backend}: logits relative error {err:.2e}"


def test_fixture_keys_match_model_keys() -> None:
    for name, shift in [("af_resnet50_t8", False), ("af_resnet50_tsm_t8", True)]:
        fx = load_fixture(name)
        model = afnet.create_model("af_resnet50", num_classes=174, num_segments=8, shift=shift)
        ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
        assert ours == [(k, tuple(s)) for k, s, _ in fx["keys_shapes"]]


# -- API ----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", RESNETS)
def test_forward_shapes_and_masks(arch: str) -> None:
    model = small_model(arch, T=3)
    video = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        logits, masks = model(video, return_masks=True)
    assert model.last_execution == "sparse"
    assert logits.shape == (2, 7)
    n_nav = sum(len(s.list_gen) for s in model.base_model.stages())
    assert len(masks) == n_nav == {"af_resnet18": 3, "af_resnet34": 10, "af_resnet50": 10, "af_resnet101": 27}[arch]
    assert all(m.dtype == torch.bool and m.shape == (2, 3) for m in masks)
    with torch.no_grad():
        assert torch.equal(model(video), logits)


def test_eval_is_deterministic_and_sparse_by_default() -> None:
    model = small_model("af_resnet18")
    assert model.execution == "sparse" and model.runs_sparse
    video = torch.randn(1, 3, 3, 32, 32)
    with torch.inference_mode():
        a, ma = model(video, return_masks=True)
        b, mb = model(video, return_masks=True)
    assert model.last_execution == "sparse"
    assert torch.equal(a, b) and all(torch.equal(x, y) for x, y in zip(ma, mb))
    model.train()
    assert not model.runs_sparse


def test_training_is_differentiable_and_reaches_navigation() -> None:
    model = afnet.create_model("af_resnet18", num_classes=3, num_segments=2)
    model.train()
    logits = model(torch.randn(2, 2, 3, 32, 32))
    logits.square().sum().backward()
    nav = model.base_model.layer1.list_gen[0]
    assert nav.conv_gs.weight.grad is not None and nav.conv_gs.weight.grad.abs().sum() > 0
    assert model.base_model.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("rt,kept", [(0.25, 2), (0.5, 4), (1.0, 8)])
def test_uniform_policy_ratio(rt: float, kept: int) -> None:
    model = small_model("af_resnet18", T=8, policy="uniform", rt=rt)
    with torch.no_grad():
        _, masks = model(torch.randn(1, 8, 3, 32, 32), return_masks=True)
    assert all(int(m.sum()) == kept for m in masks)


@pytest.mark.parametrize(
    "options",
    [dict(mix_frames=True), dict(fusion="additive"), dict(fill_zero_response=False), dict(alpha=1)],
)
def test_options_sparse_equals_dense(options: dict) -> None:
    model = small_model("af_resnet18", T=3, **options)
    video = torch.randn(2, 3, 3, 32, 32)
    masks = random_masks(3, 2, 3, seed=1)
    with torch.no_grad():
        model.execution = "dense"
        dense = model(video, masks=masks)
        model.execution = "sparse"
        sparse = model(video, masks=masks)
    assert model.last_execution == "sparse"
    assert relative_error(sparse, dense) < 1e-5


def test_soft_weights_train_and_run_dense() -> None:
    model = small_model("af_resnet18", T=3, soft_weights=True)
    video = torch.randn(2, 3, 3, 32, 32)
    assert not model.runs_sparse  # soft weights are not 0/1: the engine cannot skip frames
    with torch.no_grad():
        logits, masks = model(video, return_masks=True)
    assert model.last_execution == "dense" and logits.shape == (2, 7) and len(masks) == 3
    model.train()
    model(video).square().mean().backward()
    assert model.base_model.layer1.list_gen[0].conv_gs.weight.grad.abs().sum() > 0


def test_mix_frames_changes_navigation_groups() -> None:
    model = afnet.create_model("af_resnet18", num_classes=3, num_segments=4, mix_frames=True)
    assert model.base_model.layer1.list_gen[0].conv_gs.groups == 1
    model = afnet.create_model("af_resnet18", num_classes=3, num_segments=4)
    assert model.base_model.layer1.list_gen[0].conv_gs.groups == 4


def test_residual_only_differs_from_released_fill() -> None:
    video = torch.randn(1, 3, 3, 32, 32)
    masks = [torch.zeros(1, 3, dtype=torch.bool)] * 3
    with torch.no_grad():
        released = small_model("af_resnet18", seed=1)(video, masks=masks)
        residual = small_model("af_resnet18", seed=1, fill_zero_response=False)(video, masks=masks)
    assert relative_error(residual, released) > 1e-3


# -- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape,match",
    [
        ((1, 4, 3, 32, 32), "num_segments=3"),
        ((1, 3, 1, 32, 32), "3 channels"),
        ((3, 3, 32, 32), "5-D"),
    ],
)
def test_bad_video(shape: tuple, match: str) -> None:
    model = small_model("af_resnet18")
    with pytest.raises(ValueError, match=match):
        model(torch.randn(shape))


def test_bad_masks() -> None:
    model = small_model("af_resnet18")
    video = torch.randn(1, 3, 3, 32, 32)
    with pytest.raises(ValueError, match="masks"), torch.no_grad():
        model(video, masks=[torch.ones(1, 3, dtype=torch.bool)])
    with pytest.raises(ValueError, match="masks: expected shape"), torch.no_grad():
        model(video, masks=[torch.ones(1, 2, dtype=torch.bool)] * 3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(arch="af_resnet200"), "arch must be one of"),
        (dict(policy="oracle"), "policy must be one of"),
        (dict(policy="uniform", rt=0.0), r"rt must be a number in \(0, 1\]"),
        (dict(policy="uniform", rt=1.5), r"rt must be a number in \(0, 1\]"),
        (dict(policy="uniform"), "needs rt"),
        (dict(num_segments=0), "num_segments"),
        (dict(num_classes=0), "num_classes"),
    ],
)
def test_bad_create_model(kwargs: dict, match: str) -> None:
    args = dict(arch="af_resnet18", num_classes=3, num_segments=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        afnet.create_model(args.pop("arch"), **args)


def test_bad_option_and_switches() -> None:
    with pytest.raises(TypeError, match="unknown option"):
        afnet.create_model("af_resnet18", num_classes=3, num_segments=2, colour="red")
    with pytest.raises(ValueError, match="fusion must be one of"):
        afnet.create_model("af_resnet18", num_classes=3, num_segments=2, fusion="concat")
    model = afnet.create_model("af_resnet18", num_classes=3, num_segments=2)
    with pytest.raises(ValueError, match="execution must be one of"):
        model.execution = "lazy"
    with pytest.raises(ValueError, match="backend must be one of"):
        model.backend = "cuda"
