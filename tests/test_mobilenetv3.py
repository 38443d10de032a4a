"""AF-MobileNetV3: golden fixture of the released code, sparse = dense, options, caches."""

from __future__ import annotations

import pytest
import torch

import afnet
from afnet.tools.flops import count_flops
from afnet.models.mobilenetv3 import AFMobileNetV3, make_divisible
from conftest import cpu_and_cuda, needs_cuda
from model_utils import (
    HostReads,
    run_model as run,
    build_model,
    fixture_masks,
    fixture_state_dict,
    fixture_video,
    load_fixture,
    relative_error,
)

FIXTURE = "af_mobilenetv3_tsm_t8"
N, T, SIZE = 2, 4, 32

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def golden():
    fx = load_fixture(FIXTURE)
    model = afnet.create_model("af_mobilenetv3", num_classes=174, num_segments=fx["num_segments"])
    model.load_state_dict(fixture_state_dict(fx))
    return fx, model.eval(), fixture_video(fx)


def small_model(seed: int = 0, **options) -> torch.nn.Module:
    """A fresh eval-mode copy with random weights (fixture recipe)."""
    return build_model("af_mobilenetv3", T, seed=seed, num_classes=10, **options)


@pytest.fixture(scope="module")
def small():
    """A shared eval model with random weights, for the tests that do not modify it."""
    return small_model()


def small_video(seed: int = 1, n: int = N, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(n, T, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def mask_case(case: str, n: int = N, seed: int = 2):
    """Five masks ``[n, T]`` (one per navigation module)."""
    g = torch.Generator().manual_seed(seed)
    if case == "none":
        return [torch.zeros(n, T, dtype=torch.bool) for _ in range(5)]
    if case == "all":
        return [torch.ones(n, T, dtype=torch.bool) for _ in range(5)]
    if case == "one":
        masks = [torch.zeros(n, T, dtype=torch.bool) for _ in range(5)]
        for i, m in enumerate(masks):
            m[i % n, i % T] = True  # first, middle and last frames across blocks
        return masks
    masks = [torch.rand(n, T, generator=g) < 0.5 for _ in range(5)]
    masks[0][:, 0] = True
    masks[1][:, -1] = False
    return masks


# -- Golden fixture -------------------------------------------------------------------------
def test_keys_and_shapes_match_release():
    fx = load_fixture(FIXTURE)
    model = afnet.create_model("af_mobilenetv3", num_classes=174, num_segments=8)
    ours = [(k, tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items()]
    theirs = [(k, tuple(s), d) for k, s, d in fx["keys_shapes"]]
    assert ours == theirs
    assert model.new_fc is None


def test_make_divisible():
    assert [make_divisible(v) for v in (16, 72 // 4, 30, 120, 4, 184 * 1.0, 80 * 2.3)] == [16, 24, 32, 120, 8, 184, 184]


@pytest.mark.parametrize("execution,backend", [("dense", "torch"), ("sparse", "kernels"), ("sparse", "torch")])
def test_golden_logits_and_masks(golden, execution, backend):
    fx, model, video = golden
    logits, masks = run(model, video, execution, backend=backend)
    assert len(masks) == 5
    for ours, theirs in zip(masks, fixture_masks(fx)):
        assert ours.dtype == torch.bool
        assert torch.equal(ours, theirs)
    assert relative_error(logits, fx["logits"]) <= 1e-4


def test_golden_flops(golden):
    fx, model, video = golden
    flops = count_flops(model, video)
    expected = fx["gflops_per_video_official_counter"]
    assert abs(flops.paper - expected) / expected <= 5e-3
    assert flops.executed < flops.paper * 1.01


# -- Sparse equals dense ---------------------------------------------------------------------
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("case", ["none", "all", "one", "random"])
def test_sparse_equals_dense(small, case, fmt):
    model = small
    video = small_video()
    masks = mask_case(case)
    dense, dense_masks = run(model, video, "dense", masks, backend="torch", layout=None)
    for backend in ("kernels", "torch"):
        sparse, sparse_masks = run(model, video, "sparse", masks, backend=backend, layout=fmt)
        assert relative_error(sparse, dense) < 1e-5
        assert all(torch.equal(a, b) for a, b in zip(sparse_masks, masks))
    assert all(torch.equal(a, b) for a, b in zip(dense_masks, masks))


def test_masks_change_the_output(small):
    """Guard for the test above: the focal branch contributes, so a wrong scatter would show."""
    model = small
    video = small_video()
    outputs = [run(model, video, "sparse", mask_case(c))[0] for c in ("none", "all", "random")]
    assert relative_error(outputs[0], outputs[1]) > 1e-2
    assert relative_error(outputs[1], outputs[2]) > 1e-2


@pytest.mark.parametrize(
    "options",
    [
        {"fill_zero_response": False},
        {"fusion": "additive"},
        {"mix_frames": True},
        {"policy": "uniform", "rt": 0.5},
    ],
    ids=["residual-only", "additive", "mix-frames", "uniform-policy"],
)
def test_sparse_equals_dense_options(options):
    model = small_model(seed=4, **options)
    video = small_video()
    dense, dense_masks = run(model, video, "dense", backend="torch", layout=None)
    sparse, sparse_masks = run(model, video, "sparse")
    assert all(torch.equal(a, b) for a, b in zip(dense_masks, sparse_masks))
    assert relative_error(sparse, dense) < 1e-5


def test_sparse_equals_dense_navigation_decides():
    model = small_model(seed=5)
    for nav in model.modules():
        if isinstance(nav, afnet.layers.Navigation):  # make the gates decide a mix
            with torch.no_grad():
                nav.conv_gs.bias.zero_()
    video = small_video(seed=6)
    dense, dense_masks = run(model, video, "dense", layout=None)
    sparse, sparse_masks = run(model, video, "sparse")
    ratio = torch.stack([m.float().mean() for m in dense_masks]).mean()
    assert 0 < ratio < 1
    assert all(torch.equal(a, b) for a, b in zip(dense_masks, sparse_masks))
    assert relative_error(sparse, dense) < 1e-5


def test_residual_only_differs_from_zero_response_fill(small):
    video, masks = small_video(), mask_case("random")
    filled = run(small, video, "sparse", masks)[0]
    residual = run(small_model(fill_zero_response=False), video, "sparse", masks)[0]
    assert relative_error(filled, residual) > 1e-3


def test_float64_sparse_equals_dense():
    model = small_model().double()
    video = small_video(dtype=torch.float64)
    masks = mask_case("random")
    dense = run(model, video, "dense", masks, layout=None)[0]
    sparse = run(model, video, "sparse", masks)[0]
    assert relative_error(sparse, dense) < 1e-12


def test_soft_weights_run_dense_with_soft_masks():
    model = small_model(soft_weights=True)
    video = small_video()
    model.execution = "sparse"
    assert not model.runs_sparse  # soft weights are not 0/1: the engine cannot skip frames
    with torch.no_grad():
        soft, masks = model(video, return_masks=True)
    assert model.last_execution == "dense"
    assert len(masks) == 5 and masks[0].dtype == torch.bool
    # The soft weights really scale the focal input: forcing every weight to 1 changes the output.
    ones = run(model, video, "dense", [torch.ones(N, T)] * 5, layout=None)[0]
    assert relative_error(soft, ones) > 1e-3


# -- Plan and host reads ---------------------------------------------------------------------
def test_plan_follows_weight_changes():
    model = small_model()
    video, masks = small_video(), mask_case("random")
    before = run(model, video, "sparse", masks)[0]
    focal = model.base_model.features_stage3_refine[1]
    with torch.no_grad():
        focal.bn3.bias.add_(1.0)  # moves F(0) and the folded weights
        model.base_model.conv_last.weight.mul_(1.5)
    after = run(model, video, "sparse", masks)[0]
    dense = run(model, video, "dense", masks, layout=None)[0]
    assert relative_error(after, before) > 1e-3
    assert relative_error(after, dense) < 1e-5
    model.train()
    assert len(model._plans) == 0


def test_one_host_read_per_af_stage(small):
    run(small, small_video(), "sparse", mask_case("random"))
    with HostReads() as reads:
        run(small, small_video(), "sparse")
    # The NaN check of the fp32 CPU input, then one read per AF stage.
    assert reads.sites == ["executor.py:run_plan"] + ["selection.py:count_selected"] * 2, reads.sites
    reads.assert_kernels_read_nothing()


# -- API -------------------------------------------------------------------------------------
def test_backbone_outputs_and_bad_options(small):
    model = small
    assert isinstance(model.base_model, AFMobileNetV3)
    with torch.no_grad():
        logits = model(small_video())
    assert logits.shape == (N, 10)
    with pytest.raises(TypeError, match="alpha"):
        afnet.create_model("af_mobilenetv3", num_classes=10, num_segments=T, alpha=2)
    with pytest.raises(ValueError, match="fusion"):
        afnet.create_model("af_mobilenetv3", num_classes=10, num_segments=T, fusion="concat")
    with pytest.raises(ValueError, match="num_segments"):
        model(torch.randn(N, T + 1, 3, SIZE, SIZE))


# The released forward order of the navigation modules: stage 2's two, then stage 3's three.
RELEASED_GATES = ["base_model.list_gen2.0", "base_model.list_gen2.1",
                  "base_model.list_gen3.0", "base_model.list_gen3.1", "base_model.list_gen3.2"]
FOCAL_BLOCKS = ["base_model.features_stage2_refine.0", "base_model.features_stage2_refine.1",
                "base_model.features_stage3_refine.0", "base_model.features_stage3_refine.1",
                "base_model.features_stage3_refine.2"]


def test_training_mode_is_differentiable_and_masks_are_forward_ordered():
    model = small_model()
    model.train()
    modules = dict(model.named_modules())
    names = {id(m): n for n, m in modules.items()}
    gates, focal = [], []  # (name, output) of each gate call, (name, mask argument) of each focal block call
    hooks = [modules[n].register_forward_hook(lambda m, args, out: gates.append((names[id(m)], out))) for n in RELEASED_GATES]
    hooks += [modules[n].register_forward_hook(lambda m, args, out: focal.append((names[id(m)], args[1]))) for n in FOCAL_BLOCKS]
    try:
        logits, masks = model(small_video(), return_masks=True)
    finally:
        for hook in hooks:
            hook.remove()
    # The gates ran in the released order, mask i is the decision of gate i, and focal block i got it.
    assert [name for name, _ in gates] == RELEASED_GATES == model.gate_names()
    assert [name for name, _ in focal] == FOCAL_BLOCKS
    for i, mask in enumerate(masks):
        assert torch.equal(mask, gates[i][1]) and torch.equal(focal[i][1], gates[i][1]), i
    logits.square().mean().backward()
    nav_grads = [modules[n].conv_gs.weight.grad for n in RELEASED_GATES]
    assert all(g is not None and g.abs().sum() > 0 for g in nav_grads)


def test_forced_mask_i_acts_on_focal_block_i(small):
    """Masks given to the model follow the same order: changing mask i leaves every focal block
    before block i as it was and changes block i."""
    modules = dict(small.named_modules())
    outputs = {}
    hooks = [modules[n].register_forward_hook(lambda m, args, out, n=n: outputs.__setitem__(n, out)) for n in FOCAL_BLOCKS]
    video = small_video()
    try:
        run(small, video, "dense", mask_case("all"), layout=None)
        reference = dict(outputs)
        for i in range(len(FOCAL_BLOCKS)):
            masks = mask_case("all")
            masks[i] = torch.zeros(N, T, dtype=torch.bool)
            run(small, video, "dense", masks, layout=None)
            changed = [n for n in FOCAL_BLOCKS if not torch.equal(outputs[n], reference[n])]
            assert changed[:1] == [FOCAL_BLOCKS[i]] and set(FOCAL_BLOCKS[:i]).isdisjoint(changed), (i, changed)
    finally:
        for hook in hooks:
            hook.remove()


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_sparse_equals_dense_on_device(device, no_tf32):
    model = small_model().to(device)
    video, masks = small_video().to(device), [m.to(device) for m in mask_case("random")]
    dense = run(model, video, "dense", masks, layout=None)[0]
    for backend in ("kernels", "torch"):
        sparse = run(model, video, "sparse", masks, backend=backend)[0]
        assert relative_error(sparse, dense) < 1e-5


@needs_cuda
def test_golden_on_cuda(golden, no_tf32):
    fx, model, video = golden
    model = model.to("cuda")
    try:
        for execution in ("dense", "sparse"):
            logits, masks = run(model, video.to("cuda"), execution)
            assert all(torch.equal(a.cpu(), b) for a, b in zip(masks, fixture_masks(fx)))
            assert relative_error(logits.cpu(), fx["logits"]) <= 1e-4
    finally:
        model.to("cpu")
