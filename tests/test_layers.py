"""Shared AF layers: Gumbel-softmax, navigation, fusion, fixed policies."""

from __future__ import annotations

import math

import pytest
import torch

import afnet_kernels.reference as ref_ops
from afnet.layers import (
    AdditiveFusion,
    DynamicFusion,
    FixedPolicy,
    Navigation,
    fixed_policy_mask,
    gumbel_noise,
    hard_gumbel_softmax,
    num_kept,
)

T = 8


def frames(n: int = 2, t: int = T, c: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n * t, c, 5, 5, generator=torch.Generator().manual_seed(seed))


def trained_navigation(c: int = 16, t: int = T, mix_frames: bool = False, seed: int = 1) -> Navigation:
    """A navigation module with random weights and balanced biases, so masks are mixed."""
    nav = Navigation(c, t, mix_frames=mix_frames)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in nav.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        nav.bn.running_var.uniform_(0.5, 1.5, generator=g)
        nav.bn.running_mean.normal_(0, 0.1, generator=g)
        nav.bn.bias.fill_(3.0)  # keep the ReLU after bn active, so every input matters
        nav.conv_gs.weight.mul_(0.3)  # logit margins near 1, so Gumbel noise can flip gates
        nav.conv_gs.bias.mul_(0.3)
    return nav


# -- Gumbel -------------------------------------------------------------------------------
def test_gumbel_noise_formula():
    shape = (3, 4, 2)
    g = gumbel_noise(shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    u = torch.rand(shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = -torch.log(1e-10 - torch.log(u + 1e-10))
    torch.testing.assert_close(g, expected, rtol=0, atol=0)
    assert g.shape == shape


def test_gumbel_noise_is_gumbel_distributed():
    g = gumbel_noise((200_000,), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(g.mean().item() - 0.5772156649) < 0.01  # Euler–Mascheroni constant
    assert abs(g.var().item() - math.pi**2 / 6) < 0.03


def test_hard_gumbel_softmax_forward_is_one_hot_of_noisy_argmax():
    logits = torch.randn(6, T, 2, generator=torch.Generator().manual_seed(0))
    noise = gumbel_noise(logits.shape, generator=torch.Generator().manual_seed(1))
    y = hard_gumbel_softmax(logits, 0.5, noise)
    expected = torch.nn.functional.one_hot((logits + noise).argmax(-1), 2).float()
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-7)
    # Without noise: the argmax of the logits.
    y0 = hard_gumbel_softmax(logits, 0.5)
    torch.testing.assert_close(y0, torch.nn.functional.one_hot(logits.argmax(-1), 2).float(), rtol=0, atol=1e-7)


@pytest.mark.parametrize("tau", [0.3, 1.0, 4.0])
def test_hard_gumbel_softmax_straight_through_gradient(tau):
    logits = torch.randn(4, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    noise = gumbel_noise(logits.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    w = torch.randn(4, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    (hard_gumbel_softmax(logits, tau, noise) * w).sum().backward()
    # The gradient is that of the soft sample softmax((l + g) / tau).
    soft_logits = logits.detach().clone().requires_grad_(True)
    (torch.softmax((soft_logits + noise) / tau, dim=-1) * w).sum().backward()
    torch.testing.assert_close(logits.grad, soft_logits.grad)
    assert logits.grad.abs().sum() > 0


def test_hard_gumbel_softmax_rejects_bad_tau():
    with pytest.raises(ValueError, match="tau"):
        hard_gumbel_softmax(torch.zeros(2, 2), 0.0)


# -- Navigation ---------------------------------------------------------------------------
def test_navigation_structure_and_init_selects_all_frames():
    nav = Navigation(24, T)
    assert nav.conv_pool.weight.shape == (2, 24, 1, 1) and nav.conv_pool.bias is None
    assert nav.conv_gs.weight.shape == (2 * T, 2, 1, 1) and nav.conv_gs.groups == T
    assert torch.equal(nav.conv_gs.bias[0::2], torch.ones(T))
    assert torch.equal(nav.conv_gs.bias[1::2], torch.full((T,), 10.0))
    x = frames(c=24)
    assert nav(x).shape == (2, T)
    assert bool((nav(x) == 1).all())  # training, with noise
    nav.eval()
    assert bool((nav(x) == 1).all())
    mixed = Navigation(24, T, mix_frames=True)
    assert mixed.conv_gs.weight.shape == (2 * T, 2 * T, 1, 1) and mixed.conv_gs.groups == 1


def test_navigation_logits_layout():
    """Channel ``2t + j`` of conv_gs is logit j of frame t."""
    nav = trained_navigation().eval()
    x = frames()
    pooled = torch.relu(nav.bn(nav.conv_pool(x.mean(dim=(2, 3), keepdim=True))))
    per_video = nav.conv_gs(pooled.reshape(2, 2 * T, 1, 1)).reshape(2, 2 * T)
    logits = nav.logits(x)
    torch.testing.assert_close(logits[:, :, 0], per_video[:, 0::2])
    torch.testing.assert_close(logits[:, :, 1], per_video[:, 1::2])


@pytest.mark.parametrize("mix_frames", [False, True])
def test_navigation_frame_dependence(mix_frames):
    """Grouped form: a frame's gate depends only on that frame; mixed form: on all frames."""
    nav = trained_navigation(mix_frames=mix_frames).eval()
    x = frames()
    base = nav.logits(x)
    y = x.clone()
    y[3] += 5 * torch.randn_like(y[3])  # video 0, frame 3
    changed = (nav.logits(y) - base).abs().amax(dim=-1) > 1e-6
    assert bool(changed[0, 3])
    assert not bool(changed[1].any())  # other videos never change
    others = torch.cat([changed[0, :3], changed[0, 4:]])
    assert bool(others.any()) == mix_frames


def test_navigation_eval_is_deterministic_argmax():
    nav = trained_navigation().eval()
    x = frames()
    logits = nav.logits(x)
    mask = nav(x)
    assert torch.equal(mask, (logits[..., 1] > logits[..., 0]).float())
    assert 0 < mask.sum() < mask.numel()  # a mixed mask, so the test can fail
    assert torch.equal(nav(x), mask)


def test_navigation_noisy_eval_is_seeded():
    nav = trained_navigation().eval()
    x = frames()
    nav.set_eval_noise(True, seed=7)
    first = [nav(x) for _ in range(4)]
    nav.set_eval_noise(True, seed=7)
    again = [nav(x) for _ in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    logits = nav.logits(x)
    noise = gumbel_noise(logits.shape, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first[0], ((logits + noise).argmax(-1) == 1).float())
    assert any(not torch.equal(first[0], m) for m in first[1:])  # the noise varies per call
    nav.set_eval_noise(False)
    assert torch.equal(nav(x), (logits[..., 1] > logits[..., 0]).float())


def test_navigation_training_mask_depends_on_noise_not_on_temperature():
    nav = trained_navigation()
    nav.train()
    x = frames()
    masks = {}
    grads = {}
    for tau in (0.1, 1.0):
        nav.tau = tau
        nav.generator = torch.Generator().manual_seed(11)
        nav.zero_grad()
        m = nav(x)
        m.sum().backward()
        masks[tau] = m.detach()
        grads[tau] = nav.conv_gs.bias.grad.clone()
    # The hard forward value ignores tau; the straight-through gradient does not.
    assert torch.equal(masks[0.1], masks[1.0])
    assert not torch.allclose(grads[0.1], grads[1.0])
    # Different noise gives different masks (same logits).
    samples = set()
    for seed in range(8):
        nav.generator = torch.Generator().manual_seed(seed)
        samples.add(tuple(nav(x).detach().flatten().tolist()))
    assert len(samples) > 1


def test_navigation_soft_weights_variant():
    nav = trained_navigation()
    nav.soft = True
    x = frames()
    mask = nav(x)
    torch.testing.assert_close(mask, torch.softmax(nav.logits(x), dim=-1)[..., 1])
    assert not nav.is_binary
    assert bool(((mask > 0) & (mask < 1)).any())


def test_navigation_rejects_bad_batch():
    with pytest.raises(ValueError, match="num_segments"):
        Navigation(16, T)(torch.randn(T + 1, 16, 3, 3))


# -- Fusion -------------------------------------------------------------------------------
@pytest.mark.parametrize("relu", [False, True])
def test_dynamic_fusion_matches_formula(relu):
    torch.manual_seed(0)
    fusion = DynamicFusion(32, reduction=16, bias=True)
    with torch.no_grad():
        for p in fusion.parameters():
            p.normal_()
    assert fusion.fc[0].weight.shape == (2, 32) and fusion.fc[2].weight.shape == (32, 2)
    ample, focal = torch.randn(4, 32, 3, 3), torch.randn(4, 32, 6, 6)
    up = torch.nn.functional.interpolate(ample, size=(6, 6), mode="nearest")
    theta = torch.sigmoid(fusion.fc((up + focal).mean(dim=(2, 3))))[:, :, None, None]
    expected = theta * up + (1 - theta) * focal
    expected = torch.relu(expected) if relu else expected
    torch.testing.assert_close(fusion(ample, focal, relu=relu, ops=ref_ops), expected)
    assert DynamicFusion(64).fc[0].bias is None


def test_additive_fusion():
    ample, focal = torch.randn(2, 8, 2, 2), torch.randn(2, 8, 4, 4)
    up = ample.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(AdditiveFusion()(ample, focal, relu=True, ops=ref_ops), torch.relu(up + focal))


# -- Fixed policies -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["random", "uniform", "normal"])
@pytest.mark.parametrize("rt,t", [(0.25, 8), (0.5, 8), (0.4, 12), (1.0, 8), (0.01, 8), (0.5, 1)])
def test_fixed_policy_exact_ratio(kind, rt, t):
    mask = fixed_policy_mask(kind, rt, 5, t, generator=torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and mask.shape == (5, t)
    assert (mask.sum(1) == max(1, round(rt * t))).all()


def test_uniform_policy_equal_steps():
    assert fixed_policy_mask("uniform", 0.25, 1, 8)[0].nonzero().flatten().tolist() == [2, 6]
    assert fixed_policy_mask("uniform", 0.375, 1, 8)[0].nonzero().flatten().tolist() == [1, 4, 6]
    assert fixed_policy_mask("uniform", 0.5, 1, 8)[0].nonzero().flatten().tolist() == [1, 3, 5, 7]
    m = fixed_policy_mask("uniform", 0.5, 3, 8)
    assert torch.equal(m[0], m[1]) and torch.equal(m[0], m[2])


def test_random_policies_are_seeded_and_vary():
    for kind in ("random", "normal"):
        a = fixed_policy_mask(kind, 0.5, 16, 8, generator=torch.Generator().manual_seed(3))
        b = fixed_policy_mask(kind, 0.5, 16, 8, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a, b)
        assert len({tuple(r.tolist()) for r in a}) > 1


def test_normal_policy_prefers_the_centre():
    m = fixed_policy_mask("normal", 0.25, 4000, 8, generator=torch.Generator().manual_seed(0)).float().mean(0)
    assert m[3] > 2 * m[0] and m[4] > 2 * m[7]


def test_fixed_policy_module_and_bad_arguments():
    policy = FixedPolicy("uniform", 0.5, 8)
    mask = policy(torch.randn(16, 4, 2, 2, dtype=torch.float64))
    assert mask.dtype == torch.float64 and mask.shape == (2, 8) and mask.sum() == 8
    assert list(policy.parameters()) == []
    with pytest.raises(ValueError, match="rt"):
        num_kept(0.0, 8)
    with pytest.raises(ValueError, match="rt"):
        fixed_policy_mask("random", 1.5, 1, 8)
    with pytest.raises(ValueError, match="kind"):
        fixed_policy_mask("gaussian", 0.5, 1, 8)
