"""The GPU session (benchmarks/gpu_session.py), rehearsed: its dry run runs every step CPU-sized,
in order, each writing its files, and a failing step does not stop the later ones; the GPU plan
compiles nothing before its last step; the budget keeps time for the key rows; the summary
judges the targets only on the hardware and settings they are stated for.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_session", ROOT / "benchmarks" / "gpu_session.py")
gpu_session = importlib.util.module_from_spec(_spec)
sys.modules["gpu_session"] = gpu_session  # dataclasses look their module up by name
_spec.loader.exec_module(gpu_session)

STEPS = ["versions", "build", "kernel-tests", "triton", "engine-tests", "bench-b8", "bench-b1", "ops", "bench-compiled"]
DRY_STEPS = [s.replace("bench-b8", "bench-b2") for s in STEPS]


def _results_listing():
    return sorted(p.name for p in gpu_session.RESULTS.iterdir())


def test_dry_run_runs_every_step_in_order_and_survives_a_failing_one(tmp_path):
    """The whole dry run, with the Triton step made to fail: every step still runs, in order, and
    writes its log and files; session.json and summary.md say what happened; nothing lands in
    benchmarks/results. About a minute on two quiet cores."""
    before = _results_listing()
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "benchmarks/gpu_session.py", "--dry-run", "--out", str(tmp_path),
                           "--fail-step", "triton"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one step failed
    assert _results_listing() == before
    (folder,) = tmp_path.iterdir()
    assert folder.name.startswith("cpu-") and "-fp32-20" in folder.name
    started = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("=== ") and "(" in line
               and ":" not in line.split()[1]]
    assert started == DRY_STEPS, proc.stdout
    session = json.loads((folder / "session.json").read_text())
    assert session["dry_run"] is True and session["out"] == str(folder)
    assert session["elapsed_s"] <= session["budget_s"] and session["elapsed_s"] <= elapsed
    steps = session["steps"]
    assert [s["name"] for s in steps] == DRY_STEPS
    for s in steps:
        assert (folder / s["log"]).stat().st_size > 0, s["name"]
        assert s["seconds"] is not None and s["seconds"] <= s["timeout_s"] + gpu_session.INTERRUPT_GRACE_S
        if s["name"] == "triton":
            assert (s["status"], s["rc"], s["note"]) == ("failed", 3, "failure injected by --fail-step")
            assert "failure injected" in (folder / "triton.log").read_text()
        else:
            assert (s["status"], s["rc"]) == ("ok", 0), (s, (folder / s["log"]).read_text()[-3000:])
    outputs = {s["name"]: s["outputs"] for s in steps}
    assert outputs["versions"] == ["versions.json"] and outputs["kernel-tests"] == ["kernel-tests.xml"]
    assert outputs["triton"] == []  # the injected failure wrote nothing
    assert json.loads((folder / "versions.json").read_text())["afnet_kernels"]["cpu"]["usable"] is True
    for name in ("bench-b2", "bench-b1", "bench-compiled"):
        data = json.loads((folder / name / "results.json").read_text())
        assert data["env"]["device"] == "cpu" and data["results"], name
        assert (folder / name / "latency_vs_gflops.png").exists()
        keys = {r["key"] for r in data["results"]}
        assert {"af_resnet50-t2-budget0.25-sparse", "af_mobilenetv3-tsm-t3-rt0.4-sparse"} <= keys
        assert any(k.startswith("tsn_mobilenetv3") for k in keys)
        assert ("af_resnet50-t2-rt0.25-sparse" in keys) == (name != "bench-compiled")
    assert {r["batch"] for r in json.loads((folder / "bench-b2" / "results.json").read_text())["results"]} == {2}
    assert "af_resnet50-t2-rt1-rs0.25-sparse" in (folder / "bench-b1" / "results.csv").read_text()
    skipped = json.loads((folder / "bench-compiled" / "results.json").read_text())["skipped"]
    assert skipped and all(s["reason"].startswith("time budget:") for s in skipped)  # nothing compiled
    assert (folder / "ops" / "ops.json").exists()
    summary = (folder / "summary.md").read_text()
    assert summary.startswith("# GPU session DRY RUN")
    for name in DRY_STEPS:
        assert f"| {name} |" in summary
    assert "| 4 | triton | failed (failure injected by --fail-step) | 3 |" in summary
    assert "## Targets" in summary and "| budget graphed, RT 0.25, x TSN ≥ 1.5 | – |" in summary
    assert "no verdict: not H100/H200, bf16, 8 videos x 8 frames" in summary  # the MobileNet figure, CPU-sized
    assert "Batch 1 (no target):" in summary


def test_a_step_that_runs_out_of_time_is_interrupted(tmp_path):
    step = gpu_session.Step("slow", "sleeps", 60, 1, [[sys.executable, "-c", "import time; time.sleep(60)"]],
                            ["never.txt"])
    record = gpu_session.Record("slow", "sleeps", [], 1)
    start = time.monotonic()
    gpu_session.run_step(step, tmp_path, 1.0, record)
    assert time.monotonic() - start < 1 + gpu_session.INTERRUPT_GRACE_S
    assert (record.status, record.rc, record.outputs) == ("timeout", None, [])
    assert "*** timeout after 1 s: interrupted" in (tmp_path / "slow.log").read_text()


def test_the_first_failing_command_ends_its_step(tmp_path):
    marker = tmp_path / "second-ran"
    step = gpu_session.Step("two", "two commands", 60, 1, [
        [sys.executable, "-c", "import sys; sys.exit(4)"],
        [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]])
    record = gpu_session.Record("two", "two commands", [], 60)
    gpu_session.run_step(step, tmp_path, 60, record)
    assert (record.status, record.rc) == ("failed", 4) and not marker.exists()
    step.commands = [["no-such-program-afnet"]]
    gpu_session.run_step(step, tmp_path, 60, record)
    assert (record.status, record.rc) == ("failed", 127)
    assert "could not start" in (tmp_path / "two.log").read_text()


def test_gpu_plan_fits_and_compiles_nothing_before_its_last_step():
    steps = gpu_session.plan(False, Path("/session"), "python3", 100)
    assert [s.name for s in steps] == STEPS
    text = {s.name: [" ".join(c) for c in s.commands] for s in steps}
    assert any("nvidia-smi" in c for c in text["versions"])
    assert "pip install --no-build-isolation --no-deps -e ." in text["build"][0]
    assert steps[1].env["MAX_JOBS"] == "16" and steps[1].env["FORCE_CUDA"] == "1"
    assert steps[2].env == {"CUDA_LAUNCH_BLOCKING": "1"}
    for name in ("kernel-tests", "engine-tests"):
        assert "-m cuda --maxfail=5" in text[name][0]
    assert "-k not torch_compile" in text["kernel-tests"][0] and "-k not reduce_overhead" in text["engine-tests"][0]
    for name in ("bench-b8", "bench-b1"):
        (command,) = text[name]
        assert "--no-compile" in command and "--dtype bfloat16 --frames 8" in command
        assert "--only=rt0.25-sparse,budget0.25,exact0.25,af_mobilenetv3,rt1-rs0.25" in command
    assert "--batch 8" in text["bench-b8"][0] and "--batch 1" in text["bench-b1"][0]
    assert "--dtype bfloat16 --ratios 0.25 1.0" in text["ops"][0] and "--channels-last" in text["ops"][0]
    (compiled,) = text["bench-compiled"]
    assert "--no-compile" not in compiled and "--time-budget 100" in compiled and steps[-1].optional
    # Every step but the optional compiled rows can have its minimum within the budget.
    assert sum(s.keep_s for s in steps if not s.optional) <= gpu_session.BUDGET_S


def test_the_budget_keeps_time_for_the_later_steps():
    steps = gpu_session.plan(False, Path("/session"), "python3", 100)
    later_keep = sum(s.keep_s for s in steps[3:] if not s.optional)  # after the kernel tests
    assert gpu_session.timeout_for(steps, 2, 1000) == steps[2].timeout_s
    # With little left, the kernel tests get what the later steps do not need at least.
    assert gpu_session.timeout_for(steps, 2, later_keep + 40) == 40
    assert gpu_session.timeout_for(steps, 2, later_keep + 10) is None  # below its own keep_s: skipped
    # The compiled rows are optional: nothing is kept for them, and they get all that is left.
    assert gpu_session.timeout_for(steps, 8, 200) == 200 and gpu_session.timeout_for(steps, 8, 30) is None


def _results(folder: Path, device: str, dtype: str, rows, frames: int = 8):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"env": {"device": device, "dtype": dtype},
                                                     "config": {"frames": frames}, "results": rows}))


def _row(model, variant, batch=8, frames=8, **fields):
    return dict(dict(model=model, variant=variant, batch=batch, frames=frames, tsn_reference="tsn-ref",
                     rs_target=None, speedup_vs_tsn=None, efficiency=None), **fields)


def test_targets_are_judged_on_the_best_row_of_the_stated_setting(tmp_path):
    budget = dict(arch="af_resnet50", rule="budget", rt_target=0.25, runner="graphed", execution="sparse")
    exact = dict(arch="af_resnet50", rule="exact", rt_target=0.25, execution="sparse")
    mobile = dict(arch="af_mobilenetv3", rule="fixed", rt_target=0.4, execution="sparse", runner="eager")
    h100 = "NVIDIA H100 80GB HBM3"
    _results(tmp_path / "bench-b8", h100, "bfloat16", [
        _row("AF-ResNet50", "budget sparse graphed", speedup_vs_tsn=1.62, **budget),
        _row("AF-ResNet50", "exact sparse", speedup_vs_tsn=1.1, **exact),
        _row("AF-MobileNetV3", "sparse", frames=12, efficiency=0.5, **mobile),  # 1.5x the run's 8 frames
        _row("AF-MobileNetV3", "dense", frames=12, efficiency=0.9, **dict(mobile, execution="dense"))])
    _results(tmp_path / "bench-compiled", h100, "bfloat16", [
        _row("AF-ResNet50", "exact sparse reduce-overhead", speedup_vs_tsn=1.25,
             **dict(exact, runner="reduce-overhead"))])
    _results(tmp_path / "bench-b1", h100, "bfloat16", [
        _row("AF-ResNet50", "budget sparse graphed", batch=1, speedup_vs_tsn=0.9, **budget)])
    text = "\n".join(gpu_session.target_lines(tmp_path))
    assert "| **budget graphed, RT 0.25, x TSN ≥ 1.5** | bench-b8 | best: AF-ResNet50 budget sparse graphed | " \
           "**1.62** | tsn-ref | **met** |" in text
    assert "| **threshold rule, RT 0.25, x TSN ≥ 1.2** | bench-compiled | best: AF-ResNet50 exact sparse " \
           "reduce-overhead | **1.25** | tsn-ref | **met** |" in text
    # The dense twin's 0.9 is not AF-MobileNetV3's efficiency: only sparse rows count.
    assert "best: AF-MobileNetV3 sparse | **0.50** | tsn-ref | **NOT met** |" in text
    assert "| budget graphed, RT 0.25, x TSN | AF-ResNet50 budget sparse graphed | 0.90 | tsn-ref |" in text
    # Another card or dtype: the figures, no verdict.
    _results(tmp_path / "other" / "bench-b8", "NVIDIA A100-SXM4-80GB", "bfloat16",
             [_row("AF-ResNet50", "budget sparse graphed", speedup_vs_tsn=1.62, **budget)])
    text = "\n".join(gpu_session.target_lines(tmp_path / "other"))
    assert "**1.62** | tsn-ref | **no verdict: not H100/H200, bf16, 8 videos x 8 frames** |" in text
    assert "| threshold rule, RT 0.25, x TSN ≥ 1.2 | – | – | – | – | not measured |" in text
    _results(tmp_path / "t16" / "bench-b8", h100, "bfloat16",
             [_row("AF-ResNet50", "budget sparse graphed", frames=16, speedup_vs_tsn=1.62, **budget)], frames=16)
    assert "**no verdict: not H100/H200" in "\n".join(gpu_session.target_lines(tmp_path / "t16"))


def test_session_folders_and_arguments(tmp_path, capsys):
    assert gpu_session.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    first = gpu_session.session_folder(tmp_path, "NVIDIA H100 80GB HBM3", "bf16", "2026-12-06")
    assert first.name == "nvidia-h100-80gb-hbm3-bf16-2026-12-06"
    first.mkdir()
    assert gpu_session.session_folder(tmp_path, "NVIDIA H100 80GB HBM3", "bf16", "2026-12-06").name == \
        "nvidia-h100-80gb-hbm3-bf16-2026-12-06-2"
    for argv, message in (
        (["--dry-run", "--out", str(gpu_session.RESULTS / "x")], "argument --out: a dry run never writes into"),
        (["--dry-run", "--out", str(tmp_path), "--fail-step", "nope"],
         "argument --fail-step: must be one of versions,"),
        (["--dry-run", "--budget", "0"], "argument --budget: must be > 0"),
    ):
        with pytest.raises(SystemExit) as exc:
            gpu_session.main(argv)
        assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (gpu_session.RESULTS / "x").exists()
