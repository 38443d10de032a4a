"""Checkpoint loading: our format, the released layouts, partial loading, clear errors."""

from __future__ import annotations

import collections
import pickle

import pytest
import torch

import afnet
from afnet import CheckpointError, load_checkpoint, save_checkpoint
from model_utils import build_model, fixture_state_dict, load_fixture

pytestmark = pytest.mark.usefixtures("two_threads")


@pytest.fixture(scope="module")
def released_state():
    """The released AF-ResNet50 video model's keys (``keys_shapes`` of the golden fixture)."""
    return fixture_state_dict(load_fixture("af_resnet50_t8"))


@pytest.fixture(scope="module")
def video_model():
    return afnet.create_model("af_resnet50", num_classes=174, num_segments=8)


def assert_loaded(model, state, prefix=""):
    ours = model.state_dict()
    for key, value in state.items():
        assert torch.equal(ours[prefix + key], value), key


def test_round_trip_our_format(tmp_path) -> None:
    model = build_model("af_resnet18", 2, seed=3)
    path = tmp_path / "model.pt"
    save_checkpoint(model, path, epoch=7)
    payload = torch.load(path, weights_only=True)
    assert payload["config"]["arch"] == "af_resnet18" and payload["epoch"] == 7
    fresh = afnet.create_model("af_resnet18", num_classes=7, num_segments=2).eval()
    report = load_checkpoint(fresh, path)
    assert report.ok and len(report.loaded) == len(model.state_dict())
    video = torch.randn(1, 2, 3, 32, 32)
    assert torch.equal(fresh(video), model(video))


@pytest.mark.parametrize("prefix", ["module.", ""])
def test_released_video_layout(prefix: str, released_state, video_model) -> None:
    checkpoint = {
        "epoch": 40,
        "arch": "resnet50",
        "state_dict": collections.OrderedDict((prefix + k, v) for k, v in released_state.items()),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]},
        "best_prec1": 27.7,
        "prec1_list": [1.0, 2.0],
    }
    report = load_checkpoint(video_model, checkpoint)
    assert report.ok and report.layout == "released video model"
    assert_loaded(video_model, released_state)


def test_released_imagenet_backbone(released_state, tmp_path) -> None:
    backbone = {"module." + k[len("base_model."):]: v for k, v in released_state.items() if k.startswith("base_model.")}
    backbone["module.fc.weight"] = torch.randn(1000, 2048)
    backbone["module.fc.bias"] = torch.randn(1000)
    path = tmp_path / "AF-ResNet50.pth.tar"
    torch.save({"state_dict": backbone}, path)
    # Same classes: the backbone's fc becomes new_fc.
    imagenet = afnet.create_model("af_resnet50", num_classes=1000, num_segments=8)
    assert load_checkpoint(imagenet, path).ok
    assert torch.equal(imagenet.state_dict()["new_fc.weight"], backbone["module.fc.weight"])
    # New classes: fatal unless partial loading is asked for.
    model = afnet.create_model("af_resnet50", num_classes=174, num_segments=8)
    with pytest.raises(CheckpointError, match=r"new_fc.weight \(checkpoint \(1000, 2048\) vs model \(174, 2048\)\)"):
        load_checkpoint(model, path)
    report = load_checkpoint(model, path, strict=False)
    assert [k for k, _, _ in report.mismatched] == ["new_fc.weight", "new_fc.bias"]
    assert not report.missing and not report.unexpected
    assert_loaded(model, {k: v for k, v in released_state.items() if k.startswith("base_model.")})


def test_missing_and_unexpected_keys_are_reported(released_state, video_model) -> None:
    state = dict(released_state)
    del state["base_model.layer2.att_gen.fc.0.weight"]
    state["base_model.layer9.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(video_model, {"state_dict": state})
    message = str(info.value)
    assert "1 missing in checkpoint: base_model.layer2.att_gen.fc.0.weight" in message
    assert "1 unexpected in checkpoint: base_model.layer9.weight" in message
    assert "strict=False" in message
    report = load_checkpoint(video_model, {"state_dict": state}, strict=False)
    assert report.missing == ["base_model.layer2.att_gen.fc.0.weight"]


def test_wrong_arch_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "r18.pt"
    save_checkpoint(afnet.create_model("af_resnet18", num_classes=5, num_segments=2), path)
    model = afnet.create_model("af_resnet50", num_classes=5, num_segments=2)
    with pytest.raises(CheckpointError, match=r"checkpoint \(arch 'af_resnet18'\) does not fit model 'af_resnet50'"):
        load_checkpoint(model, path)
    with pytest.raises(CheckpointError, match="no tensor matches"):
        load_checkpoint(model, {"state_dict": {"encoder.weight": torch.zeros(3)}}, strict=False)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_loads_with_weights_only(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "extra": _Payload()}, path)
    model = afnet.create_model("af_resnet18", num_classes=5, num_segments=2)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(model, path)


def test_bad_argument() -> None:
    model = afnet.create_model("af_resnet18", num_classes=5, num_segments=2)
    with pytest.raises(TypeError, match="path_or_dict"):
        load_checkpoint(model, 42)
