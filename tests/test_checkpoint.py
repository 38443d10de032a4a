"""Checkpoints: our format (config, digest, storable extras, atomic writes), the released layouts,
wrapper prefixes, config checks, one clear error per unreadable file, and build_from_checkpoint."""

from __future__ import annotations

import argparse
import collections
import enum
import os
import pathlib
import re
import zipfile

import numpy as np
import pytest
import torch

import afnet
from afnet import CheckpointError, build_from_checkpoint, load_checkpoint, read_checkpoint, save_checkpoint
from model_utils import build_model, fixture_state_dict, load_fixture

pytestmark = pytest.mark.usefixtures("two_threads")

def small(seed: int = 3, **options) -> torch.nn.Module:
    """An eval-mode AF-ResNet18, T=2, 7 classes, with random non-trivial weights."""
    return build_model("af_resnet18", 2, seed=seed, **options)


def video(t: int = 2) -> torch.Tensor:
    return torch.randn(1, t, 3, 32, 32, generator=torch.Generator().manual_seed(11))


def logits(model: torch.nn.Module, t: int = 2) -> torch.Tensor:
    with torch.inference_mode():
        return model.eval()(video(t))


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


# ----------------------------------------------------------------------------- our format


def test_round_trip_our_format(tmp_path) -> None:
    model = small()
    path = tmp_path / "model.pt"
    save_checkpoint(model, path, epoch=7)
    payload = torch.load(path, weights_only=True)
    assert payload["config"] == model.config and payload["epoch"] == 7
    assert payload["digest"].startswith("sha256:") and len(payload["digest"]) == len("sha256:") + 64
    fresh = afnet.create_model("af_resnet18", num_classes=7, num_segments=2).eval()
    assert not torch.equal(logits(fresh), logits(model))
    report = load_checkpoint(fresh, path)
    assert report.ok and len(report.loaded) == len(model.state_dict())
    assert report.digest_verified and report.config == model.config and report.extra == {"epoch": 7}
    assert torch.equal(logits(fresh), logits(model))


class Color(str, enum.Enum):
    RED = "red"


Pair = collections.namedtuple("Pair", "a b")


def test_extras_are_converted_to_weights_only_types(tmp_path) -> None:
    """numpy scalars/arrays, Namespace, Path, enums, named tuples and sets load back with weights_only."""
    path = tmp_path / "extras.pt"
    args = argparse.Namespace(lr=np.float32(0.25), out=pathlib.Path("runs/a"), arch="af_resnet18")
    save_checkpoint(
        small(), path, best=np.float64(0.5), step=np.int64(3), flag=np.bool_(True), args=args,
        hist=np.array([[1.5, 2.5]], dtype=">f8"), names=np.array(["a", "b"]), color=Color.RED,
        pair=Pair(1, 2), tags={"x", pathlib.Path("y")}, frozen=frozenset({4}), keys={pathlib.Path("k"): 1},
    )
    extra = load_checkpoint(small(), path).extra
    assert extra["best"] == 0.5 and type(extra["best"]) is float
    assert extra["step"] == 3 and type(extra["step"]) is int
    assert extra["flag"] is True
    assert extra["args"] == {"lr": 0.25, "out": os.path.join("runs", "a"), "arch": "af_resnet18"}
    assert torch.equal(extra["hist"], torch.tensor([[1.5, 2.5]], dtype=torch.float64))
    assert extra["names"] == ["a", "b"] and extra["color"] == "red" and extra["pair"] == (1, 2)
    assert extra["tags"] == {"x", "y"} and extra["frozen"] == {4} and extra["keys"] == {"k": 1}


@pytest.mark.parametrize(
    "extra, where",
    [
        (dict(opt={"foo": object()}), r"extra\['opt'\]\['foo'\] is a builtins.object"),
        (dict(hist=[1, {"f": lambda x: x}]), r"extra\['hist'\]\[1\]\['f'\] is a builtins.function"),
        (dict(args=argparse.Namespace(gen=torch.Generator())), r"extra\['args'\].gen .*get_state\(\)"),
        (dict(net=torch.nn.Linear(2, 2)), r"extra\['net'\] .*state_dict\(\)"),
        (dict(when=np.datetime64("2024-01-01T00:00:00")), r"extra\['when'\] is a datetime.datetime"),
    ],
)
def test_unloadable_extras_fail_at_save_time(tmp_path, extra, where) -> None:
    path = tmp_path / "bad.pt"
    with pytest.raises(TypeError, match=where):
        save_checkpoint(small(), path, **extra)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


def test_reserved_and_self_containing_extras(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"\['config'\] are reserved"):
        save_checkpoint(small(), tmp_path / "a.pt", config={})
    loop: list = []
    loop.append(loop)
    with pytest.raises(TypeError, match=r"extra\['loop'\]\[0\] contains itself"):
        save_checkpoint(small(), tmp_path / "a.pt", loop=loop)


def test_write_is_atomic(tmp_path, monkeypatch) -> None:
    """A save that fails half-way leaves the previous file as it was, and no temporary file."""
    path = tmp_path / "model.pt"
    save_checkpoint(small(), path, epoch=1)
    before = path.read_bytes()
    real_save = torch.save

    def crash(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(small(seed=4), path, epoch=2)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(small(), path).extra == {"epoch": 1}


def test_wrapped_models_save_clean_keys(tmp_path) -> None:
    model = small()
    for wrapped in (torch.compile(model), torch.nn.DataParallel(model)):
        path = tmp_path / "wrapped.pt"
        save_checkpoint(wrapped, path)
        payload = torch.load(path, weights_only=True)
        assert list(payload["state_dict"]) == list(model.state_dict()) and payload["config"] == model.config


# ----------------------------------------------------------------------------- digest


def test_digest_mismatch_is_refused(tmp_path) -> None:
    """A tensor changed after saving (the zip rewritten consistently, the digest kept) is refused."""
    path = tmp_path / "model.pt"
    save_checkpoint(small(), path)
    payload = torch.load(path, weights_only=True)
    key = "base_model.layer1.refine_module.0.conv1.weight"
    payload["state_dict"][key][0, 0, 0, 0] += 1e-3
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=rf"checkpoint {path}: digest mismatch"):
        load_checkpoint(small(), path)
    # A dict passed in is the caller's own, edited on purpose or not: it is not checked.
    report = load_checkpoint(small(), payload)
    assert report.ok and not report.digest_verified
    payload["state_dict"][key][0, 0, 0, 0] -= 1e-3
    payload["epoch"] = 8  # metadata is covered too
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="digest mismatch"):
        read_checkpoint(path)


def test_flipped_bytes_are_detected(tmp_path) -> None:
    """200 bytes flipped in the middle of the file: the zip's CRC-32 catches what torch.load misses."""
    for name, save in (("ours.pt", lambda m, p: save_checkpoint(m, p)),
                       ("released.pth.tar", lambda m, p: torch.save({"state_dict": m.state_dict()}, p))):
        path = tmp_path / name
        save(small(), path)
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 200] = bytes(b ^ 0xFF for b in data[middle : middle + 200])
        path.write_bytes(bytes(data))
        torch.load(path, weights_only=True)  # what used to happen: it loads
        with pytest.raises(CheckpointError, match=rf"cannot read checkpoint {path}: the zip archive is damaged"):
            load_checkpoint(small(), path)


# ----------------------------------------------------------------------------- unreadable files


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def _write(kind: str, path: pathlib.Path) -> None:
    good = path.with_suffix(".good")
    torch.save({"state_dict": small().state_dict()}, good)
    data = good.read_bytes()
    good.unlink()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("epoch,top1\n1,0.5\n")
    elif kind == "lfs":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 100\n")
    elif kind == "html":
        path.write_text("<!DOCTYPE html><html><body>Not found</body></html>")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_end":
        path.write_bytes(data[:-10])
    elif kind == "zip_header":
        path.write_bytes(data[:300] + bytes(200) + data[500:])
    elif kind == "evil":
        torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "extra": _Payload()}, path)
    elif kind == "numpy":
        torch.save({"best": np.float64(0.5)}, path)
    elif kind == "list":
        torch.save([torch.zeros(1)], path)
    elif kind == "legacy_truncated":
        torch.save({"a": torch.zeros(3)}, path, _use_new_zipfile_serialization=False)
        path.write_bytes(path.read_bytes()[:20])
    elif kind == "directory":
        path.mkdir()
    elif kind == "newer":
        save_checkpoint(small(), path)
        payload = torch.load(path, weights_only=True)
        payload["afnet_checkpoint"] = 99
        torch.save(payload, path)
    elif kind == "no_digest":
        save_checkpoint(small(), path)
        payload = torch.load(path, weights_only=True)
        del payload["digest"]
        torch.save(payload, path)
    else:
        assert kind == "missing"


@pytest.mark.parametrize(
    "kind, cause",
    [
        ("missing", "No such file or directory"),
        ("directory", "it is a directory"),
        ("empty", r"the file is empty \(0 bytes\)"),
        ("text", "not a file written by torch.save: it is a text file starting with 'epoch,top1"),
        ("lfs", "Git LFS pointer"),
        ("html", "HTML page"),
        ("truncated", "the zip archive is damaged"),
        ("truncated_end", "the zip archive is damaged"),
        ("zip_header", "the zip archive is damaged"),
        ("legacy_truncated", "truncated"),
        ("evil", r"torch.load\(weights_only=True\) refused it: .*GLOBAL print was not an allowed global"),
        ("numpy", r"refused it: .*numpy"),
        ("list", "holds a list, not a dict"),
        ("newer", "has afnet format 99; this version of afnet reads formats 1 to 2"),
        ("no_digest", "has no content digest"),
    ],
)
def test_unreadable_file_gives_one_clear_error(tmp_path, capsys, kind, cause) -> None:
    path = tmp_path / f"{kind}.pt"
    _write(kind, path)
    model = small()
    for call in (lambda: load_checkpoint(model, path), lambda: build_from_checkpoint(path)):
        with pytest.raises(CheckpointError) as info:
            call()
        message = str(info.value)
        assert type(info.value) is CheckpointError
        assert str(path) in message and re.search(cause, message), message
    assert "this must never run" not in capsys.readouterr().out


def test_bad_argument() -> None:
    with pytest.raises(TypeError, match="path_or_dict"):
        load_checkpoint(small(), 42)


# ----------------------------------------------------------------------------- config checks


def test_config_mismatch_is_refused_naming_every_field(tmp_path) -> None:
    """A no-shift checkpoint in a shift=True model used to load strictly and predict wrongly."""
    path = tmp_path / "noshift.pt"
    model = small()
    save_checkpoint(model, path)
    shifted = afnet.create_model("af_resnet18", num_classes=7, num_segments=2, shift=True)
    with pytest.raises(CheckpointError, match=r"shift: checkpoint False, model True\. Pass check_config=False"):
        load_checkpoint(shifted, path)
    other = afnet.create_model("af_resnet18", num_classes=7, num_segments=3, fusion="additive", alpha=4,
                               mix_frames=True, fill_zero_response=False, policy="uniform", rt=0.5)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(other, path, strict=False)
    for field in ("num_segments: checkpoint 2, model 3", "policy: checkpoint 'navigation', model 'uniform'",
                  "alpha: checkpoint 2, model 4", "mix_frames: checkpoint False, model True",
                  "fusion: checkpoint 'dynamic', model 'additive'", "fill_zero_response: checkpoint True, model False",
                  "rt: checkpoint '<absent>', model 0.5"):
        assert field in str(info.value)
    # The caller may override: the weights load and the shifted model computes differently.
    report = load_checkpoint(shifted, path, check_config=False)
    assert report.ok and not torch.equal(logits(shifted), logits(model))


def test_training_only_fields_are_not_compared(tmp_path) -> None:
    """dropout and the navigation target ratio do not change the forward."""
    path = tmp_path / "a.pt"
    save_checkpoint(small(), path)
    model = afnet.create_model("af_resnet18", num_classes=7, num_segments=2, dropout=0.2, rt=0.3)
    assert load_checkpoint(model, path).ok
    fixed = afnet.create_model("af_resnet18", num_classes=7, num_segments=2, policy="uniform", rt=0.5)
    save_checkpoint(fixed, path)
    with pytest.raises(CheckpointError, match=r"rt: checkpoint 0.5, model 1.0"):
        load_checkpoint(afnet.create_model("af_resnet18", num_classes=7, num_segments=2, policy="uniform", rt=1.0),
                        path)


def test_format_1_without_resolved_config_still_loads(tmp_path) -> None:
    """Format 1 stored only the arguments given; the defaults fill the rest before comparing."""
    model = small()
    path = tmp_path / "v1.pt"
    config = {"arch": "af_resnet18", "num_classes": 7, "num_segments": 2, "shift": False, "policy": "navigation",
              "rt": None, "dropout": 0.5}
    torch.save({"afnet_checkpoint": 1, "state_dict": model.state_dict(), "config": config}, path)
    fresh = afnet.create_model("af_resnet18", num_classes=7, num_segments=2, fusion="dynamic")
    report = load_checkpoint(fresh, path)
    assert report.ok and not report.digest_verified
    assert torch.equal(logits(fresh), logits(model))
    with pytest.raises(CheckpointError, match="alpha: checkpoint 2, model 1"):
        load_checkpoint(afnet.create_model("af_resnet18", num_classes=7, num_segments=2, alpha=1), path)


# ----------------------------------------------------------------------------- released layouts, prefixes


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
    assert report.extra["epoch"] == 40 and report.config is None and not report.digest_verified
    assert_loaded(video_model, released_state)


@pytest.mark.parametrize(
    "rename",
    [
        lambda k: "module.module." + k,  # DataParallel inside DDP
        lambda k: "_orig_mod." + k,  # torch.compile(model)
        lambda k: "module._orig_mod." + k,  # DDP(torch.compile(model))
        lambda k: "_orig_mod.module." + k,  # torch.compile(DDP(model))
        lambda k: k.replace("base_model.", "base_model._orig_mod.", 1),  # model.base_model = torch.compile(...)
    ],
    ids=["module.module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module.", "base_model._orig_mod."],
)
def test_wrapper_prefixes_are_stripped(rename, tmp_path) -> None:
    model = small()
    path = tmp_path / "wrapped.pth.tar"
    torch.save({"state_dict": {rename(k): v for k, v in model.state_dict().items()}}, path)
    fresh = afnet.create_model("af_resnet18", num_classes=7, num_segments=2)
    report = load_checkpoint(fresh, path)
    assert report.ok and report.layout == "released video model"
    assert torch.equal(logits(fresh), logits(model))


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
    with pytest.raises(CheckpointError, match=r"arch: checkpoint 'af_resnet18', model 'af_resnet50'"):
        load_checkpoint(model, path)
    with pytest.raises(CheckpointError, match=r"\(arch 'af_resnet18'\) does not fit model 'af_resnet50'"):
        load_checkpoint(model, path, check_config=False)
    with pytest.raises(CheckpointError, match="no tensor matches"):
        load_checkpoint(model, {"state_dict": {"encoder.weight": torch.zeros(3)}}, strict=False)


# ----------------------------------------------------------------------------- build_from_checkpoint


def test_build_from_our_checkpoint(tmp_path) -> None:
    model = small(fusion="additive", mix_frames=True)
    path = tmp_path / "model.pt"
    save_checkpoint(model, path, epoch=3)
    built, report = build_from_checkpoint(path)
    assert not built.training and built.config == model.config and report.ok and report.extra == {"epoch": 3}
    assert torch.equal(logits(built), logits(model))
    # Overrides that keep the computation are fine; others are refused, naming each field.
    assert build_from_checkpoint(path, dropout=0.1)[0].config["dropout"] == 0.1
    with pytest.raises(CheckpointError, match=
                       r"num_classes: checkpoint 7, given 10; shift: checkpoint False, given True"):
        build_from_checkpoint(path, num_classes=10, shift=True)
    tuned, report = build_from_checkpoint(path, num_classes=10, check_config=False, strict=False)
    assert tuned.config["num_classes"] == 10
    assert [k for k, _, _ in report.mismatched] == ["new_fc.weight", "new_fc.bias"]


def test_build_from_released_checkpoint(tmp_path) -> None:
    model = small()
    path = tmp_path / "AFNet_something_RT0.25.pth.tar"
    torch.save({"epoch": 40, "arch": "resnet18",
                "state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, path)
    with pytest.raises(CheckpointError, match=rf"{path} carries no model config .*: pass num_segments, num_classes"):
        build_from_checkpoint(path, arch="af_resnet18")
    with pytest.raises(CheckpointError, match="pass arch, num_segments, num_classes"):
        build_from_checkpoint(path)
    built, report = build_from_checkpoint(path, arch="af_resnet18", num_segments=2, num_classes=7)
    assert report.ok and report.extra["epoch"] == 40 and torch.equal(logits(built), logits(model))
    with pytest.raises(CheckpointError, match="new_fc.weight"):
        build_from_checkpoint(path, arch="af_resnet18", num_segments=2, num_classes=9)
    with pytest.raises(ValueError, match="arch must be one of"):
        build_from_checkpoint(path, arch="resnet18", num_segments=2, num_classes=7)


def test_build_from_unbuildable_config(tmp_path) -> None:
    path = tmp_path / "future.pt"
    model = small()
    save_checkpoint(model, path)
    payload = torch.load(path, weights_only=True)
    payload["config"]["warp_drive"] = True
    del payload["digest"]
    payload["afnet_checkpoint"] = 1
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"config does not build a model: unknown option\(s\) \['warp_drive'\]"):
        build_from_checkpoint(path, check_config=False)


def test_zip_members_without_crc_are_not_flagged(tmp_path) -> None:
    """Files written with CRC-32 off (torch.serialization.set_crc32_options(False)) still load."""
    path = tmp_path / "nocrc.pt"
    torch.serialization.set_crc32_options(False)
    try:
        save_checkpoint(small(), path)
    finally:
        torch.serialization.set_crc32_options(True)
    with zipfile.ZipFile(path) as archive:
        assert any(info.CRC == 0 and info.file_size for info in archive.infolist())
    assert load_checkpoint(small(), path).ok
