"""Training: config resolution and its errors, the optimiser recipe, exact resume, bad data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

import afnet
from afnet.cli import main as cli_main
from afnet.data.demo_files import write_demo_data
from afnet.data.datasets import ClipDataset, MotionSource
from afnet.data.lists import DataError
from afnet.data.sampling import tsn_test_indices
from afnet.data.synthetic import MotionTask
from afnet.data.transforms import EvalTransform, normalize
from afnet.layers import Navigation
from afnet.training.config import BUILTIN_TASK, ConfigError, TrainConfig, resolve_config
from afnet.training.optim import learning_rate, param_groups
from afnet.training.runfiles import read_log
from afnet.training.distributed import DistInfo
from afnet.training.trainer import Trainer, build_model, train
from data_utils import write_lines
from train_utils import state_of, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


# -- configuration -------------------------------------------------------------------------------
def test_defaults_are_the_paper_recipe_and_the_builtin_task_without_data():
    paper = resolve_config(flags={"train_list": "t.txt", "val_list": "v.txt"})
    assert (paper.arch, paper.lr, paper.lr_steps, paper.epochs, paper.batch_size) == ("af_resnet50", 0.01, [25, 45], 55, 32)
    assert (paper.nav_lr_mult, paper.clip_grad, paper.lam, paper.tau0, paper.tau1, paper.tau_end) == (10, 20, 0.5, 1, 0.01, 50)
    assert (paper.rt_begin, paper.rt_end, paper.momentum, paper.nav_bias) == (10, 20, 0.9, [1.0, 10.0])
    builtin = resolve_config()
    assert all(getattr(builtin, k) == v for k, v in BUILTIN_TASK.items())
    assert builtin.uses_builtin_task and builtin.arch == "af_resnet18" and builtin.shift and not builtin.flip


CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_resolve(path):
    cfg = resolve_config(path)
    if path.name == "builtin.yaml":  # the documented copy of the defaults
        assert cfg == resolve_config()
    else:
        assert cfg.train_list and cfg.rt and cfg.pretrained


def test_committed_demo_run_is_the_default_recipe_and_its_navigation_beats_chance():
    """docs/demo-run is the default run the README quotes: regenerate it when the defaults change."""
    demo = Path(__file__).parent.parent / "docs" / "demo-run"
    ran = yaml.safe_load((demo / "config.yaml").read_text())
    defaults = resolve_config().to_dict()
    assert {k: ran[k] for k in defaults if k != "out"} == {k: v for k, v in defaults.items() if k != "out"}
    last = [json.loads(line) for line in (demo / "log.jsonl").read_text().splitlines()][-1]
    report = json.loads((demo / "eval.json").read_text())
    assert last["epoch"] == defaults["epochs"] and report["nav_precision"] == last["val_nav_precision"]
    # Every module keeps frames that show the square more often than chance.
    assert all(p > report["nav_base_rate"] for p in report["nav_precision"]), report["nav_precision"]


def test_config_file_flags_and_sets_in_order(tmp_path):
    (tmp_path / "base.yaml").write_text("arch: af_resnet34\nlr: 0.1\nepochs: 9\n")
    (tmp_path / "run.yaml").write_text("base: base.yaml\nlr: 0.2\nlr_steps: [3, 6]\n")
    cfg = resolve_config(tmp_path / "run.yaml", flags={"epochs": 7, "lr": None}, sets={"lr_steps": [4]})
    assert (cfg.arch, cfg.lr, cfg.epochs, cfg.lr_steps) == ("af_resnet34", 0.2, 7, [4])
    assert cfg.size == BUILTIN_TASK["size"]  # no data anywhere: the built-in task's defaults underneath
    with_data = resolve_config(tmp_path / "run.yaml", flags={"train_list": "a", "val_list": "b"})
    assert with_data.size == TrainConfig().size


@pytest.mark.parametrize(
    "yaml_text, flags, sets, message",
    [
        ("lr: -1\n", {}, {}, r"lr \(from .*c.yaml\) must be a number > 0, got -1"),
        ("nope: 1\n", {}, {}, r"unknown key\(s\) \['nope'\]"),
        ("", {"train_list": "a"}, {}, r"--val-list"),
        ("", {}, {"rt_begin": 5, "rt_end": 2}, r"rt_end \(--set rt_end\) must be >= rt_begin"),
        ("", {"arch": "resnet50"}, {}, r"arch \(flag --arch\) must be one of"),
        ("", {}, {"flip": "yes"}, r"flip \(--set flip\) must be true or false"),
        ("lr_schedule: linear\n", {}, {}, r"lr_schedule .* must be one of \('step', 'cosine'\)"),
        ("", {}, {"image_template": "frame.jpg"}, r"image_template .* format string"),
    ],
)
def test_config_errors_name_the_key_and_its_source(tmp_path, yaml_text, flags, sets, message):
    (tmp_path / "c.yaml").write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        resolve_config(tmp_path / "c.yaml", flags=flags, sets=sets)


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["train", "--frames", "0"], "argument --frames: must be >= 1, got 0"),
        (["train", "--lr", "fast"], "argument --lr: expected a number, got 'fast'"),
        (["train", "--rt", "1.5"], "argument --rt: must be in (0, 1], got 1.5"),
        (["train", "--set", "bogus=1"], "unknown key 'bogus'"),
        (["train", "--set", "lr"], "--set expects KEY=VALUE"),
        (["train", "--lr-schedule", "exp"], "lr_schedule (flag --lr-schedule) must be one of"),
        (["train", "--train-list", "x.txt"], "--val-list"),
        (["train", "--resume", "/nonexistent/last.pth"], "argument --resume"),
        (["eval", "--checkpoint", "/nonexistent.pth", "--list", "x"], "argument --checkpoint"),
        (["predict", "clip.mp4"], "the following arguments are required: --checkpoint"),
        (["make-demo-data", "out", "--videos", "1"], "argument --videos: must be >= 2"),
    ],
)
def test_cli_errors_name_the_flag(capsys, argv, flag):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(argv)
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


# -- the optimiser -------------------------------------------------------------------------------
def test_param_groups_follow_the_released_policy():
    cfg = resolve_config(flags={"train_list": "t.txt", "val_list": "v.txt"})  # the paper's recipe
    assert (cfg.lr, cfg.weight_decay, cfg.nav_lr_mult, cfg.fc_lr_mult) == (0.01, 1e-4, 10, 5)
    model = afnet.create_model("af_resnet18", num_classes=4, num_segments=4)
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    nav = {id(p) for m in model.modules() if isinstance(m, Navigation) for p in m.parameters()}
    assert {id(p) for p in groups["navigation"]["params"]} == nav
    assert groups["navigation"]["lr"] == pytest.approx(0.1) and groups["navigation"]["weight_decay"] == 1e-4
    assert {id(p) for p in groups["linear_weight"]["params"]} >= {id(model.new_fc.weight)}
    assert groups["linear_weight"]["lr"] == pytest.approx(0.05) and groups["linear_bias"]["lr"] == pytest.approx(0.1)
    assert groups["norm"]["weight_decay"] == 0 and groups["linear_bias"]["weight_decay"] == 0
    every = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(every) == sorted(id(p) for p in model.parameters())  # each parameter exactly once


def test_learning_rate_schedules():
    step = resolve_config(sets={"lr": 0.01, "lr_steps": [2, 4], "lr_decay": 0.1, "epochs": 6})
    assert [learning_rate(step, e, 0, 10) for e in range(6)] == pytest.approx([0.01, 0.01, 0.001, 0.001, 1e-4, 1e-4])
    warm = resolve_config(sets={"lr": 0.1, "lr_schedule": "cosine", "warmup_epochs": 1, "epochs": 3})
    assert learning_rate(warm, 0, 0, 4) == pytest.approx(0.025) and learning_rate(warm, 0, 3, 4) == pytest.approx(0.1)
    assert learning_rate(warm, 1, 0, 4) == pytest.approx(0.1)  # the cosine starts after the warm-up
    assert learning_rate(warm, 2, 0, 4) == pytest.approx(0.05)  # half-way: (1 + cos(π/2))/2
    assert learning_rate(warm, 2, 3, 4) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))


def test_nav_bias_and_pretrained_with_a_new_class_count(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "a")
    model = build_model(cfg, 4)
    for nav in (m for m in model.modules() if isinstance(m, Navigation)):
        assert nav.conv_gs.bias[0::2].eq(0).all() and nav.conv_gs.bias[1::2].eq(2).all()
    afnet.save_checkpoint(model, tmp_path / "four.pth")
    other = build_model(tiny_config(tmp_path / "b", pretrained=str(tmp_path / "four.pth")), 7)
    assert "classifier replaced" in capsys.readouterr().out
    assert other.new_fc.out_features == 7
    assert torch.equal(other.base_model.conv1.weight, model.base_model.conv1.weight)


# -- a run, its checkpoints and its log ----------------------------------------------------------
def _strip_times(lines):
    return [{k: v for k, v in line.items() if k != "epoch_time_s"} for line in lines]


def test_train_writes_the_run_folder_and_resume_is_exact(tmp_path, capsys):
    full = train(tiny_config(tmp_path / "full", epochs=2))
    run = tmp_path / "full"
    assert sorted(p.name for p in run.iterdir()) == ["best.pth", "config.yaml", "last.pth", "log.jsonl", "training_curves.png"]
    log = read_log(run / "log.jsonl")
    assert [line["epoch"] for line in log] == [1, 2] and full.last["epoch"] == 2
    for key in ("train_loss", "train_ce", "train_ratio_loss", "train_top1", "train_top5", "val_top1", "val_top5",
                "lr", "tau", "rt_target", "gflops", "gflops_executed", "skipped"):
        assert key in log[0], key
    assert len(log[0]["val_selected_ratio"]) == 3 and len(log[0]["train_selected_ratio"]) == 3
    # The Gumbel noise was at work (nav_bias [0, 2] drops some frames), so the RNG state matters.
    assert min(log[0]["train_selected_ratio"]) < 1.0
    model, report = afnet.build_from_checkpoint(run / "last.pth")
    assert report.ok and model.config["arch"] == "af_resnet18"
    assert report.extra["data"]["class_names"][0] == "red_left_to_right"

    # The same run stopped after one epoch (a stale line of a later epoch left in its log) and
    # resumed on the command line to two ends with the same weights and log.
    split = tmp_path / "split"
    common = ["--frames", "4", "--size", "32", "--resize", "32", "--batch-size", "4", "--workers", "0", "--rt", "0.5",
              "--set", "demo_videos=12", "--set", "rt_begin=0", "--set", "rt_end=2", "--set", "nav_bias=[0,2]",
              "--out", str(split)]
    assert cli_main(["train", "--epochs", "1", *common]) == 0
    with (split / "log.jsonl").open("a") as f:
        f.write(json.dumps({"epoch": 2, "stale": True}) + "\n")
    assert cli_main(["train", "--resume", str(split / "last.pth"), "--epochs", "2"]) == 0
    a, b = state_of(run / "last.pth"), state_of(split / "last.pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    resumed = _strip_times(read_log(split / "log.jsonl"))
    assert len(resumed) == 2
    for a_line, b_line in zip(resumed, _strip_times(log)):
        assert {k: (a_line[k], b_line.get(k)) for k in a_line if a_line[k] != b_line.get(k)} == {}
    assert "epoch 2/2" in capsys.readouterr().out


def test_builtin_run_reports_its_navigation_against_the_frames_that_show_the_square(tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "eval"
    train(tiny_config(run, epochs=1))
    (line,) = read_log(run / "log.jsonl")
    # Recomputed here: the validation clips are clips 10 and 11 of the task, 4 frames at the segment
    # centres; the masks are the trained model's, module by module.
    task = MotionTask(seed=0)
    shown = torch.tensor([task.shows_square(i, tsn_test_indices(task.num_frames, 4)) for i in (10, 11)])
    clips = ClipDataset(MotionSource(task, 10, 2), num_segments=4, transform=EvalTransform(32, 32), train=False)
    model = afnet.build_from_checkpoint(run / "last.pth")[0].eval()
    with torch.inference_mode():
        masks = model(normalize(torch.stack([clips[i].video for i in range(2)])), return_masks=True)[1]
    hits = [float((m & shown).sum()) for m in masks]
    assert line["val_nav_precision"] == [h / float(m.sum()) if m.any() else None for h, m in zip(hits, masks)]
    assert line["val_nav_recall"] == [h / float(shown.sum()) for h in hits]
    assert line["val_nav_base_rate"] == float(shown.sum()) / shown.numel()
    kept_at = [m.double().mean(dim=0) for m in masks]  # per position
    blind = [float((k * shown.double().mean(dim=0)).sum() / k.sum()) if k.any() else None for k in kept_at]
    assert [None if b is None else pytest.approx(b) for b in blind] == line["val_nav_blind_precision"]
    assert cli_main(["eval", "--checkpoint", str(run / "last.pth"), "--workers", "0", "--out", str(out)]) == 0
    report = json.loads((out / "eval.json").read_text())
    # eval.json: the same weights, clips and truth as the epoch's validation, so the same figures.
    for key in ("nav_precision", "nav_recall", "nav_base_rate", "nav_blind_precision"):
        assert report[key] == line[f"val_{key}"], key
    # ... and the console says them.
    shown_as = lambda values: ", ".join("-" if v is None else f"{v:.3f}" for v in values)
    assert (f"frames that show the square (base rate {report['nav_base_rate']:.3f}): precision "
            f"{shown_as(report['nav_precision'])}, recall {shown_as(report['nav_recall'])}") in capsys.readouterr().out


def test_bad_videos_are_skipped_with_one_warning_and_counted(tmp_path, capsys):
    files = write_demo_data(tmp_path / "data", videos=7)  # 6 train, 1 val
    (files.root / "videos" / "broken.mp4").write_bytes(b"\x00" * 1000)
    (files.root / "videos" / "empty.mp4").write_bytes(b"")
    lines = files.train_list.read_text().splitlines() + ["videos/broken.mp4 1", "videos/empty.mp4 2"]
    write_lines(files.train_list, lines)
    cfg = tiny_config(tmp_path / "run", data_root=str(files.root), train_list=str(files.train_list),
                      val_list=str(files.train_list), class_names=str(files.classes), epochs=2)
    train(cfg)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert sum("broken.mp4" in line for line in lines) == 1 and sum("empty.mp4" in line for line in lines) == 1
    assert "warning: skipping unreadable clip" in err
    log = read_log(tmp_path / "run" / "log.jsonl")
    # 8 train clips, batch 4: both bad ones are met every epoch (drop_last keeps both batches).
    assert [line["skipped"] for line in log] == [2, 2]
    assert [line["val_failed"] for line in log] == [2, 2] and log[0]["val_clips"] == 6


def test_missing_listed_files_fail_before_training(tmp_path):
    files = write_demo_data(tmp_path / "data", videos=3)
    lines = files.train_list.read_text().splitlines() + [f"videos/gone_{i}.mp4 0" for i in range(8)]
    write_lines(files.train_list, lines)
    cfg = tiny_config(tmp_path / "run", data_root=str(files.root), train_list=str(files.train_list),
                      val_list=str(files.val_list))
    with pytest.raises(DataError, match=r"8 file\(s\) listed in .*train.txt do not exist: .*gone_0.mp4.*\(3 more\)"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_spatial_model_trains_with_the_rs_term(tmp_path):
    cfg = tiny_config(tmp_path / "spatial", epochs=1, sets={"model_options": {"spatial": True, "rs": 0.5, "grid": 2}})
    trainer = Trainer(cfg, DistInfo())
    assert trainer.rs == 0.5 and trainer.model.is_spatial
    gate = trainer.model.base_model.layer1.spatial_gen[0]
    before = gate.conv_logits.weight.detach().clone()
    line = trainer.train_epoch(0)
    assert not torch.equal(gate.conv_logits.weight, before)  # the spatial gates learn
    assert line["train_ratio_loss"] > 0
    assert gate.tau == trainer.model.base_model.layer1.list_gen[0].tau  # one temperature schedule
    with pytest.raises(ConfigError, match="model_options.rs"):
        Trainer(tiny_config(tmp_path / "no_rs", sets={"model_options": {"spatial": True}}), DistInfo())
