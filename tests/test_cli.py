"""``afnet bench`` validates every argument before any work starts, naming the flag."""

from __future__ import annotations

import os

import pytest

from afnet.cli import bench as bench_cli
from afnet.bench import runner
from afnet.cli import build_parser, main

CPUS = len(os.sched_getaffinity(0))


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if the benchmark itself starts."""
    def run_bench(cfg):
        raise AssertionError("the benchmark started before the arguments were validated")

    monkeypatch.setattr(runner, "run_bench", run_bench)


def error_of(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--device", "cpu"] + argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.mark.usefixtures("no_work")
@pytest.mark.parametrize(
    "argv, message",
    [
        # --threads 100000 used to segfault in libgomp's thread creation.
        (["--threads", "100000"], f"argument --threads: must be at most {CPUS} (the CPUs this process may use), "
                                  "got 100000"),
        # --frames 1 --size 32 used to end in a BN traceback after the baselines were built.
        (["--frames", "1", "--size", "32"], "argument --frames: must be >= 2 with --batch 1 and --size 32: the "
                                            "models are calibrated with one training-mode pass"),
        (["--size", "2048"], "argument --size: must be at most 1024"),
        # --only nomatch used to run the baselines alone, silently.
        (["--only", "nomatch"], "argument --only: 'nomatch' matches no entry; the entries are: tsn_resnet50-t8"),
        (["--only", "mobilenet,rt0.3"], "argument --only: 'rt0.3' matches no entry"),
        (["--quick", "--profile", "budget0.5"],
         "argument --profile: 'budget0.5' matches no entry; the entries are: tsn_resnet50-t8"),
        (["--only", "mobilenet", "--profile", "rt0.25"], "argument --profile: 'rt0.25' matches no entry"),
    ],
)
def test_bad_arguments_fail_before_any_work(capsys, tmp_path, argv, message) -> None:
    out = tmp_path / "never"
    assert message in error_of(capsys, argv + ["--out", str(out)])
    assert not out.exists()  # the output folder is created only once everything else is valid


@pytest.mark.usefixtures("no_work")
def test_unwritable_out_fails_at_once(capsys, tmp_path) -> None:
    """--out /proc/x used to be discovered only after the whole benchmark had run."""
    assert "argument --out: cannot write to /proc/x: " in error_of(capsys, ["--out", "/proc/x"])
    a_file = tmp_path / "results.json"
    a_file.write_text("{}")
    assert f"argument --out: {a_file} is a file, not a directory" in error_of(capsys, ["--out", str(a_file)])
    assert "argument --out: cannot write to" in error_of(capsys, ["--out", str(a_file / "sub")])


@pytest.mark.usefixtures("no_work")
def test_missing_matplotlib_is_caught_up_front(capsys, monkeypatch, tmp_path) -> None:
    """Without the [plot] extra the PNG would fail after the whole run; --no-plot runs without it."""
    real = bench_cli.importlib.util.find_spec
    monkeypatch.setattr(bench_cli.importlib.util, "find_spec",
                        lambda name: None if name == "matplotlib" else real(name))
    assert "argument --no-plot: matplotlib is not installed" in error_of(capsys, ["--out", str(tmp_path)])
    parser = build_parser()
    args = parser.parse_args(["bench", "--device", "cpu", "--no-plot", "--out", str(tmp_path)])
    assert bench_cli.resolve_bench_config(args, parser).plot is False


def test_valid_arguments_create_the_output_folder(tmp_path) -> None:
    parser = build_parser()
    out = tmp_path / "a" / "b"
    args = parser.parse_args(["bench", "--device", "cpu", "--frames", "1", "--size", "64", "--threads", str(CPUS),
                              "--only", "rt0.25,mobilenet", "--profile", "mobilenet", "--out", str(out)])
    cfg = bench_cli.resolve_bench_config(args, parser)
    assert (cfg.frames, cfg.size, cfg.threads, cfg.only, cfg.profile) == (1, 64, CPUS, ("rt0.25", "mobilenet"),
                                                                          ("mobilenet",))
    assert out.is_dir() and list(out.iterdir()) == []  # the probe file is gone
    # Two frames make the BN statistics well defined at the smallest size.
    args = parser.parse_args(["bench", "--device", "cpu", "--frames", "2", "--size", "32", "--out", str(out)])
    assert bench_cli.resolve_bench_config(args, parser).frames == 2


@pytest.mark.parametrize("command", [["train", "--epochs", "1"], ["eval", "--checkpoint", "missing.pth"],
                                     ["predict", "clip.mp4", "--checkpoint", "missing.pth"]])
@pytest.mark.parametrize("device, message", [
    ("tpu", "argument --device: expected auto, cpu, cuda or cuda:N, got 'tpu'"),
    ("cuda:7", "argument --device: 'cuda:7' requested but"),
])
def test_every_command_checks_its_device_first(capsys, command, device, message):
    """A device that is not a CPU or a visible GPU is a usage error naming --device, before any work."""
    with pytest.raises(SystemExit) as exc:
        main(command + ["--device", device])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
