"""``create_model`` options: what each arch accepts, clear errors naming the option, the resolved config,
and the README's list of options per arch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import afnet
from afnet.layers import Navigation
from afnet.models import ARCHS, architecture, computation_config

ARCH_OPTIONS = {a: architecture(a).options for a in ARCHS}

pytestmark = pytest.mark.usefixtures("two_threads")
README = Path(__file__).resolve().parents[1] / "README.md"


def create(arch: str = "af_resnet18", **kwargs):
    return afnet.create_model(arch, num_classes=3, num_segments=2, **kwargs)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        # alpha=0 used to raise ZeroDivisionError, alpha=3 to build a model with truncated widths.
        (dict(alpha=0), ValueError, r"alpha \(the ample width divisor\) must be a positive int dividing every "
                                    r"AF-stage width of af_resnet18 \(one of \[1, 2, 4, 8, 16, 32, 64\]\), got 0"),
        (dict(alpha=3), ValueError, r"alpha .* got 3"),
        (dict(alpha=2.0), ValueError, r"alpha .* got 2\.0"),
        (dict(focal_groups=0), ValueError, r"focal_groups \(the focal convs' groups\) must be a positive int"),
        (dict(focal_groups=128), ValueError, r"focal_groups .* got 128"),
        # shift="yes" used to be accepted as true.
        (dict(shift="yes"), TypeError, r"shift must be True or False, got 'yes' \(str\)"),
        (dict(shift=1), TypeError, r"shift must be True or False, got 1 \(int\)"),
        (dict(mix_frames="no"), TypeError, r"mix_frames must be True or False, got 'no'"),
        (dict(fill_zero_response=0), TypeError, r"fill_zero_response must be True or False, got 0"),
        (dict(soft_weights="True"), TypeError, r"soft_weights must be True or False"),
        (dict(fusion="concat"), ValueError, r"fusion must be one of \('dynamic', 'additive'\), got 'concat'"),
        (dict(rt=1.5), ValueError, r"rt must be a number in \(0, 1\] \(the training target ratio with "
                                   r"policy='navigation'\), got 1.5"),
        (dict(rt=True), ValueError, r"rt must be a number"),
        (dict(policy="uniform", rt=0), ValueError, r"rt must be a number in \(0, 1\] \(the ratio of selected frames"),
        (dict(dropout=1.0), ValueError, r"dropout must be a number in \[0, 1\), got 1.0"),
        (dict(colour="red"), TypeError, r"unknown option\(s\) \['colour'\] for af_resnet18; valid: \('alpha', "),
    ],
)
def test_bad_option_names_the_option(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        create(**kwargs)


def test_mobilenet_options() -> None:
    for name in ("alpha", "focal_groups"):
        with pytest.raises(TypeError, match=rf"unknown option\(s\) \['{name}'\] for af_mobilenetv3; valid: "
                                            r"\('mix_frames', 'fusion', 'fill_zero_response', 'soft_weights'\)"):
            create("af_mobilenetv3", **{name: 2})
    with pytest.raises(TypeError, match="mix_frames must be True or False"):
        create("af_mobilenetv3", mix_frames="yes")


@pytest.mark.parametrize("arch", ["af_resnet18", "af_mobilenetv3"])
def test_soft_weights_on_every_arch(arch: str) -> None:
    """The README promised soft-weights navigation for every arch; ResNets used to refuse it."""
    model = create(arch, soft_weights=True)
    gates = [m for m in model.modules() if isinstance(m, Navigation)]
    assert gates and all(g.soft for g in gates)
    model.eval()
    assert not model.runs_sparse  # soft weights are not 0/1 decisions: dense execution only
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 2, 3, 64, 64))).all()


def test_valid_divisors_build_and_run() -> None:
    model = create(alpha=4, focal_groups=4).eval()
    assert model.base_model.layer1.base_module[0].conv1.out_channels == 64 // 4
    assert model.base_model.layer1.refine_module[0].conv1.groups == 4
    with torch.inference_mode():
        assert model(torch.randn(1, 2, 3, 32, 32)).shape == (1, 3)


def test_config_holds_every_argument() -> None:
    """model.config is complete, so a checkpoint describes its model whatever the defaults become."""
    model = create(rt=0.4, fusion="additive")
    common = dict(arch="af_resnet18", num_classes=3, num_segments=2, shift=False, policy="navigation", rt=0.4,
                  dropout=0.5)
    assert model.config == {**common, **ARCH_OPTIONS["af_resnet18"], "fusion": "additive"}
    released = dict(alpha=2, focal_groups=2, mix_frames=False, fill_zero_response=True, soft_weights=False)
    assert released.items() <= model.config.items()
    mobile = create("af_mobilenetv3")
    assert set(mobile.config) - {"arch", "num_classes", "num_segments", "shift", "policy", "rt", "dropout"} == set(
        ARCH_OPTIONS["af_mobilenetv3"])


def test_navigation_rt_is_the_training_target_not_the_forward() -> None:
    """With policy="navigation", rt is recorded for training and does not change the forward."""
    a, b = create(), create(rt=0.25)
    b.load_state_dict(a.state_dict())
    video = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a.eval()(video), b.eval()(video))
    assert b.config["rt"] == 0.25
    assert "rt" not in computation_config(b.config) and "dropout" not in computation_config(b.config)
    fixed = create(policy="uniform", rt=0.5).config
    assert computation_config(fixed)["rt"] == 0.5
    assert "shift" not in computation_config(create("af_mobilenetv3").config)  # it always shifts


def test_readme_lists_exactly_the_options_of_each_arch() -> None:
    """The README's options table names, per arch, exactly what create_model accepts."""
    text = README.read_text()
    rows = re.findall(r"^ *\| ((?:`af_\w+`(?:, )?)+) \| ((?:`\w+`(?:, )?)+) \|", text, flags=re.M)
    listed = {}
    for archs, options in rows:
        for arch in re.findall(r"`(\w+)`", archs):
            listed[arch] = tuple(re.findall(r"`(\w+)`", options))
    assert listed == {arch: tuple(opts) for arch, opts in ARCH_OPTIONS.items()}
