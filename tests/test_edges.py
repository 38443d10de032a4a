"""The edges of the command line (issue 16): nothing a user made is lost or overwritten silently,
bad output paths fail before any work, Ctrl-C ends every command with one line, and defaults
follow the checkpoint."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

import afnet
from afnet.cli import main as cli_main
from data_utils import write_frame_folder, write_lines, write_numbered_video

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parent.parent
T = 4
# A training run of a few seconds: the built-in task, 12 clips at 32 px.
TINY = ["--frames", "4", "--size", "32", "--resize", "32", "--batch-size", "4", "--workers", "0", "--rt", "0.5",
        "--set", "demo_videos=12", "--set", "rt_begin=0", "--set", "rt_end=2", "--set", "nav_bias=[0,2]"]
RUN_FILES = ("config.yaml", "log.jsonl", "last.pth", "best.pth", "training_curves.png")


def usage_error(capsys, argv) -> str:
    """The stderr of a command that must stop with a usage error (exit 2) and no traceback."""
    with pytest.raises(SystemExit) as exc:
        cli_main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "Traceback" not in err
    return err


def run_interrupted(argv, capsys):
    """(exit status, stderr lines) of a command that Ctrl-C ends; a KeyboardInterrupt that escapes
    ``main`` fails the test instead of ending the session."""
    try:
        rc = cli_main(argv)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped afnet's main()")
    return rc, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A checkpoint of ours trained at 64 px: learned navigation, classes a-d, constant logits
    (0, 3, 1, 2), so every clip is class b."""
    torch.manual_seed(0)
    model = afnet.create_model("af_resnet18", num_classes=4, num_segments=T)
    with torch.no_grad():
        model.new_fc.weight.zero_()
        model.new_fc.bias.copy_(torch.tensor([0.0, 3.0, 1.0, 2.0]))
    path = tmp_path_factory.mktemp("ckpt") / "m.pth"
    afnet.save_checkpoint(model, path, data={"size": 64, "resize": 64, "class_names": list("abcd")})
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Folder with v0.mp4, v1.mp4 and val.txt listing them."""
    root = tmp_path_factory.mktemp("clips")
    for i in range(2):
        write_numbered_video(root / f"v{i}.mp4", 12 + 4 * i)
    write_lines(root / "val.txt", ["v0.mp4 1", "v1.mp4 0"])
    return root


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A finished one-epoch run of ``afnet train`` (its checkpoints carry the training state)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert cli_main(["train", *TINY, "--epochs", "1", "--out", str(run)]) == 0
    return run


# -- 2: predict never overwrites --------------------------------------------------------------------
def test_same_named_clips_get_their_own_files_and_a_manifest(tmp_path, capsys, ckpt):
    for folder, frames in (("a", 12), ("b", 20)):
        (tmp_path / folder).mkdir()
        write_numbered_video(tmp_path / folder / "clip.mp4", frames)
    write_numbered_video(tmp_path / "x.mkv", 16)
    write_numbered_video(tmp_path / "x.mp4", 24)
    write_frame_folder(tmp_path / "frames" / "clip", 9)
    inputs = [str(tmp_path / p) for p in ("a/clip.mp4", "b/clip.mp4", "x.mkv", "x.mp4", "frames/clip")]
    out = tmp_path / "pred"
    argv = ["predict", *inputs, "--checkpoint", str(ckpt), "--workers", "0", "--out", str(out)]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote 5 prediction(s) to {out}" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    outputs = {entry["input"]: entry["outputs"] for entry in manifest["clips"]}
    assert outputs == {inputs[0]: ["clip.json", "clip.png"], inputs[1]: ["clip-2.json", "clip-2.png"],
                       inputs[2]: ["x.json", "x.png"], inputs[3]: ["x-2.json", "x-2.png"],
                       inputs[4]: ["clip-3.json", "clip-3.png"]}
    for clip, files in outputs.items():  # each file holds its own clip's result
        assert json.loads((out / files[0]).read_text())["path"] == clip
        assert (out / files[1]).is_file()
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    # A second run into the same folder would replace those files: refused, nothing touched.
    err = usage_error(capsys, argv)
    assert f"argument --out: {out} already holds files of an earlier run" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    # --overwrite moves the earlier run (manifest and the files it lists) into replaced-1/.
    assert cli_main(argv + ["--overwrite"]) == 0
    assert f"moved {len(before)} earlier file(s) into {out / 'replaced-1'}/" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (out / "replaced-1").iterdir()} == before
    assert json.loads((out / "manifest.json").read_text())["clips"] == manifest["clips"]


def test_the_printed_count_is_the_number_written(tmp_path, capsys, ckpt):
    write_numbered_video(tmp_path / "ok.mp4", 12)
    (tmp_path / "bad.mp4").write_bytes(b"\x00garbage" * 50)
    out = tmp_path / "pred"
    assert cli_main(["predict", str(tmp_path / "ok.mp4"), str(tmp_path / "bad.mp4"), "--checkpoint", str(ckpt),
                     "--workers", "0", "--no-plot", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "wrote 1 prediction(s)" in captured.out and "1 clip(s) could not be read" in captured.out
    manifest = json.loads((out / "manifest.json").read_text())["clips"]
    assert manifest[0]["outputs"] == ["ok.json"] and "error" in manifest[1] and "outputs" not in manifest[1]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "ok.json"]


# -- 3: a run folder belongs to one run ---------------------------------------------------------------
def test_a_finished_run_is_refused_and_overwrite_moves_it_aside(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", *TINY, "--epochs", "1", "--out", str(run)]
    assert cli_main(argv) == 0
    before = {name: (run / name).read_bytes() for name in RUN_FILES}
    capsys.readouterr()

    err = usage_error(capsys, argv)
    assert f"argument --out: {run} already holds a run (log.jsonl, last.pth, best.pth)" in err
    assert f"--resume {run / 'last.pth'}" in err and "--overwrite" in err
    assert {name: (run / name).read_bytes() for name in RUN_FILES} == before

    assert cli_main(argv + ["--overwrite"]) == 0
    assert f"moved the earlier run's files into {run / 'replaced-1'}/" in capsys.readouterr().err
    assert {name: (run / "replaced-1" / name).read_bytes() for name in RUN_FILES} == before
    assert [line["epoch"] for line in map(json.loads, (run / "log.jsonl").read_text().splitlines())] == [1]

    # Resuming another run into this folder would mix the two: refused.
    other = run / "replaced-1" / "last.pth"
    err = usage_error(capsys, ["train", "--resume", str(other), "--out", str(run)])
    assert f"{run} already holds another run than the one --resume {other} continues" in err


def test_a_live_run_holds_the_folder(tmp_path, capsys):
    from afnet.training.runfiles import RunLock

    run = tmp_path / "run"
    run.mkdir()
    lock = RunLock.acquire(run)
    try:
        holder = json.loads((run / "run.lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname() and holder["started"]
        err = usage_error(capsys, ["train", *TINY, "--epochs", "1", "--out", str(run)])
        assert f"{run} is in use by another run (pid {os.getpid()} on host {socket.gethostname()}, started " in err
        assert sorted(p.name for p in run.iterdir()) == ["run.lock"]
    finally:
        lock.release()
    assert not (run / "run.lock").exists()


def test_a_dead_runs_lock_and_temp_files_are_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / "run.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                              "started": "2024-01-01T00:00:00+00:00"}))
    leftover = run / f".last.pth.{dead.pid}.0123abcd.tmp"  # what kill -9 during a checkpoint write leaves
    leftover.write_bytes(b"\x00" * 1000)
    live = run / f".best.pth.{os.getpid()}.89abcdef.tmp"  # a live process may still be writing it
    live.write_bytes(b"x")
    other = run / ".notes.tmp"  # not the atomic writes' naming: not ours to remove
    other.write_bytes(b"y")
    assert cli_main(["train", *TINY, "--epochs", "1", "--out", str(run)]) == 0
    err = capsys.readouterr().err
    assert f"took over {run / 'run.lock'}, left by a run that no longer runs (pid {dead.pid} on host" in err
    assert f"removed 1 temporary file(s) of writes a dead run left unfinished: {leftover.name}" in err
    assert not leftover.exists() and live.exists() and other.exists()
    assert not (run / "run.lock").exists() and (run / "last.pth").is_file()


# -- 3 and 5: two runs at once, and Ctrl-C, in real processes --------------------------------------
def test_a_second_run_is_refused_and_ctrl_c_says_how_to_resume(tmp_path, capsys):
    run = tmp_path / "run"
    # Its own process group, signalled as a whole, as a terminal's Ctrl-C does: the DataLoader
    # workers get SIGINT too.
    proc = subprocess.Popen([sys.executable, "-m", "afnet", "train", *TINY, "--workers", "2", "--epochs", "1000",
                             "--out", str(run)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not ((run / "last.pth").is_file() and (run / "log.jsonl").is_file()):  # epoch 1 done
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the first epoch did not end"
            time.sleep(0.2)
        holder = json.loads((run / "run.lock").read_text())
        assert holder["pid"] == proc.pid and holder["host"] == socket.gethostname()
        err = usage_error(capsys, ["train", *TINY, "--epochs", "1", "--out", str(run)])
        assert f"{run} is in use by another run (pid {proc.pid} on host {socket.gethostname()}" in err
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    match = re.fullmatch(r"afnet train: interrupted at (epoch \d+, (before its first step|step \d+ of \d+|in its "
                         r"validation)|the end of epoch \d+, .*); resume with: (afnet train --resume \S+)", lines[0])
    assert match, lines[0]
    assert match[3] == f"afnet train --resume {run / 'last.pth'}"
    assert not (run / "run.lock").exists() and not list(run.glob(".*.tmp"))
    # The printed command continues the run (to one more epoch than it logged).
    done = len((run / "log.jsonl").read_text().splitlines())
    assert cli_main(shlex.split(match[3])[1:] + ["--epochs", str(done + 1), "--workers", "0"]) == 0
    assert len((run / "log.jsonl").read_text().splitlines()) == done + 1


# -- 4: output paths are checked before any work, in every command ---------------------------------
WORK = {  # what each command does once its arguments are valid
    "train": "afnet.training.trainer.build_data", "eval": "afnet.training.evaluate.evaluate",
    "predict": "afnet.tools.predict.predict_many", "export": "afnet.tools.export.export_model",
    "make-demo-data": "afnet.data.demo_files.write_demo_data", "plot-log": "afnet.training.plots.plot_log",
    "bench": "afnet.bench.runner.run_bench",
}


def command_writing_to(command, out, ckpt, clips, tmp_path):
    """(argv, flag) of a valid ``command`` that writes to ``out``."""
    if command == "train":
        return ["train", *TINY, "--epochs", "1", "--out", str(out)], "--out"
    if command == "eval":
        return ["eval", "--checkpoint", str(ckpt), "--data-root", str(clips), "--list", str(clips / "val.txt"),
                "--workers", "0", "--out", str(out)], "--out"
    if command == "predict":
        return ["predict", str(clips / "v0.mp4"), "--checkpoint", str(ckpt), "--workers", "0", "--out", str(out)], "--out"
    if command == "export":
        return ["export", "--arch", "af_resnet18", "--frames", "4", "--frame-budget", "0.5", "--format", "pt2",
                "--size", "32", "--out", str(out)], "--out"
    if command == "make-demo-data":
        return ["make-demo-data", str(out), "--videos", "2"], "OUT_DIR"
    if command == "plot-log":
        (tmp_path / "log.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 1.0}) + "\n")
        return ["plot-log", str(tmp_path), "--out", str(out)], "--out"
    return ["bench", "--device", "cpu", "--quick", "--no-plot", "--out", str(out)], "--out"


FILE_OUTPUTS = ("export", "plot-log")  # --out names a file; the others write into a folder


@pytest.mark.parametrize("command", list(WORK))
@pytest.mark.parametrize("case", ["a file in the way", "under a file"])
def test_a_bad_output_path_is_a_usage_error_before_any_work(tmp_path, capsys, monkeypatch, ckpt, clips, command, case):
    """Runs as root too: a parent that is a file stops every user."""
    def no_work(*args, **kwargs):
        raise AssertionError(f"{command} started its work before checking its output path")

    monkeypatch.setattr(WORK[command], no_work)
    blocker = tmp_path / "results.json"
    blocker.write_text("{}")
    if case == "a file in the way":
        out = tmp_path if command in FILE_OUTPUTS else blocker
    else:
        out = blocker / ("x.png" if command in FILE_OUTPUTS else "sub")
    argv, flag = command_writing_to(command, out, ckpt, clips, tmp_path)
    err = usage_error(capsys, argv)
    if case == "under a file":
        assert f"argument {flag}: cannot write to {out}: {blocker} is a file, not a directory" in err
    elif command in FILE_OUTPUTS:
        assert f"argument {flag}: {out} is a directory, not a file" in err
    else:
        assert f"argument {flag}: {out} is a file, not a directory" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("command", ["train", "eval", "predict", "make-demo-data"])
def test_an_unwritable_folder_is_a_usage_error(tmp_path, capsys, ckpt, clips, command):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        argv, flag = command_writing_to(command, locked / "out", ckpt, clips, tmp_path)
        assert f"argument {flag}: cannot write to {locked / 'out'}: Permission denied" in usage_error(capsys, argv)
    finally:
        locked.chmod(0o700)


def test_output_check_sees_a_read_only_file_system():
    from afnet.tools.outputs import output_problem

    assert output_problem("/proc/afnet-out").startswith("cannot write to /proc/afnet-out: ")  # even for root
    assert output_problem("/proc/afnet.onnx", is_file=True).startswith("cannot write to /proc/afnet.onnx: ")


# -- 5: Ctrl-C in every command ---------------------------------------------------------------------
@pytest.mark.parametrize("command", list(WORK))
def test_ctrl_c_ends_every_command_with_one_line_and_130(tmp_path, capsys, monkeypatch, ckpt, clips, command):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(WORK[command], interrupted)
    argv, _ = command_writing_to(command, tmp_path / ("out.x" if command in FILE_OUTPUTS else "out"), ckpt, clips,
                                 tmp_path)
    rc, lines = run_interrupted(argv, capsys)
    assert rc == 130
    assert len(lines) == 1 and lines[0].startswith(f"afnet {command}: interrupted"), lines


def test_loaders_hold_ctrl_c_back_while_they_fork_their_workers(monkeypatch):
    """Python drops a KeyboardInterrupt raised in its at-fork hooks: Ctrl-C while a DataLoader
    starts its workers was lost, and the run went on."""
    from torch.utils.data import DataLoader

    from afnet.data.loader import make_loader

    during = []

    def start_workers(self):
        signal.raise_signal(signal.SIGINT)  # Ctrl-C while the workers fork
        during.append(signal.getsignal(signal.SIGINT))  # what the workers inherit
        return iter([])

    monkeypatch.setattr(DataLoader, "__iter__", start_workers)
    loader = make_loader(list(range(4)), None, batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        iter(loader)
    assert len(during) == 1  # the start ran to its end, and the interrupt came after it
    assert during[0] is not signal.default_int_handler  # the workers leave Ctrl-C to the main process
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def dead_workers(*args, **kwargs):
    raise RuntimeError("DataLoader worker (pid(s) 1234) exited unexpectedly")


def swallowed_interrupt_then_dead_workers(*args, **kwargs):
    """Ctrl-C while a DataLoader forks its workers: Python reports the KeyboardInterrupt raised in
    a fork hook as unraisable and goes on; the first sign is then the loader's error about the
    workers the same Ctrl-C killed."""
    with contextlib.suppress(KeyboardInterrupt):
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
    dead_workers()


def test_a_failure_that_ctrl_c_caused_is_the_interrupt(tmp_path, capsys, monkeypatch, ckpt, clips):
    from afnet.training.trainer import Trainer

    monkeypatch.setattr(Trainer, "validate", swallowed_interrupt_then_dead_workers)
    rc, lines = run_interrupted(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "run")], capsys)
    assert rc == 130
    assert lines == ["afnet train: interrupted at epoch 1, in its validation; no checkpoint was written yet (the first "
                     "one ends epoch 1): start the run again"]
    monkeypatch.setattr(WORK["eval"], swallowed_interrupt_then_dead_workers)
    argv, _ = command_writing_to("eval", tmp_path / "eval", ckpt, clips, tmp_path)
    assert run_interrupted(argv, capsys) == (130, ["afnet eval: interrupted"])
    # Without a SIGINT the same failure is a failure, with its traceback.
    monkeypatch.setattr(WORK["eval"], dead_workers)
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        cli_main(argv)


def test_ctrl_c_in_predict_keeps_the_manifest_of_what_was_written(tmp_path, capsys, monkeypatch, ckpt, clips):
    from afnet.training import plots

    real, calls = plots.plot_prediction, []

    def plot_then_interrupt(result, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(result, path)

    monkeypatch.setattr(plots, "plot_prediction", plot_then_interrupt)
    out = tmp_path / "pred"
    rc, lines = run_interrupted(["predict", str(clips / "v0.mp4"), str(clips / "v1.mp4"), "--checkpoint", str(ckpt),
                                 "--batch-size", "1", "--workers", "0", "--out", str(out)], capsys)
    assert rc == 130
    assert lines == [f"afnet predict: interrupted after 1 of 2 clip(s); {out / 'manifest.json'} lists the files written"]
    manifest = json.loads((out / "manifest.json").read_text())["clips"]
    # The second clip's JSON was written before the interrupt: listed too.
    assert manifest == [{"input": str(clips / "v0.mp4"), "outputs": ["v0.json", "v0.png"]},
                        {"input": str(clips / "v1.mp4"), "outputs": ["v1.json"]}]


# -- 8: the demo's printed command runs -------------------------------------------------------------
def test_make_demo_data_prints_a_train_command_that_runs(tmp_path, capsys, monkeypatch):
    from afnet.training.trainer import Trainer

    monkeypatch.chdir(tmp_path)
    assert cli_main(["make-demo-data", "demo", "--videos", "10"]) == 0
    command = re.search(r"^train with: (afnet train .*)$", capsys.readouterr().out, re.M)[1]
    argv = shlex.split(command)
    assert argv[:2] == ["afnet", "train"]
    # Exactly that command: it resolves, builds data and model, and trains its first epoch (stopped
    # at the validation to keep the test short).
    epochs = []
    real_epoch = Trainer.train_epoch
    monkeypatch.setattr(Trainer, "train_epoch", lambda self, epoch: epochs.append(epoch) or real_epoch(self, epoch))
    monkeypatch.setattr(Trainer, "validate", lambda self: (_ for _ in ()).throw(KeyboardInterrupt()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc, lines = run_interrupted(argv[1:], capsys)
    assert rc == 130 and epochs == [0], lines
    assert lines == ["afnet train: interrupted at epoch 1, in its validation; no checkpoint was written yet (the "
                     "first one ends epoch 1): start the run again"]
    assert not [w for w in caught if "worker" in str(w.message)]  # DataLoader: more workers than CPUs


def test_dataloader_workers_are_capped_at_the_cpus(monkeypatch):
    from afnet.training.config import resolve_config

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert resolve_config(flags={"train_list": "t.txt", "val_list": "v.txt"}).workers == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert resolve_config(flags={"train_list": "t.txt", "val_list": "v.txt"}).workers == 4  # the paper's


# -- 9: defaults follow the checkpoint --------------------------------------------------------------
def test_export_takes_size_frames_and_classes_from_the_checkpoint(tmp_path, capsys, monkeypatch, ckpt):
    from afnet.tools import export

    seen = {}

    def record(model, example, path, fmt, **kwargs):
        seen.update(shape=tuple(example.shape), classes=model.config["num_classes"])
        Path(path).write_bytes(b"program")
        return Path(path)

    monkeypatch.setattr(export, "export_model", record)
    assert cli_main(["export", "--checkpoint", str(ckpt), "--frame-budget", "0.5", "--format", "pt2", "--no-check",
                     "--out", str(tmp_path / "m.pt2")]) == 0
    assert seen == {"shape": (1, T, 3, 64, 64), "classes": 4}
    assert "input [1, 4, 3, 64, 64]" in capsys.readouterr().out


def test_python_predict_takes_the_checkpoints_settings(ckpt, clips):
    result = afnet.predict(str(ckpt), str(clips / "v0.mp4"))
    assert tuple(result.clip.shape) == (T, 3, 64, 64)  # the size the checkpoint was trained at
    assert [name for _, name, _ in result.topk][:2] == ["b", "d"]  # its class names
    assert tuple(afnet.predict(str(ckpt), str(clips / "v0.mp4"), size=32).clip.shape) == (T, 3, 32, 32)


def test_eval_takes_size_frames_and_classes_from_the_checkpoint(tmp_path, ckpt, clips):
    out = tmp_path / "eval"
    assert cli_main(["eval", "--checkpoint", str(ckpt), "--data-root", str(clips), "--list", str(clips / "val.txt"),
                     "--workers", "0", "--out", str(out)]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert (report["size"], report["frames"], report["num_clips"], report["top1"]) == (64, T, 2, 0.5)


def test_eval_never_replaces_an_earlier_evaluation_silently(tmp_path, capsys, ckpt, clips):
    out = tmp_path / "eval"
    argv = ["eval", "--checkpoint", str(ckpt), "--data-root", str(clips), "--list", str(clips / "val.txt"),
            "--workers", "0", "--out", str(out)]
    assert cli_main(argv) == 0
    first = (out / "eval.json").read_bytes()
    capsys.readouterr()
    err = usage_error(capsys, argv)
    assert "argument --out:" in err and "eval.json, selection.png" in err and "--overwrite" in err
    assert (out / "eval.json").read_bytes() == first and not (out / "replaced-1").exists()
    assert cli_main(argv + ["--overwrite"]) == 0
    assert (out / "replaced-1" / "eval.json").read_bytes() == first  # kept, beside the new one
    assert (out / "replaced-1" / "selection.png").is_file() and (out / "eval.json").is_file()
    assert "moved the earlier eval.json, selection.png into" in capsys.readouterr().err


def test_ctrl_c_line_comes_from_rank_0_only(tmp_path, capsys, monkeypatch, ckpt, clips):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(WORK["eval"], interrupted)
    for rank, expected in (("1", []), ("0", ["afnet eval: interrupted"])):
        monkeypatch.setenv("RANK", rank)
        argv, _ = command_writing_to("eval", tmp_path / f"out{rank}", ckpt, clips, tmp_path)
        assert run_interrupted(argv, capsys) == (130, expected)


@pytest.mark.parametrize("text, problem", [("", "holds no epoch yet"), ('{"epoch": 1}\n{"epo', "not a JSON line"),
                                           ('{"epoch": 1}\n[1, 2]\n', "line 2 is not an epoch's record")])
def test_plot_log_of_a_damaged_log_is_a_usage_error(tmp_path, capsys, text, problem):
    (tmp_path / "log.jsonl").write_text(text)
    err = usage_error(capsys, ["plot-log", str(tmp_path)])
    assert "argument RUN_DIR:" in err and problem in err
    assert not (tmp_path / "training_curves.png").exists()


def test_training_package_names_resolve():
    import afnet.training as training
    from afnet.tools import predict as predict_module

    assert training.predict is predict_module.predict and training.predict_many is predict_module.predict_many
    assert training.Prediction is predict_module.Prediction
    for name in training.__all__:
        assert getattr(training, name) is not None, name


# -- 10: progress inside the long loops -----------------------------------------------------------------
def test_predict_and_eval_progress_bars(tmp_path, capsys, ckpt, clips):
    base = ["predict", str(clips / "v0.mp4"), str(clips / "v1.mp4"), "--checkpoint", str(ckpt), "--workers", "0",
            "--no-plot"]
    assert cli_main(base + ["--progress", "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "predict:" in err and "clip/s" in err
    assert cli_main(base + ["--out", str(tmp_path / "b")]) == 0  # stderr is not a terminal: no bar
    assert "clip/s" not in capsys.readouterr().err
    assert cli_main(base + ["--quiet", "--out", str(tmp_path / "c")]) == 0
    assert "clip/s" not in capsys.readouterr().err
    assert cli_main(["eval", "--checkpoint", str(ckpt), "--data-root", str(clips), "--list", str(clips / "val.txt"),
                     "--workers", "0", "--progress", "--out", str(tmp_path / "eval")]) == 0
    err = capsys.readouterr().err
    assert "eval:" in err and "clip/s" in err


def test_training_epochs_show_progress_when_asked(tmp_path, capsys):
    assert cli_main(["train", *TINY, "--epochs", "1", "--progress", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "epoch 1/1:" in err and "clip/s" in err
    assert cli_main(["train", *TINY, "--epochs", "1", "--quiet", "--out", str(tmp_path / "quiet")]) == 0
    assert "clip/s" not in capsys.readouterr().err


# -- 11: messages ---------------------------------------------------------------------------------------
def test_a_directory_listed_as_a_video_is_named_as_such(tmp_path, capsys, ckpt, clips):
    (tmp_path / "walk").mkdir()
    write_lines(tmp_path / "list.txt", ["walk 1"])
    err = usage_error(capsys, ["eval", "--checkpoint", str(ckpt), "--data-root", str(tmp_path),
                               "--list", str(tmp_path / "list.txt"), "--out", str(tmp_path / "out")])
    assert f"1 path(s) listed in {tmp_path / 'list.txt'} as video files are directories: {tmp_path / 'walk'}" in err
    assert "do not exist" not in err


def test_an_empty_frame_folder_names_the_template(tmp_path, capsys, ckpt):
    (tmp_path / "empty").mkdir()
    err = usage_error(capsys, ["predict", str(tmp_path / "empty"), "--checkpoint", str(ckpt), "--out",
                               str(tmp_path / "out")])
    assert (f"argument CLIP: folder {str(tmp_path / 'empty')!r} holds no frames matching the image template "
            "'img_{:05d}.jpg'") in err
    assert "list" not in err


def test_checkpoint_mismatches_give_command_line_advice(tmp_path, capsys, ckpt, clips, trained_run):
    err = usage_error(capsys, ["eval", "--checkpoint", str(ckpt), "--frames", "8", "--data-root", str(clips),
                               "--list", str(clips / "val.txt"), "--out", str(tmp_path / "e")])
    assert "num_segments: checkpoint 4, given 8; leave out --frames: the checkpoint's own config sets it" in err
    assert "check_config" not in err and "strict=" not in err
    err = usage_error(capsys, ["export", "--checkpoint", str(ckpt), "--frames", "8", "--frame-budget", "0.5",
                               "--format", "pt2", "--out", str(tmp_path / "m.pt2")])
    assert "leave out --frames" in err and "check_config" not in err
    bare = tmp_path / "bare.pth"
    torch.save({"state_dict": torch.load(ckpt, weights_only=True)["state_dict"]}, bare)
    err = usage_error(capsys, ["predict", str(clips / "v0.mp4"), "--checkpoint", str(bare), "--out", str(tmp_path / "p")])
    assert "carries no model config" in err and "give --arch, --frames, --num-classes" in err
    assert "build_from_checkpoint" not in err
    err = usage_error(capsys, ["predict", str(clips / "v0.mp4"), "--checkpoint", str(bare), "--arch", "af_resnet18",
                               "--frames", "4", "--num-classes", "7", "--out", str(tmp_path / "p")])
    assert "give the ones it was trained with" in err and "strict=False" not in err
    err = usage_error(capsys, ["train", "--resume", str(trained_run / "last.pth"), "--frames", "8",
                               "--out", str(tmp_path / "resumed")])
    assert "argument --resume:" in err and "leave out --frames" in err and "--pretrained" in err
    assert "check_config" not in err
    # Python callers keep the advice in Python terms.
    with pytest.raises(afnet.CheckpointError, match="Pass check_config=False"):
        afnet.build_from_checkpoint(ckpt, num_segments=8)


def test_rs_without_spatial_is_an_error_naming_both():
    with pytest.raises(ValueError, match=r"rs=0\.5 .*needs spatial=True, got spatial=False"):
        afnet.create_model("af_resnet18", num_classes=4, num_segments=T, rs=0.5)
    assert afnet.create_model("af_resnet18", num_classes=4, num_segments=T, spatial=True, rs=0.5).is_spatial


def test_export_model_prints_nothing(tmp_path, capfd, caplog):
    """Nothing on file descriptors 1 and 2 (C++ and handlers' output), and no warning record, which
    outside pytest Python's last-resort handler would print (onnx_ir's "Attribute type is ambiguous")."""
    from afnet.tools.export import export_model, run_exported

    caplog.set_level(logging.WARNING)

    torch.manual_seed(0)
    model = afnet.create_model("af_resnet18", num_classes=4, num_segments=T).eval()
    model.frame_budget = 0.5
    video = torch.randn(1, T, 3, 32, 32)
    capfd.readouterr()
    path = export_model(model, video, tmp_path / "m.onnx", "onnx")
    run_exported(path, video)
    assert capfd.readouterr() == ("", "")
    assert [record.getMessage() for record in caplog.records] == []


def test_export_command_prints_only_its_own_lines(tmp_path, capfd):
    out = tmp_path / "model.bin"  # not *.pt2: torch.export.load warns before it loads such a name
    capfd.readouterr()
    assert cli_main(["export", "--arch", "af_resnet18", "--frames", "4", "--frame-budget", "0.5", "--format", "pt2",
                     "--size", "32", "--out", str(out)]) == 0
    captured = capfd.readouterr()
    assert captured.err == ""
    assert [line.split(":")[0] for line in captured.out.splitlines()] == ["afnet export", "afnet export"]
