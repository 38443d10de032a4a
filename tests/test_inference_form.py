"""The contract of every fast path, path by path and change by change.

After any change to the weights, every way of running a model returns the answer that path
promises, or raises an error that names the fix; never a stale or third value:

- the live model (``model.eval()``, and ``torch.compile(model)``) answers for the current weights;
- the frozen model (``afnet.freeze(model)``, eager and compiled) answers for the weights it was
  frozen with, until ``rebuild()``, and then for the new ones;
- a CUDA-graph runner answers for its snapshot, or raises (``tests/test_export.py`` on CUDA).

The expected values come from the dense interpreter of the description (``execution="dense"``),
a different implementation from the engine that every fast path runs.
"""

from __future__ import annotations

import threading
import warnings
from typing import Callable

import pytest
import torch
import torch.nn as nn

import afnet
from afnet.engine import count_macs
from afnet.layers import FixedPolicy, SpatialPolicy, count_for_ratio, num_kept
from conftest import needs_cuda
from model_utils import build_model, random_state_like, relative_error

pytestmark = pytest.mark.usefixtures("one_thread")
T = 3


def make_model() -> nn.Module:
    model = build_model("af_resnet18", T)
    model.frame_budget = 0.5  # static counts: the frozen form compiles with fullgraph=True
    return model


def clip(dtype=torch.float32, seed=0) -> torch.Tensor:
    return torch.randn(2, T, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).to(dtype)


def dense(model: nn.Module, video: torch.Tensor) -> torch.Tensor:
    """The released computation on the model's current weights (same budget)."""
    saved = model.execution
    model.execution = "dense"
    try:
        with torch.no_grad():
            return model(video)
    finally:
        model.execution = saved


# -- the weight changes ---------------------------------------------------------------------------
def optimizer_step(model: nn.Module) -> None:
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    logits = model(clip(seed=9))
    (logits / logits.detach().abs().max()).sum().backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    model.eval()


def inplace_update(model: nn.Module) -> None:
    with torch.no_grad():  # an EMA-style update of every weight
        for p in model.parameters():
            p.mul_(0.9).add_(0.01)


def load_state_dict(model: nn.Module) -> None:
    model.load_state_dict(random_state_like(model, 5))


def to_double(model: nn.Module) -> None:
    model.double()


def replaced_parameter(model: nn.Module) -> None:
    conv = model.base_model.layer1.refine_module[0].conv1
    conv.weight = nn.Parameter(conv.weight.detach() * -1.5)


def replaced_module(model: nn.Module) -> None:
    block = model.base_model.layer2.refine_module[0]
    bn = nn.BatchNorm2d(block.bn2.num_features).eval()
    with torch.no_grad():
        bn.running_mean.normal_(generator=torch.Generator().manual_seed(3))
        bn.weight.fill_(3.0)
    block.bn2 = bn


def changed_setting(model: nn.Module) -> None:
    # Baked into the plan, not a tensor: BN's eps and whether unselected frames get F(0).
    model.base_model.layer1.refine_module[0].bn1.eps = 10.0
    for block in model.base_model.layer2.refine_module:
        block.fill_zero_response = False


def data_write(model: nn.Module) -> None:
    with torch.no_grad():
        for p in model.base_model.layer1.refine_module.parameters():
            p.data.mul_(1.7)


CHANGES = [optimizer_step, inplace_update, load_state_dict, to_double, replaced_parameter, replaced_module,
           changed_setting, data_write]


def compiled(module: nn.Module, **kwargs) -> Callable:
    torch._dynamo.reset()
    return torch.compile(module, backend="eager", **kwargs)


@pytest.mark.parametrize("change", CHANGES, ids=lambda f: f.__name__)
def test_live_model_answers_for_the_current_weights(change) -> None:
    model = make_model()
    video = clip()
    before = dense(model, video)
    with torch.no_grad():
        torch.testing.assert_close(model(video), before, rtol=1e-4, atol=1e-5)
        model(video)  # a cached plan that a change must not leave stale
    change(model)
    video = video.to(next(model.parameters()).dtype)
    after = dense(model, video)
    if change is to_double:  # the same function in float64: the answer must now be float64-exact
        assert after.dtype == torch.float64
    else:
        assert relative_error(after, before) > 1e-3  # the change changed the answer
    if change is data_write:
        # PyTorch keeps no version counter for writes through .data: the documented remedy.
        model.refresh_plan()
    with torch.no_grad():
        out = model(video)
    assert model.last_execution == "sparse" and out.dtype == after.dtype
    tolerance = 1e-10 if change is to_double else 1e-4
    torch.testing.assert_close(out, after, rtol=tolerance, atol=tolerance / 10)


@pytest.mark.parametrize("change", [inplace_update, load_state_dict, replaced_module, changed_setting],
                         ids=lambda f: f.__name__)
def test_compiled_live_model_follows_the_weights(change) -> None:
    """``torch.compile(model)`` runs the live engine outside the graph (with a warning naming
    afnet.freeze), so it follows every change; ``fullgraph=True`` refuses with that message."""
    model = make_model()
    video = clip()
    runner = compiled(model)
    with torch.no_grad(), pytest.warns(UserWarning, match=r"afnet\.freeze"):
        torch.testing.assert_close(runner(video), dense(model, video), rtol=1e-4, atol=1e-5)
    change(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = runner(video)
    torch.testing.assert_close(out, dense(model, video), rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception, match=r"torch.compile\(afnet.freeze\(model\)\)"), torch.no_grad():
        compiled(model, fullgraph=True)(video)


@pytest.mark.parametrize("change", CHANGES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("path", ["eager", "compiled"])
def test_frozen_model_keeps_its_snapshot_until_rebuilt(change, path) -> None:
    model = make_model()
    video = clip()
    frozen = afnet.freeze(model)
    runner = compiled(frozen, fullgraph=True) if path == "compiled" else frozen
    snapshot = dense(model, video)
    with torch.no_grad():
        torch.testing.assert_close(runner(video), snapshot, rtol=1e-4, atol=1e-5)
    change(model)
    with torch.no_grad():
        torch.testing.assert_close(runner(video), snapshot, rtol=1e-4, atol=1e-5)  # the snapshot's answer
    if change is to_double:  # a snapshot is fixed to its dtype: freeze the converted model
        with pytest.raises(ValueError, match="video dtype torch.float64 does not match the model's dtype torch.float32"):
            frozen(video.double())
        frozen = afnet.freeze(model)
        runner = compiled(frozen, fullgraph=True) if path == "compiled" else frozen
        video = video.double()
    else:
        assert frozen.rebuild() is frozen
    after = dense(model, video)
    if change is not to_double:
        assert relative_error(after, snapshot) > 1e-3
    with torch.no_grad():
        out = runner(video)
    assert out.dtype == after.dtype
    torch.testing.assert_close(out, after, rtol=1e-4, atol=1e-5)


def test_frozen_model_is_eval_only_and_cannot_move() -> None:
    model = make_model()
    frozen = afnet.freeze(model)
    assert not frozen.training and frozen.settings.frame_budget == 0.5
    with pytest.raises(RuntimeError, match="eval-only: train the source model, then call frozen.rebuild"):
        frozen.train()
    for move in (lambda: frozen.to(torch.float64), lambda: frozen.double(), lambda: frozen.half()):
        with pytest.raises(RuntimeError, match=r"freeze it again \(afnet.freeze\(model.to"):
            move()
    with pytest.raises(TypeError, match="already frozen"):
        afnet.freeze(frozen)
    with pytest.raises(ValueError, match="execution must be one of"):
        afnet.freeze(model, execution="dense")
    # A snapshot outlives its source, but cannot rebuild from it.
    del model
    with pytest.raises(RuntimeError, match=r"no longer exists: pass it, frozen.rebuild\(model\)"):
        frozen.rebuild()
    with torch.no_grad():
        assert frozen(clip()).shape == (2, 7)


def test_freeze_takes_the_model_settings_unless_given() -> None:
    model = make_model()
    model.backend = "torch"
    frozen = afnet.freeze(model)
    assert frozen.settings.backend == "torch" and frozen.settings.frame_budget == 0.5
    explicit = afnet.freeze(model, frame_budget=None, backend="kernels", memory_format=None)
    assert explicit.settings.frame_budget is None and explicit.settings.backend == "kernels"
    assert explicit.settings.memory_format == torch.channels_last  # one layout per snapshot
    assert model.frame_budget == 0.5 and model.backend == "torch"  # the model is untouched
    with pytest.raises(ValueError, match="frame_budget must be a float in"):
        afnet.freeze(model, frame_budget=2.0)


def test_model_and_count_flops_in_two_threads() -> None:
    """count_flops works on a private copy with a MAC counter of its own: the user's model keeps its
    mode and settings, and neither thread counts or changes the other's work."""
    model = make_model()
    model.frame_budget = None
    video = clip()
    with torch.no_grad():
        expected_logits = model(video)
    expected_flops = afnet.count_flops(model, video)
    results, errors = {"logits": [], "flops": []}, []
    start = threading.Barrier(2)

    def forward() -> None:
        try:
            start.wait()
            with torch.no_grad(), count_macs() as counter:
                for _ in range(4):
                    results["logits"].append(model(video))
            results["macs"] = counter.macs
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def flops() -> None:
        try:
            start.wait()
            for _ in range(2):
                results["flops"].append(afnet.count_flops(model, video))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=forward), threading.Thread(target=flops)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(torch.equal(out, expected_logits) for out in results["logits"])
    assert all(f == expected_flops for f in results["flops"])
    # The forward thread counted its own 4 forwards, nothing of count_flops' passes.
    with torch.no_grad(), count_macs() as one:
        model(video)
    assert results["macs"] == 4 * one.macs > 0
    assert not model.training and model.execution == "sparse"


def test_count_flops_leaves_the_model_untouched() -> None:
    model = make_model()
    model.train()
    model.backend = "torch"
    hooks_before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    afnet.count_flops(model, clip())
    assert model.training and model.backend == "torch" and model.execution == "sparse"
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks_before


# -- caches keyed on everything they depend on -----------------------------------------------------
def test_fixed_policy_follows_its_ratio() -> None:
    policy = FixedPolicy("uniform", 0.25, 8)
    x = torch.zeros(2 * 8, 1, 1, 1)
    assert policy(x).sum(1).tolist() == [2, 2]
    policy.rt = 0.75  # the cached mask of rt 0.25 must not be returned
    assert policy(x).sum(1).tolist() == [6, 6] and policy.frames_per_video == 6


def test_center_cells_follow_their_ratio() -> None:
    policy = SpatialPolicy("center", 0.25, 4)
    x = torch.zeros(2, 1, 8, 8)
    assert policy(x, (8, 8)).sum(dim=(1, 2)).tolist() == [4, 4]
    policy.rs = 0.5
    assert policy(x, (8, 8)).sum(dim=(1, 2)).tolist() == [8, 8]


@pytest.mark.parametrize("ratio,total,kept", [(0.5, 5, 3), (0.25, 10, 3), (0.125, 4, 1), (0.3, 5, 2)])
def test_one_rounding_rule_for_frames_and_cells(ratio, total, kept) -> None:
    """Half up everywhere: at ratio·T = 2.5 a fixed policy and a budget both keep 3 frames."""
    assert count_for_ratio(ratio, total) == kept
    assert num_kept(ratio, total) == kept
    assert FixedPolicy("uniform", ratio, total)(torch.zeros(total, 1, 1, 1)).sum().item() == kept
    gates = build_model("af_resnet18", total)
    gates.frame_budget = ratio
    with torch.no_grad():
        _, masks = gates(torch.randn(1, total, 3, 32, 32), return_masks=True)
    assert all(int(m.sum()) == kept for m in masks)


def test_live_forward_walks_the_module_tree_once(monkeypatch) -> None:
    """Host work per eval forward: one walk of the modules (the plan's facts), no more."""
    model = make_model()
    video = clip()
    with torch.no_grad():
        model(video)
    walks = []
    original = nn.Module.modules

    def counted(self):
        walks.append(type(self).__name__)
        return original(self)

    monkeypatch.setattr(nn.Module, "modules", counted)
    with torch.no_grad():
        model(video)
    assert walks == ["AFResNet"], walks
    frozen = afnet.freeze(model)
    walks.clear()
    with torch.no_grad():
        frozen(video)
    assert walks == []


# -- CUDA graphs: the runner holds what the graph reads ------------------------------------------------
@needs_cuda
def test_cuda_graph_of_a_frozen_model_keeps_its_memory_and_refuses_after_rebuild(no_tf32) -> None:
    model = make_model().cuda()
    video = clip().cuda()
    frozen = afnet.freeze(model)
    expected = dense(model, video)
    runner = afnet.cuda_graph(frozen, video)
    del frozen  # the runner holds the snapshot, its plan, folded weights and caches
    model.train()
    model.eval()  # the live model drops and rebuilds its own plan: nothing the graph reads
    torch.cuda.empty_cache()
    torch.testing.assert_close(runner(video), expected, rtol=1e-4, atol=1e-5)
    inplace_update(model)
    torch.testing.assert_close(runner(video), expected, rtol=1e-4, atol=1e-5)  # still the snapshot
    runner.frozen.rebuild(model)
    with pytest.raises(RuntimeError, match="rebuilt since the CUDA graph was captured: call afnet.cuda_graph again"):
        runner(video)


@needs_cuda
@pytest.mark.parametrize("change", [inplace_update, replaced_module, changed_setting], ids=lambda f: f.__name__)
def test_cuda_graph_of_a_live_model_refuses_after_a_change(change, no_tf32) -> None:
    model = make_model().cuda()
    video = clip().cuda()
    runner = afnet.cuda_graph(model, video)
    torch.testing.assert_close(runner(video), dense(model, video), rtol=1e-4, atol=1e-5)
    change(model)
    with pytest.raises(RuntimeError, match="weights or settings changed since the CUDA graph was captured"):
        runner(video)
    model.frame_budget = 0.25  # a setting alone, on a fresh capture
    runner = afnet.cuda_graph(model, video)
    model.frame_budget = 0.5
    with pytest.raises(RuntimeError, match="weights or settings changed"):
        runner(video)
