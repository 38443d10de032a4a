"""The frame budget: exactly k_b frames per video, the largest keep margins, nothing read back."""

from __future__ import annotations

import pytest
import torch

import afnet
from afnet.layers import count_for_ratio as frames_for_ratio
from afnet.layers import Navigation
from model_utils import HostReads, build_model, fixture_state_dict, fixture_video, load_fixture, relative_error

pytestmark = pytest.mark.usefixtures("one_thread")
T = 6


def budgeted(budget, arch="af_resnet18", **options):
    model = build_model(arch, T, **options)
    model.frame_budget = budget
    return model


def video(n=2, seed=0, size=32):
    return torch.randn(n, T, 3, size, size, generator=torch.Generator().manual_seed(seed))


def run(model, clip, execution="sparse", backend="kernels"):
    model.execution, model.backend = execution, backend
    with torch.inference_mode():
        out = model(clip, return_masks=True)
    assert model.last_execution == execution
    return out


@pytest.mark.parametrize("budget,kept", [(0.5, [3, 3, 3]), ([1.0, 0.3, 0.05], [6, 2, 0])])
def test_exactly_k_frames_per_video(budget, kept) -> None:
    model = budgeted(budget)
    logits, masks = run(model, video())
    assert [int(m[0].sum()) for m in masks] == kept
    assert all(torch.equal(m.sum(1), m[:1].sum(1).expand(2)) for m in masks)
    dense, dense_masks = run(model, video(), "dense")
    assert all(torch.equal(a, b) for a, b in zip(masks, dense_masks))
    assert relative_error(logits, dense) < 1e-5


def test_keeps_the_largest_margins_ties_to_the_earlier_frame() -> None:
    gate = Navigation(4, T)
    x = torch.randn(2 * T, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    margin = gate.logits(x).diff(dim=-1)[..., 0]
    for k in range(T + 1):
        mask = gate.keep_top(x, k)
        assert mask.sum(1).tolist() == [k, k]
        if 0 < k < T:  # every kept margin >= every dropped one
            assert (margin[mask.bool()].reshape(2, k).min(1).values >= margin.masked_fill(mask.bool(), -1e9).max(1).values).all()
    with torch.no_grad():
        gate.conv_gs.weight.zero_()  # every frame has the same margin: a tie everywhere
    assert gate.keep_top(x, 2).tolist() == [[1, 1, 0, 0, 0, 0]] * 2


def test_budget_reads_nothing_back_and_compiles_whole() -> None:
    model = budgeted(0.5)
    clip = video()
    expected = run(model, clip)[0]
    frozen = afnet.freeze(model)
    with HostReads() as reads, torch.inference_mode():
        model(clip)
        frozen(clip)
    # The NaN check of the fp32 CPU input, once per call; no frame count.
    assert reads.sites == ["executor.py:run_plan"] * 2, reads.sites
    reads.assert_kernels_read_nothing()
    torch._dynamo.reset()
    # No scalar capture: any .item()/.tolist() in the forward would break the graph, which
    # fullgraph=True turns into an error.
    assert not torch._dynamo.config.capture_scalar_outputs
    compiled = torch.compile(frozen, fullgraph=True, backend="eager")
    with torch.inference_mode():
        out = compiled(clip)
    assert torch.equal(out, expected)


def test_threshold_rule_breaks_a_fullgraph_compile() -> None:
    """Control for the test above: the data-dependent rule reads K and cannot compile whole."""
    frozen = afnet.freeze(build_model("af_resnet18", T))
    torch._dynamo.reset()
    with pytest.raises(Exception, match="(?i)data.dependent|graph break|tolist|item"), torch.inference_mode():
        torch.compile(frozen, fullgraph=True, backend="eager")(video())


def test_calibration_measures_the_mean_keep_ratio_and_leaves_the_model_alone() -> None:
    model = build_model("af_resnet18", T)
    for gate in model.navigation_modules:  # gates that decide a mix of frames
        with torch.no_grad():
            gate.conv_gs.bias.zero_()
    clips = [video(seed=s) for s in range(3)]
    with torch.inference_mode():
        kept = [torch.stack([m.float() for m in model(c, return_masks=True)[1]]) for c in clips]
    expected = torch.cat(kept, dim=1).mean(dim=(1, 2)).tolist()
    assert 0 < min(expected) and max(expected) < 1  # a real mix, so the ratios say something
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ratios = afnet.calibrate_frame_budget(model, iter(clips))
    assert ratios == pytest.approx([max(r, 1 / (4 * T)) for r in expected])
    # Untouched: mode, settings, weights and BN statistics (a training-mode pass would move them).
    assert model.training and model.frame_budget is None
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    frozen = afnet.freeze(model.eval(), frame_budget=ratios)
    with torch.inference_mode():
        _, masks = frozen(clips[0], return_masks=True)
    assert [int(m[0].sum()) for m in masks] == [frames_for_ratio(r, T) for r in ratios]


@pytest.mark.parametrize(
    "budget,error,match",
    [
        (0.0, ValueError, r"frame_budget.*\(0, 1\]"),
        (1.5, ValueError, r"frame_budget.*\(0, 1\]"),
        ([0.5, 0.5], ValueError, "got 2 ratios but the model has 3 navigation modules"),
        ([0.5, 0.5, -1], ValueError, r"frame_budget\[2\] must be a float in \(0, 1\]"),
        ("half", TypeError, "frame_budget must be None"),
        (True, TypeError, "frame_budget must be None"),
    ],
)
def test_bad_budgets(budget, error, match) -> None:
    model = build_model("af_resnet18", T)
    with pytest.raises(error, match=match):
        model.frame_budget = budget
    assert model.frame_budget is None


def test_budget_needs_learned_binary_navigation() -> None:
    with pytest.raises(ValueError, match="fixed policy"):
        budgeted(0.5, policy="uniform", rt=0.5)
    with pytest.raises(ValueError, match="soft_weights"):
        budgeted(0.5, soft_weights=True)
    with pytest.raises(ValueError, match="at least one"):
        afnet.calibrate_frame_budget(build_model("af_resnet18", T), [])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["af_resnet50_t8", "af_resnet50_tsm_t8", "af_mobilenetv3_tsm_t8"])
def test_agreement_with_the_threshold_rule_on_the_golden_fixtures(name) -> None:
    """The figures the README reports: a budget calibrated on the fixture's own clip keeps the
    same number of frames per module on average, but per video it can only keep k_b."""
    fx = load_fixture(name)
    arch = "af_mobilenetv3" if "mobilenet" in name else "af_resnet50"
    model = afnet.create_model(arch, num_classes=174, num_segments=8, shift=fx.get("shift", True))
    model.load_state_dict(fixture_state_dict(fx))
    model.eval()
    clip = fixture_video(fx)
    ratios = afnet.calibrate_frame_budget(model, [clip])
    model.frame_budget = ratios
    with torch.inference_mode():
        _, budget_masks = model(clip, return_masks=True)
    golden = [m.bool() for m in fx["masks"]]
    agree = sum(int((a == b).sum()) for a, b in zip(budget_masks, golden)) / sum(m.numel() for m in golden)
    expected = {"af_resnet50_t8": 0.95625, "af_resnet50_tsm_t8": 0.9875, "af_mobilenetv3_tsm_t8": 0.95}[name]
    assert agree == pytest.approx(expected), (agree, ratios)
