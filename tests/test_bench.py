"""The latency benchmark: baselines, timing harness, reports, CLI flags and a tiny end-to-end run.

No test here asserts a speed; speed claims live in ``afnet bench`` itself.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from afnet import baselines
from afnet.bench import config as bench_config
from afnet.bench import report, runner, timing
from afnet.cli import main
from afnet_kernels.reference import temporal_shift

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
pytestmark = pytest.mark.usefixtures("one_thread")


def _calibrated(model: torch.nn.Module, video: torch.Tensor, seed: int = 0) -> torch.nn.Module:
    runner.calibrate_(model, video, torch.Generator().manual_seed(seed))
    return model


@pytest.fixture(scope="module")
def tsn_pair():
    """A calibrated TSN-ResNet50 (T=3) and its input, in eval."""
    torch.manual_seed(0)
    video = torch.randn(2, 3, 3, 64, 64)
    model = baselines.create_baseline("tsn_resnet50", num_classes=7, num_segments=3)
    return _calibrated(model, video), video


# ---------------------------------------------------------------- baselines


def test_tsm_with_empty_fold_equals_tsn(tsn_pair):
    tsn, video = tsn_pair
    tsm = copy.deepcopy(tsn)
    baselines.add_temporal_shift_(tsm.base, 3, shift_div=10**6)  # C // div = 0: nothing moves
    with torch.inference_mode():
        torch.testing.assert_close(tsm(video), tsn(video), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_tsm_shifts_residual_branch_only(tsn_pair, layout):
    tsn, video = tsn_pair
    tsm = copy.deepcopy(tsn).to(memory_format=layout)
    baselines.add_temporal_shift_(tsm.base, 3)
    block = tsm.base.layer2[0]
    seen = {}
    block.register_forward_pre_hook(lambda m, a: seen.__setitem__("block_in", a[0]))
    block.conv1.conv.register_forward_pre_hook(lambda m, a: seen.__setitem__("conv1_in", a[0]))
    block.downsample.register_forward_pre_hook(lambda m, a: seen.__setitem__("shortcut_in", a[0]))
    with torch.inference_mode():
        out_tsm, out_tsn = tsm(video), tsn(video)
    x = seen["block_in"]
    torch.testing.assert_close(seen["conv1_in"], temporal_shift(x, 3, 8), rtol=0, atol=0)
    assert seen["conv1_in"].is_contiguous(memory_format=layout)
    assert seen["shortcut_in"] is x
    # By hand, on frame 0 of video 0: the first fold comes from frame 1, the second is zero (no t-1).
    fold = x.shape[1] // 8
    torch.testing.assert_close(seen["conv1_in"][0, :fold], x[1, :fold], rtol=0, atol=0)
    assert seen["conv1_in"][0, fold : 2 * fold].abs().max() == 0
    assert sum(isinstance(m, baselines.ShiftedConv) for m in tsm.modules()) == 16
    assert runner.rel_err(out_tsm, out_tsn) > 1e-3  # the shift changes the output


def test_tsn_averages_per_frame_logits(tsn_pair):
    tsn, video = tsn_pair
    with torch.inference_mode():
        per_frame = torch.stack([tsn.base(video[:, t]) for t in range(video.shape[1])], dim=1)
        torch.testing.assert_close(tsn(video), per_frame.mean(dim=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shift", [False, True])
def test_fold_batchnorm_keeps_output(tsn_pair, shift):
    tsn, video = tsn_pair
    model = copy.deepcopy(tsn)
    if shift:
        baselines.add_temporal_shift_(model.base, 3)
    with torch.inference_mode():
        before = model(video)
        baselines.fold_batchnorm_(model)
        after = model(video)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert runner.rel_err(after, before) < runner.REL_TOL[torch.float32]


def test_fold_batchnorm_needs_eval():
    model = baselines.create_baseline("tsn_resnet50", num_classes=3, num_segments=2)
    with pytest.raises(ValueError, match="eval"):
        baselines.fold_batchnorm_(model)


def test_baseline_input_validation():
    model = baselines.create_baseline("tsm_resnet50", num_classes=3, num_segments=4).eval()
    with pytest.raises(ValueError, match=r"\[N, 4, 3, H, W\].*\[1, 3, 3, 32, 32\]"):
        model(torch.randn(1, 3, 3, 32, 32))
    with pytest.raises(ValueError, match="baseline must be one of"):
        baselines.create_baseline("resnet18", num_classes=3, num_segments=4)


def test_count_gflops_matches_paper_tsn():
    model = baselines.create_baseline("tsn_resnet50", num_classes=1000, num_segments=1).eval()
    per_frame = baselines.count_gflops(model, torch.randn(1, 1, 3, 224, 224))
    assert abs(per_frame * 8 - 32.7) < 0.1  # paper Table: TSN ResNet50, 8 frames, 32.7 GFLOPs


# ---------------------------------------------------------------- timing


def test_summarize_quartiles():
    s = timing.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.median, s.q1, s.q3, s.min, s.max, s.mean, s.n) == (3.0, 2.0, 4.0, 1.0, 5.0, 3.0, 5)
    assert timing.summarize([2.0]).q1 == 2.0
    with pytest.raises(ValueError, match="at least one sample"):
        timing.summarize([])


def test_round_robin_interleaves_and_syncs():
    calls, syncs, seen = [], [], []
    runners = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    stats = timing.time_round_robin(
        runners, repeats=3, warmup=2, number=2, sync=lambda: syncs.append(1),
        progress=lambda r, n, name, sec: seen.append((r, name)),
    )
    assert calls[:6] == list("aabbcc")  # warm-up first
    timed = calls[6:]
    assert timed == list("aabbcc") + list("bbccaa") + list("ccaabb")  # start rotates each round
    assert [s.n for s in stats.values()] == [3, 3, 3]
    assert seen[0] == (1, "a") and seen[-1] == (3, "b") and len(seen) == 9
    assert len(syncs) == 1 + 2 * 9
    with pytest.raises(ValueError, match="repeats"):
        timing.time_round_robin(runners, repeats=0)


# ---------------------------------------------------------------- report


def _fake_rows():
    cfg = bench_config.BenchConfig(frames=8)
    entries = bench_config.default_suite(cfg)
    stats, facts = {}, {}
    for i, e in enumerate(entries):
        ms = 400.0 if e.is_baseline else 100.0 + 10 * i + (50 if e.execution == "dense" else 0)
        stats[e.key] = timing.summarize([ms / 1e3 * f for f in (0.9, 1.0, 1.2)])
        gflops = 32.7 if e.is_baseline else 10 + 20 * e.rt
        facts[e.key] = {"gflops": gflops, "rt_realized": e.rt, "check_rel_err": 1e-7}
    return entries, report.build_rows(entries, stats, facts, batch=2)


def test_default_suite_matches_issue():
    entries = bench_config.default_suite(bench_config.BenchConfig(frames=8))
    keys = [e.key for e in entries]
    assert keys[:2] == ["tsn_resnet50-t8", "tsm_resnet50-t8"]
    for rt in (0.25, 0.5, 0.75, 1.0):
        assert f"af_resnet50-t8-rt{rt:g}-sparse" in keys and f"af_resnet50-t8-rt{rt:g}-dense" in keys
    for rt in (0.4, 0.8):
        assert f"af_resnet50-tsm-t12-rt{rt:g}-sparse" in keys
    assert "af_mobilenetv3-tsm-t12-rt0.4-dense" in keys
    assert len(set(keys)) == len(keys)
    only = bench_config.default_suite(bench_config.BenchConfig(only=("mobilenet",)))
    assert [e.key for e in only][2:] == ["af_mobilenetv3-tsm-t12-rt0.4-sparse", "af_mobilenetv3-tsm-t12-rt0.4-dense"]
    quick = bench_config.default_suite(bench_config.BenchConfig(quick=True))
    assert len(quick) == 4


def test_build_rows_ratios():
    entries, rows = _fake_rows()
    by_key = {r["key"]: r for r in rows}
    tsn = by_key["tsn_resnet50-t8"]
    assert tsn["speedup_vs_tsn"] is None and tsn["efficiency"] == pytest.approx(1.0)
    assert tsn["videos_per_s"] == pytest.approx(2 / 0.4)
    assert tsn["gflop_per_s"] == pytest.approx(32.7 * 2 / 0.4)
    sparse = by_key["af_resnet50-t8-rt0.25-sparse"]
    dense = by_key["af_resnet50-t8-rt0.25-dense"]
    assert sparse["speedup_vs_tsn"] == pytest.approx(400 / sparse["latency_ms"])
    assert sparse["speedup_vs_dense"] == pytest.approx(dense["latency_ms"] / sparse["latency_ms"])
    assert dense["speedup_vs_dense"] is None
    flop_ratio = 32.7 / sparse["gflops"]
    assert sparse["efficiency"] == pytest.approx(sparse["speedup_vs_tsn"] / flop_ratio)
    assert sparse["efficiency"] == pytest.approx(sparse["gflop_per_s"] / tsn["gflop_per_s"])
    assert sparse["q1_ms"] < sparse["latency_ms"] < sparse["q3_ms"]


def test_writers(tmp_path):
    _, rows = _fake_rows()
    report.write_json(tmp_path / "r.json", {"device": "cpu"}, {"batch": 2}, rows)
    data = json.loads((tmp_path / "r.json").read_text())
    assert set(data) == {"env", "config", "results"} and len(data["results"]) == len(rows)
    report.write_csv(tmp_path / "r.csv", rows)
    with (tmp_path / "r.csv").open() as fh:
        read = list(csv.DictReader(fh))
    assert len(read) == len(rows) and tuple(read[0]) == report.CSV_FIELDS
    assert read[0]["speedup_vs_tsn"] == "" and float(read[2]["latency_ms"]) == pytest.approx(rows[2]["latency_ms"])
    report.write_plot(tmp_path / "p.png", rows, "test")
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG_MAGIC
    table = report.format_table(rows)
    assert len(table.splitlines()) == len(rows) + 2 and "AF-MobileNetV3" in table


# ---------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch", "0"], "argument --batch: must be >= 1, got 0"),
        (["--frames", "x"], "argument --frames: expected an integer, got 'x'"),
        (["--size", "50"], "argument --size: must be a multiple of 32"),
        (["--device", "tpu"], "argument --device: expected auto, cpu, cuda or cuda:N, got 'tpu'"),
        (["--dtype", "int8"], "argument --dtype: invalid choice"),
        (["--threads", "0"], "argument --threads: must be >= 1"),
        (["--warmup", "-1"], "argument --warmup: must be >= 0"),
    ],
)
def test_bad_flags(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["bench"] + argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cuda_flags_without_gpu(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        main(["bench", "--device", "cuda"])
    assert "argument --device: 'cuda' requested but no CUDA GPU is visible" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--device", "cpu", "--dtype", "fp16"])
    assert "float16 is only supported on CUDA" in capsys.readouterr().err


def test_device_defaults(monkeypatch):
    from afnet.bench.cli import resolve_bench_config
    from afnet.cli import build_parser

    parser = build_parser()
    cpu = resolve_bench_config(parser.parse_args(["bench", "--device", "cpu"]), parser)
    assert (cpu.batch, cpu.dtype, cpu.channels_last, cpu.repeats) == (1, torch.float32, True, 11)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = resolve_bench_config(parser.parse_args(["bench", "--device", "cuda"]), parser)
    assert (gpu.batch, gpu.dtype, gpu.channels_last) == (8, torch.bfloat16, True)
    args = parser.parse_args(["bench", "--device", "cpu", "--quick", "--no-channels-last"])
    quick = resolve_bench_config(args, parser)
    assert (quick.repeats, quick.warmup, quick.channels_last) == (3, 1, False)


def test_python_m_afnet_help():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "afnet", "bench", "--help"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--channels-last" in out.stdout and "--quick" in out.stdout


# ---------------------------------------------------------------- end to end

TINY = ["bench", "--quick", "--device", "cpu", "--size", "64", "--frames", "2", "--threads", "1",
        "--repeats", "1", "--warmup", "0", "-q"]


def test_quick_run_writes_outputs(tmp_path, capsys):
    torch.set_num_threads(2)
    try:
        assert main(TINY + ["--out", str(tmp_path), "--profile", "rt0.25-sparse"]) == 0
        assert torch.get_num_threads() == 2  # the run's thread count (1) does not leak out
    finally:
        torch.set_num_threads(1)
    stdout = capsys.readouterr().out
    assert "afnet bench: device=cpu" in stdout and "torch=" in stdout and "threads=1" in stdout
    assert "AF-ResNet50" in stdout and "TSN-ResNet50" in stdout
    data = json.loads((tmp_path / "results.json").read_text())
    assert {"device", "cpu", "torch", "dtype", "threads"} <= set(data["env"])
    rows = data["results"]
    assert [r["key"] for r in rows] == [
        "tsn_resnet50-t2", "tsm_resnet50-t2", "af_resnet50-t2-rt0.25-sparse", "af_resnet50-t2-rt0.25-dense"]
    for r in rows:
        assert set(report.CSV_FIELDS) <= set(r)
        assert r["latency_ms"] > 0 and r["gflops"] > 0
    sparse = rows[2]
    assert sparse["rt_realized"] == pytest.approx(0.5)  # round(0.25 * 2) = 0 -> at least one frame of 2
    assert sparse["check_rel_err"] < runner.REL_TOL[torch.float32] and sparse["gflops"] < rows[0]["gflops"]
    with (tmp_path / "results.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 4
    assert (tmp_path / "latency_vs_gflops.png").read_bytes()[:8] == PNG_MAGIC
    assert "Self CPU" in (tmp_path / "profile_af_resnet50-t2-rt0.25-sparse.txt").read_text()


def test_check_failure_is_loud(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "rel_err", lambda a, b: float("nan"))
    assert main(TINY + ["--out", str(tmp_path), "--no-plot", "--no-fold-baselines"]) == 1
    err = capsys.readouterr().err
    assert "correctness check failed" in err and "sparse output differs from dense" in err
    assert not (tmp_path / "results.json").exists()


def test_low_precision_run_checks_against_float32(tmp_path, capsys):
    """bfloat16 (the GPU default) is checked against float32 before timing, on the CPU too."""
    assert main(TINY + ["--dtype", "bf16", "--no-plot", "--out", str(tmp_path)]) == 0
    assert "dtype=bfloat16" in capsys.readouterr().out
    rows = json.loads((tmp_path / "results.json").read_text())["results"]
    assert all(r["latency_ms"] > 0 for r in rows) and rows[2]["check_rel_err"] < runner.REL_TOL[torch.float32]
