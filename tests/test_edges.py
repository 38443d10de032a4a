"""The edges of the command line (issue 16): nothing a user made is lost or overwritten silently,
bad output paths fail before any work, Ctrl-C ends every command with one line, and defaults
follow the checkpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import afnet
from afnet.cli import main as cli_main
from data_utils import write_lines, write_numbered_video

pytestmark = pytest.mark.usefixtures("one_thread")
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
