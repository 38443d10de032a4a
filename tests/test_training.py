"""Training pieces: straight-through gradients in a model, schedules, the ratio loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import afnet
from afnet.layers import Navigation
from afnet.training.losses import afnet_loss, ratio_penalty, record_masks, selected_ratio
from afnet.training.schedules import set_temperature, target_ratio, temperature

N, T, SIZE = 2, 4, 32

pytestmark = pytest.mark.usefixtures("one_thread")


def small_resnet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return afnet.create_model("af_resnet18", num_classes=5, num_segments=T)


def navigations(model: torch.nn.Module):
    return [m for m in model.modules() if isinstance(m, Navigation)]


def video(seed: int = 1) -> torch.Tensor:
    return torch.randn(N, T, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


# -- Straight-through gradients ------------------------------------------------------------
def test_gradients_reach_navigation_through_straight_through():
    model = small_resnet()
    model.train()
    assert set_temperature(model, 1.0) == 3
    for nav in navigations(model):
        with torch.no_grad():
            nav.conv_gs.bias.zero_()  # unsaturated gates, so the soft gradient is sizeable
    target = torch.tensor([0, 3])
    with record_masks(model) as masks:
        logits = model(video())
    assert len(masks) == len(navigations(model)) == 3
    assert all(m.requires_grad for m in masks)
    assert all(bool(((m == 0) | (m == 1)).all()) for m in masks)  # hard forward values
    F.cross_entropy(logits, target).backward()  # no ratio term: the task loss alone
    for nav in navigations(model):
        for name in ("conv_pool.weight", "bn.weight", "conv_gs.weight", "conv_gs.bias"):
            grad = nav.get_parameter(name).grad
            assert grad is not None and torch.isfinite(grad).all()
            assert grad.abs().sum() > 0, name


def test_no_gradient_to_navigation_without_straight_through():
    """Control for the test above: with detached masks nothing reaches the gates."""
    model = small_resnet()
    model.train()
    for nav in navigations(model):
        nav.register_forward_hook(lambda module, inputs, out: out.detach())
    model(video()).sum().backward()
    assert all(nav.conv_gs.bias.grad is None for nav in navigations(model))


# -- Schedules ------------------------------------------------------------------------------
def test_exponential_temperature_released_defaults():
    iters = 100
    assert temperature(0, 0, iters) == pytest.approx(1.0)
    assert temperature(25, 0, iters) == pytest.approx(0.1)  # halfway: sqrt(t0 * t1)
    assert temperature(49, 99, iters) == pytest.approx(0.01 ** (4999 / 5000))
    assert temperature(50, 0, iters) == 0.01
    assert temperature(54, 10, iters) == 0.01
    # per iteration, not per epoch
    assert temperature(3, 7, iters) == pytest.approx(0.01 ** (307 / 5000))
    values = [temperature(e, i, 10) for e in range(50) for i in range(10)]
    assert all(a > b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("kind,mid", [("cosine", 0.505), ("linear", 0.505), ("exponential", 0.1)])
def test_temperature_schedules(kind, mid):
    assert temperature(0, 0, 4, kind=kind) == pytest.approx(1.0)
    assert temperature(25, 0, 4, kind=kind) == pytest.approx(mid)
    assert temperature(50, 0, 4, kind=kind) == 0.01
    assert temperature(1, 0, 2, kind=kind, t0=2.0, t1=0.5, t_end=4) == pytest.approx(
        {"cosine": 0.5 + 1.5 * (1 + math.cos(math.pi / 4)) / 2, "linear": 2 - 1.5 / 4, "exponential": 2 * 0.25**0.25}[kind]
    )


def test_temperature_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        temperature(0, 0, 1, kind="step")
    with pytest.raises(ValueError, match="t0"):
        temperature(0, 0, 1, t0=0.0)


@pytest.mark.parametrize("rt", [0.25, 0.4, 0.8])
def test_target_ratio_schedule(rt):
    expected = {0: 1.0, 9: 1.0, 10: rt + (1 - rt) * 2 / 3, 14: rt + (1 - rt) * 2 / 3,
                15: rt + (1 - rt) / 3, 19: rt + (1 - rt) / 3, 20: rt, 54: rt}
    for epoch, value in expected.items():
        assert target_ratio(epoch, rt) == pytest.approx(value), epoch
    assert target_ratio(12, rt, rt_begin=0, rt_end=5) == rt
    with pytest.raises(ValueError, match="rt"):
        target_ratio(0, 0.0)


# -- Ratio loss -----------------------------------------------------------------------------
def test_ratio_loss_value():
    logits = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([1, 0, 4])
    masks = [torch.tensor([[1.0, 1, 0, 0]]), torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, 1]])]
    penalty = ((0.5 - 0.3) ** 2 + (0.625 - 0.3) ** 2) / 2
    assert ratio_penalty(masks, 0.3).item() == pytest.approx(penalty)
    assert selected_ratio(masks).item() == pytest.approx(0.5625)
    loss = afnet_loss(logits, target, masks, 0.3, lam=0.5)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, target).item() + 0.5 * penalty, rel=1e-6)
    with pytest.raises(ValueError, match="masks"):
        ratio_penalty([], 0.5)


def measured_ratio(model: torch.nn.Module, clips: torch.Tensor) -> float:
    """Selected ratio in eval (deterministic gates)."""
    model.eval()
    with torch.no_grad():
        _, masks = model(clips, return_masks=True)
    model.train()
    return torch.stack([m.float().mean() for m in masks]).mean().item()


@pytest.mark.parametrize("rt", [0.25, 1.0])
def test_ratio_loss_moves_selected_ratio_toward_target(rt):
    model = small_resnet(seed=2)
    gen = torch.Generator().manual_seed(5)
    for nav in navigations(model):
        nav.tau = 1.0
        nav.generator = torch.Generator().manual_seed(9)
        with torch.no_grad():
            nav.conv_gs.bias.normal_(0.0, 0.5, generator=gen)  # start away from "all selected"
    clips = torch.randn(N, T, 3, SIZE, SIZE, generator=gen)
    target = torch.randint(0, 5, (N,), generator=gen)
    nav_params = [p for nav in navigations(model) for p in nav.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in nav_params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(nav_params, lr=0.05)
    before = measured_ratio(model, clips)
    model.train()
    for _ in range(6):
        optimizer.zero_grad()
        with record_masks(model) as masks:
            logits = model(clips)
        afnet_loss(logits, target, masks, rt, lam=1.0).backward()
        optimizer.step()
    after = measured_ratio(model, clips)
    assert abs(after - rt) < abs(before - rt) - 0.1, (before, after)
