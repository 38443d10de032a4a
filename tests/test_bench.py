"""The latency benchmark: baselines (torchvision and planned), the suite, the checks before
timing, the timing harness, reports and plots, CLI flags and tiny end-to-end runs.

No test here asserts a speed; speed claims live in ``afnet bench`` itself.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import afnet
from afnet.bench import baselines
from afnet.bench import build, report, runner, timing
from afnet.bench import config as bench_config
from afnet.bench.config import BenchConfig, Entry
from afnet.cli import main
from afnet.engine.counters import count_macs
from afnet.engine.folding import FoldedConv, ModuleStep
from afnet_kernels.reference import temporal_shift
from conftest import needs_cuda

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
pytestmark = pytest.mark.usefixtures("one_thread")


def _calibrated(model: torch.nn.Module, video: torch.Tensor, seed: int = 0) -> torch.nn.Module:
    build.calibrate_(model, video, torch.Generator().manual_seed(seed))
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
    assert build.rel_err(out_tsm, out_tsn) > 1e-3  # the shift changes the output


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
    assert build.rel_err(after, before) < build.REL_TOL[torch.float32]


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


@pytest.mark.parametrize("arch, weights", [("tsn_resnet50", "ResNet50_Weights"),
                                           ("tsn_mobilenetv3", "MobileNet_V3_Large_Weights")])
def test_count_gflops_matches_torchvision(arch, weights):
    """Per frame at 224 px, the count equals the multiply-accumulates torchvision publishes
    (4.089 G for ResNet-50; 0.217 G for MobileNetV3-Large, its squeeze-excitation FCs counted as
    in x out, activations zero, as afnet.count_flops counts AF-MobileNetV3), plus what the paper
    convention adds: 9x the outputs of ResNet's stem max-pool, [64, 56, 56]."""
    import torchvision

    model = baselines.create_baseline(arch, num_classes=1000, num_segments=1).eval()
    per_frame = baselines.count_gflops(model, torch.randn(1, 1, 3, 224, 224))
    published = getattr(torchvision.models, weights).IMAGENET1K_V1.meta["_ops"]
    max_pool = 9 * 64 * 56 * 56 / 1e9 if arch == "tsn_resnet50" else 0.0
    assert per_frame == pytest.approx(published + max_pool, abs=5e-4)
    if arch == "tsn_resnet50":
        assert abs(per_frame * 8 - 32.7) < 0.1  # paper Table: TSN ResNet50, 8 frames, 32.7 GFLOPs


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("layout", baselines.MEMORY_FORMATS)
def test_planned_baseline_equals_torchvision(tsn_pair, shift, layout):
    """The engine plan of TSN/TSM computes what torchvision computes, in both layouts, and really
    runs the folded convolutions: 53 of them (stem, 16 bottlenecks x 3, 4 shortcuts), every
    ReLU fused, on every frame."""
    tsn, video = tsn_pair
    model = copy.deepcopy(tsn)
    if shift:
        baselines.add_temporal_shift_(model.base, 3)
    planned = baselines.PlannedBaseline(model, memory_format=layout).eval()
    with torch.inference_mode():
        expected = model(video)
        with count_macs() as counter:
            out = planned(video)
    assert build.rel_err(out, expected) < build.REL_TOL[torch.float32]
    assert counter.calls == 53 and counter.rows == 53 * video.shape[0] * video.shape[1]
    (plan,) = planned._plans.values()
    blocks = plan.parts[1:-1]
    assert len(blocks) == 16 and all(b.shift_div == (8 if shift else 0) for b in blocks)
    assert all(isinstance(step, FoldedConv) for b in blocks for step in b.branch)
    assert [type(s) for s in plan.parts[0].steps] == [FoldedConv, ModuleStep]  # conv+BN+ReLU, max-pool
    assert plan.parts[0].steps[0].relu and blocks[0].branch[0].relu and not blocks[0].branch[-1].relu


def test_planned_tsm_shifts(tsn_pair):
    """Control for the test above: the planned TSM differs from the planned TSN (the shift runs)."""
    tsn, video = tsn_pair
    tsm = copy.deepcopy(tsn)
    baselines.add_temporal_shift_(tsm.base, 3)
    with torch.inference_mode():
        planned_tsn = baselines.PlannedBaseline(tsn).eval()(video)
        planned_tsm = baselines.PlannedBaseline(tsm).eval()(video)
    assert build.rel_err(planned_tsm, planned_tsn) > 1e-3


@pytest.fixture(scope="module")
def mobilenet_pair():
    """A calibrated TSN-MobileNetV3 (T=3) and its input, in eval."""
    torch.manual_seed(0)
    video = torch.randn(2, 3, 3, 64, 64)
    model = baselines.create_baseline("tsn_mobilenetv3", num_classes=7, num_segments=3)
    return _calibrated(model, video), video


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("layout", baselines.MEMORY_FORMATS)
def test_planned_mobilenet_equals_torchvision(mobilenet_pair, shift, layout):
    """TSN/TSM-MobileNetV3 on the engine compute what torchvision computes, in both layouts, BN
    folded (also by fold_batchnorm_), and really run the folded convolutions: 46 of them (stem,
    2 + 14 x 3 in the inverted residuals, the last 1x1), on every frame; squeeze-excitation runs
    as a module."""
    tsn, video = mobilenet_pair
    model = copy.deepcopy(tsn)
    if shift:
        baselines.add_temporal_shift_(model.base, 3)
    planned = baselines.PlannedBaseline(model, memory_format=layout).eval()
    with torch.inference_mode():
        expected = model(video)
        with count_macs() as counter:
            out = planned(video)
        folded = baselines.fold_batchnorm_(copy.deepcopy(model))(video)
    assert build.rel_err(out, expected) < build.REL_TOL[torch.float32]
    assert build.rel_err(folded, expected) < build.REL_TOL[torch.float32]
    assert counter.calls == 46 and counter.rows == 46 * video.shape[0] * video.shape[1]
    (plan,) = planned._plans.values()
    blocks = plan.parts[1:-2]
    assert len(blocks) == 15 and all(b.shift_div == (8 if shift else 0) for b in blocks)
    assert [b.has_residual for b in blocks] == [m.use_res_connect for m in model.residual_blocks()]
    assert sum(b.has_residual for b in blocks) == 10 and not any(b.relu for b in blocks)


def test_tsm_mobilenet_shifts_every_block(mobilenet_pair):
    """Control for the test above: TSM-MobileNetV3 shifts the first conv's input in every inverted
    residual (as AF-MobileNetV3 does), the planned TSM differs from the planned TSN, and BN folding
    keeps the shift."""
    tsn, video = mobilenet_pair
    tsm = copy.deepcopy(tsn)
    baselines.add_temporal_shift_(tsm.base, 3)
    assert sum(isinstance(m, baselines.ShiftedConv) for m in tsm.modules()) == 15
    with torch.inference_mode():
        planned_tsn = baselines.PlannedBaseline(tsn).eval()(video)
        planned_tsm = baselines.PlannedBaseline(tsm).eval()(video)
        assert build.rel_err(planned_tsm, planned_tsn) > 1e-3
        assert build.rel_err(baselines.fold_batchnorm_(copy.deepcopy(tsm))(video), tsm(video)) < 1e-4


def test_planned_baseline_errors(tsn_pair, mobilenet_pair):
    tsn, video = tsn_pair
    for model in (tsn, mobilenet_pair[0]):
        folded = baselines.fold_batchnorm_(copy.deepcopy(model))
        with pytest.raises(ValueError, match="already folded by fold_batchnorm_"):
            baselines.PlannedBaseline(folded)
    with pytest.raises(ValueError, match="backend must be one of"):
        baselines.PlannedBaseline(tsn, backend="cuda")
    planned = baselines.PlannedBaseline(copy.deepcopy(tsn))
    with pytest.raises(RuntimeError, match="inference only"):
        planned.train()(video)
    with pytest.raises(ValueError, match=r"\[N, 3, 3, H, W\]"):
        planned.eval()(video[:, :2])


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


def _fake_rows(cfg: BenchConfig = BenchConfig(frames=8)):
    """Rows of the suite with made-up timings: eager torchvision TSN slowest (400 ms), planned
    NHWC TSN fastest (250 ms), compiled 300 ms, TSM 20 ms slower; the MobileNetV3 baselines ten
    times faster; AF rows faster when sparse."""
    entries = bench_config.default_suite(cfg)
    stats, facts = {}, {}
    for i, e in enumerate(entries):
        if e.is_baseline:
            ms = {"torchvision": 400.0, "planned": 260.0 if e.layout == "contiguous" else 250.0}[e.execution]
            ms = 300.0 if e.runner == "compiled" else 330.0 if e.runner == "onnxruntime" else ms
            ms += 20 if e.arch in (bench_config.TSM, bench_config.TSM_MOBILENET) else 0
            ms /= 10 if e.family == "mobilenetv3" else 1
        else:
            ms = 100.0 + 10 * i + (50 if e.execution == "dense" else 0) - (30 if e.runner != "eager" else 0)
            ms /= 10 if e.family == "mobilenetv3" else 1
        stats[e.key] = timing.summarize([ms / 1e3 * f for f in (0.9, 1.0, 1.2)])
        if e.is_baseline:
            gflops = 32.7 if e.family == "resnet50" else 2.6
        else:
            gflops = (10 + 20 * e.rt * (e.rs or 1)) / (10 if e.family == "mobilenetv3" else 1)
        facts[e.key] = {"gflops": gflops, "rt_realized": e.rt, "rs_realized": e.rs, "check_rel_err": 1e-7}
    return entries, report.build_rows(entries, stats, facts, batch=2)


def _keys(cfg: BenchConfig):
    return [e.key for e in bench_config.default_suite(cfg)]


RESNET_BASELINES = [
    "tsn_resnet50-t8-torchvision-channels_last", "tsn_resnet50-t8-planned-contiguous",
    "tsn_resnet50-t8-planned-channels_last", "tsn_resnet50-t8-torchvision-compiled-channels_last",
    "tsm_resnet50-t8-torchvision-channels_last", "tsm_resnet50-t8-planned-contiguous",
    "tsm_resnet50-t8-planned-channels_last",
]
MOBILENET_BASELINES = [k.replace("resnet50-t8", "mobilenetv3-t12") for k in RESNET_BASELINES]


def test_default_suite_on_cpu():
    keys = _keys(BenchConfig(frames=8, channels_last=True))
    assert keys[:7] == RESNET_BASELINES
    for rt in (0.25, 0.5, 0.75, 1.0):
        for execution in ("sparse", "dense", "folded"):
            assert f"af_resnet50-t8-rt{rt:g}-{execution}" in keys
    for rt in (0.25, 0.5):
        assert {f"af_resnet50-t8-budget{rt:g}-sparse", f"af_resnet50-t8-budget{rt:g}-sparse-compiled"} <= set(keys)
    # onnxruntime, CPU only: TSN exported from the run's layout, AF-ResNet50 under the budget RT 0.25.
    assert {"tsn_resnet50-t8-torchvision-onnxruntime-channels_last",
            "af_resnet50-t8-budget0.25-sparse-onnxruntime"} <= set(keys)
    for rt in (0.4, 0.8):
        assert {f"af_resnet50-tsm-t12-rt{rt:g}-sparse", f"af_resnet50-tsm-t12-rt{rt:g}-dense"} <= set(keys)
    spatial = [k for k in keys if "-rs" in k]
    assert len(spatial) == 12
    assert {"af_resnet50-t8-rt0.5-rs0.25-sparse", "af_resnet50-t8-rt1-rs1-dense"} <= set(spatial)
    # The MobileNetV3 family last: its own TSN and TSM on the same 12 frames, then AF-MobileNetV3.
    assert keys[-10:] == MOBILENET_BASELINES + [
        "af_mobilenetv3-tsm-t12-rt0.4-sparse", "af_mobilenetv3-tsm-t12-rt0.4-dense",
        "af_mobilenetv3-tsm-t12-budget0.4-sparse"]
    # GPU-only rows: CUDA graphs and the threshold rule's graphs; MobileNet compiles in minutes on a CPU.
    assert not any("graphed" in k or "exact" in k or "reduce-overhead" in k for k in keys)
    assert "af_mobilenetv3-tsm-t12-budget0.4-sparse-compiled" not in keys
    assert len(set(keys)) == len(keys) == 7 + 12 + 4 + 2 + 4 + 12 + 7 + 3
    assert "onnxruntime" not in " ".join(_keys(BenchConfig(frames=8, onnxruntime=False)))


def test_default_suite_on_cuda_and_without_compile():
    keys = _keys(BenchConfig(device="cuda", frames=8))  # the suite only; nothing runs on the device
    assert {"af_resnet50-t8-budget0.25-sparse-graphed", "af_resnet50-t8-exact0.25-sparse",
            "af_resnet50-t8-exact0.25-sparse-reduce-overhead", "af_mobilenetv3-tsm-t12-budget0.4-sparse-compiled",
            "af_mobilenetv3-tsm-t12-budget0.4-sparse-graphed", "tsn_resnet50-t8-planned-channels_last",
            "tsn_resnet50-t8-torchvision-compiled-contiguous"} <= set(keys)  # BenchConfig's layout: contiguous
    # The strongest TSN of each family also runs as one CUDA graph, torchvision and planned; TSM does not.
    for tsn in ("tsn_resnet50-t8", "tsn_mobilenetv3-t12"):
        assert {f"{tsn}-torchvision-graphed-contiguous", f"{tsn}-planned-graphed-contiguous"} <= set(keys)
    assert not any(k.startswith("tsm_") and "graphed" in k for k in keys)
    assert not any("onnxruntime" in k for k in keys)  # onnxruntime rows: CPU only
    plain = _keys(BenchConfig(device="cuda", frames=8, compile=False))
    assert not any("compiled" in k or "reduce-overhead" in k for k in plain)
    assert "af_resnet50-t8-budget0.25-sparse-graphed" in plain


def test_quick_only_and_sweep_suites():
    quick = _keys(BenchConfig(quick=True, channels_last=True))
    # --quick: the baselines in the run's layout only, the compiled TSN-ResNet50; no MobileNet compile.
    assert quick == [
        *(RESNET_BASELINES[i] for i in (0, 2, 3, 4, 6)),
        "af_resnet50-t8-rt0.25-sparse", "af_resnet50-t8-rt0.25-dense", "af_resnet50-t8-rt0.25-folded",
        "af_resnet50-t8-budget0.25-sparse", *(MOBILENET_BASELINES[i] for i in (0, 2, 4, 6)),
        "af_mobilenetv3-tsm-t12-rt0.4-sparse", "af_mobilenetv3-tsm-t12-rt0.4-dense"]
    # --only keeps the baselines of the matched entries' families, and every entry of their models.
    only = _keys(BenchConfig(only=("mobilenet",)))
    assert all(k.startswith(("tsn_mobilenetv3", "tsm_mobilenetv3", "af_mobilenetv3")) for k in only)
    assert len(only) == 7 + 3
    only = _keys(BenchConfig(only=("rt0.25-sparse",), channels_last=True))
    assert only == RESNET_BASELINES + ["af_resnet50-t8-rt0.25-sparse", "af_resnet50-t8-rt0.25-dense",
                                       "af_resnet50-t8-rt0.25-folded",
                                       "tsn_resnet50-t8-torchvision-onnxruntime-channels_last"]
    sweep = _keys(BenchConfig(device="cuda", batch_sweep=(1, 8, 32), channels_last=True))
    tsn = ["{}-torchvision-channels_last", "{}-planned-contiguous", "{}-planned-channels_last",
           "{}-torchvision-compiled-channels_last", "{}-torchvision-graphed-channels_last",
           "{}-planned-graphed-channels_last"]
    assert sweep == [
        *(k.format("tsn_resnet50-t8") for k in tsn),
        "af_resnet50-t8-rt0.25-sparse", "af_resnet50-t8-budget0.25-sparse", "af_resnet50-t8-budget0.25-sparse-graphed",
        *(k.format("tsn_mobilenetv3-t12") for k in tsn),
        "af_mobilenetv3-tsm-t12-rt0.4-sparse", "af_mobilenetv3-tsm-t12-budget0.4-sparse",
        "af_mobilenetv3-tsm-t12-budget0.4-sparse-graphed",
    ]


def test_entry_names_and_validation():
    e = Entry("af_resnet50", 8, 0.25, execution="sparse", rule="budget", runner="compiled")
    assert (e.model_key, e.key, e.variant) == (
        "af_resnet50-t8-budget0.25", "af_resnet50-t8-budget0.25-sparse-compiled", "budget sparse compiled")
    assert Entry("tsm_resnet50", 8, execution="planned", layout="contiguous").variant == "planned NCHW"
    assert Entry("tsn_resnet50", 8, runner="onnxruntime").variant == "torchvision onnxruntime"
    assert Entry("af_resnet50", 8, 0.5, rs=0.25).model_key == "af_resnet50-t8-rt0.5-rs0.25"
    assert [Entry(a, 8).family for a in ("tsn_resnet50", "tsm_mobilenetv3")] == ["resnet50", "mobilenetv3"]
    assert Entry("af_mobilenetv3", 12, 0.4).family == "mobilenetv3"
    assert Entry("af_resnet18", 8, 0.4).family == "resnet50"
    with pytest.raises(ValueError, match="rule must be one of"):
        Entry("af_resnet50", 8, 0.5, rule="threshold")
    with pytest.raises(ValueError, match="runner must be one of"):
        Entry("af_resnet50", 8, 0.5, runner="jit")
    with pytest.raises(ValueError, match="layout must be one of"):
        Entry("tsn_resnet50", 8, layout="nhwc")


def test_build_rows_ratios_against_the_fastest_tsn():
    _, rows = _fake_rows()
    by_key = {r["key"]: r for r in rows}
    fastest = by_key["tsn_resnet50-t8-planned-channels_last"]
    eager = by_key["tsn_resnet50-t8-torchvision-contiguous"]
    resnet = [r for r in rows if r["family"] == "resnet50"]
    assert all(r["tsn_reference"] == fastest["key"] for r in resnet)
    assert all(r["tsm_reference"] == "tsm_resnet50-t8-planned-channels_last" for r in resnet)
    assert fastest["speedup_vs_tsn"] == pytest.approx(1.0) and fastest["efficiency"] == pytest.approx(1.0)
    assert eager["speedup_vs_tsn"] == pytest.approx(250 / 400)  # the slow eager TSN is not the denominator
    compiled = by_key["tsn_resnet50-t8-torchvision-compiled-contiguous"]
    assert compiled["speedup_vs_eager"] == pytest.approx(400 / 300)
    onnx = by_key["tsn_resnet50-t8-torchvision-onnxruntime-contiguous"]
    assert onnx["speedup_vs_eager"] == pytest.approx(400 / 330)
    sparse = by_key["af_resnet50-t8-rt0.25-sparse"]
    dense = by_key["af_resnet50-t8-rt0.25-dense"]
    folded = by_key["af_resnet50-t8-rt0.25-folded"]
    assert sparse["speedup_vs_tsn"] == pytest.approx(250 / sparse["latency_ms"])
    assert sparse["speedup_vs_tsm"] == pytest.approx(270 / sparse["latency_ms"])
    assert sparse["speedup_vs_dense"] == pytest.approx(dense["latency_ms"] / sparse["latency_ms"])
    assert folded["speedup_vs_dense"] == pytest.approx(dense["latency_ms"] / folded["latency_ms"])
    assert dense["speedup_vs_dense"] is None and sparse["speedup_vs_eager"] is None
    budget = by_key["af_resnet50-t8-budget0.25-sparse-compiled"]
    assert budget["speedup_vs_eager"] == pytest.approx(
        by_key["af_resnet50-t8-budget0.25-sparse"]["latency_ms"] / budget["latency_ms"])
    flop_ratio = 32.7 / sparse["gflops"]
    assert sparse["efficiency"] == pytest.approx(sparse["speedup_vs_tsn"] / flop_ratio)
    assert sparse["efficiency"] == pytest.approx(sparse["gflop_per_s"] / fastest["gflop_per_s"])
    assert sparse["q1_ms"] < sparse["latency_ms"] < sparse["q3_ms"]
    # AF-MobileNetV3 against the fastest TSN-MobileNetV3 (25 ms), its efficiency on that FLOP ratio.
    mobile = by_key["af_mobilenetv3-tsm-t12-rt0.4-sparse"]
    assert mobile["tsn_reference"] == "tsn_mobilenetv3-t12-planned-channels_last"
    assert mobile["tsm_reference"] == "tsm_mobilenetv3-t12-planned-channels_last"
    assert mobile["speedup_vs_tsn"] == pytest.approx(25 / mobile["latency_ms"])
    assert mobile["efficiency"] == pytest.approx(mobile["speedup_vs_tsn"] / (2.6 / mobile["gflops"]))
    assert by_key["tsn_mobilenetv3-t12-planned-contiguous"]["speedup_vs_tsm"] is None
    line = report.references_line(rows)
    assert "x TSN of the resnet50 rows is against the fastest TSN-ResNet50: planned NHWC (250.0 ms)" in line
    assert "x TSN of the mobilenetv3 rows is against the fastest TSN-MobileNetV3: planned NHWC (25.0 ms)" in line


def test_ideal_lines_go_through_each_familys_fastest_tsn():
    _, rows = _fake_rows()
    lines = report.ideal_lines(rows)
    assert [ref["key"] for ref, _ in lines] == ["tsn_resnet50-t8-planned-channels_last",
                                                "tsn_mobilenetv3-t12-planned-channels_last"]
    for ref, slope in lines:
        assert slope * ref["gflops"] == pytest.approx(ref["ms_per_video"])
    assert report.ideal_lines([r for r in rows if not r["arch"].startswith("tsn_")]) == []


def _assert_png(path: Path, min_colors: int = 8) -> None:
    """A PNG a person can read: real dimensions and more than a few colors (lines, markers, text)."""
    from matplotlib import image

    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = image.imread(path)
    assert pixels.shape[0] >= 400 and pixels.shape[1] >= 600
    assert len({tuple(p) for p in pixels.reshape(-1, pixels.shape[-1])[::7].tolist()}) >= min_colors


def test_writers(tmp_path):
    _, rows = _fake_rows()
    report.write_json(tmp_path / "r.json", {"device": "cpu"}, {"batch": 2}, rows, {"x-sparse": "no tile ops"})
    data = json.loads((tmp_path / "r.json").read_text())
    assert set(data) == {"env", "config", "reference", "skipped", "results"} and len(data["results"]) == len(rows)
    assert data["reference"] == {"2": {
        "resnet50": {"tsn": "tsn_resnet50-t8-planned-channels_last", "tsm": "tsm_resnet50-t8-planned-channels_last"},
        "mobilenetv3": {"tsn": "tsn_mobilenetv3-t12-planned-channels_last",
                        "tsm": "tsm_mobilenetv3-t12-planned-channels_last"}}}
    assert data["skipped"] == [{"key": "x-sparse", "reason": "no tile ops"}]
    report.write_csv(tmp_path / "r.csv", rows)
    with (tmp_path / "r.csv").open() as fh:
        read = list(csv.DictReader(fh))
    assert len(read) == len(rows) and tuple(read[0]) == report.CSV_FIELDS
    assert read[2]["speedup_vs_tsm"] == "" and float(read[2]["latency_ms"]) == pytest.approx(rows[2]["latency_ms"])
    report.write_plot(tmp_path / "p.png", rows, "test")
    _assert_png(tmp_path / "p.png")
    table = report.format_table(rows)
    assert len(table.splitlines()) == len(rows) + 2 and "AF-MobileNetV3" in table and "planned NHWC" in table
    assert "TSN-MobileNetV3" in table and "torchvision onnxruntime" in table


def test_sweep_plot(tmp_path):
    rows = []
    for batch in (1, 8, 32):
        cfg = BenchConfig(device="cuda", batch_sweep=(1, 8, 32))
        entries = bench_config.default_suite(cfg)
        stats = {e.key: timing.summarize([0.01 * (i + 1) * batch ** 0.5]) for i, e in enumerate(entries)}
        facts = {e.key: {"gflops": 30.0 if e.is_baseline else 10.0, "rt_realized": e.rt} for e in entries}
        rows += report.build_rows(entries, stats, facts, batch)
    report.write_sweep_plot(tmp_path / "s.png", rows, "sweep")
    _assert_png(tmp_path / "s.png")


# ---------------------------------------------------------------- checks before timing


def _tiny_cfg(**fields) -> BenchConfig:
    return BenchConfig(**{**dict(size=32, frames=4, batch=2, threads=1, channels_last=True, num_classes=5), **fields})


def _videos(cfg: BenchConfig):
    return runner.make_videos(cfg, [cfg.frames])


@pytest.mark.parametrize("rule", ["budget", "exact"])
def test_navigation_calibration_survives_bfloat16(rule):
    """The bench's learned-gate models keep exactly round(rt*T) frames of every video, and choose
    the same frames in float32 and bfloat16, dense and sparse: the checks compare like with like."""
    cfg = _tiny_cfg()
    video = _videos(cfg)[cfg.frames]
    e = Entry("af_resnet18", cfg.frames, 0.5, rule=rule, execution="sparse")
    model = build.create_af_model(e, cfg)
    generator = torch.Generator().manual_seed(0)
    build.calibrate_(model, video, generator)
    build.calibrate_navigation_(model, video, 0.5, generator)
    with torch.no_grad():
        masks = model(video, return_masks=True)[1]
    assert [m.float().mean().item() for m in masks] == [0.5] * len(model.navigation_modules)
    if rule == "budget":
        model.frame_budget = 0.5
    seen = []
    for dtype in (torch.float32, torch.bfloat16):
        model.to(dtype)
        for execution in ("dense", "sparse"):
            model.execution = execution
            with torch.inference_mode():
                _, masks = model(video.to(dtype), return_masks=True)
            assert all((m.sum(dim=1) == 2).all() for m in masks)
            seen.append(masks)
    assert all(torch.equal(a, b) for masks in seen[1:] for a, b in zip(masks, seen[0]))
    assert any(not torch.equal(seen[0][0], m) for m in seen[0][1:])  # modules choose different frames


def test_navigation_calibration_refuses_fixed_policies_and_budgets():
    cfg = _tiny_cfg()
    video = _videos(cfg)[cfg.frames]
    generator = torch.Generator().manual_seed(0)
    fixed = build.create_af_model(Entry("af_resnet18", cfg.frames, 0.5), cfg)
    with pytest.raises(ValueError, match="needs a model with learned navigation"):
        build.calibrate_navigation_(fixed, video, 0.5, generator)
    budgeted = build.create_af_model(Entry("af_resnet18", cfg.frames, 0.5, rule="budget"), cfg)
    budgeted.frame_budget = 0.5
    with pytest.raises(ValueError, match="set frame_budget after"):
        build.calibrate_navigation_(budgeted, video, 0.5, generator)


def _build(cfg: BenchConfig, entries, deadline=None):
    return build.build_and_check(cfg, entries, _videos(cfg), lambda msg: None, deadline)


def test_build_and_check_every_call(monkeypatch):
    """Each call is checked against what it must equal; a compiled call against the eager one it
    wraps (here dynamo's eager backend: the same flow as inductor, without minutes of codegen).
    Every engine call of an AF model runs a frozen model: only the dense reference calls the live one."""
    compiled = []

    def compile_eager(model, runner):
        compiled.append(model)
        return torch.compile(model, backend="eager", fullgraph=True)

    monkeypatch.setattr(build, "_compile", compile_eager)
    cfg = _tiny_cfg()
    entries = [
        Entry("tsn_resnet50", cfg.frames, layout="channels_last"),
        Entry("tsn_resnet50", cfg.frames, execution="planned", layout="contiguous"),
        Entry("tsn_resnet50", cfg.frames, runner="compiled"),
        Entry("tsn_mobilenetv3", cfg.frames, layout="channels_last"),
        Entry("tsm_mobilenetv3", cfg.frames, execution="planned", layout="channels_last"),
        *(Entry("af_resnet18", cfg.frames, 0.5, execution=x) for x in ("sparse", "dense", "folded")),
        Entry("af_resnet18", cfg.frames, 0.25, rule="budget", execution="sparse"),
        Entry("af_resnet18", cfg.frames, 0.25, rule="budget", execution="sparse", runner="compiled"),
        Entry("af_resnet18", cfg.frames, 0.5, rule="exact", execution="sparse"),
    ]
    torch._dynamo.reset()
    calls, facts, skipped = _build(cfg, entries)
    assert list(calls) == [e.key for e in entries] and skipped == {}
    for e in entries:
        f = facts[e.key]
        reference_itself = e.execution == "dense"
        assert (f["check_rel_err"] is None) == reference_itself
        assert reference_itself or f["check_rel_err"] < build.REL_TOL[torch.float32]
    assert facts["af_resnet18-t4-budget0.25-sparse"]["rt_realized"] == 0.25
    assert facts["af_resnet18-t4-exact0.5-sparse"]["rt_realized"] == 0.5
    assert facts["af_resnet18-t4-rt0.5-sparse"]["gflops_executed"] > 0  # counted on the sparse path
    assert facts["af_resnet18-t4-rt0.5-dense"]["gflops_executed"] is None
    mobile, resnet = (facts[f"{arch}-t4-{x}-channels_last"]["gflops"]
                      for arch, x in (("tsm_mobilenetv3", "planned"), ("tsn_resnet50", "torchvision")))
    assert mobile < resnet / 10
    assert type(compiled[1]).__name__ == "FrozenTSN"  # [0] is torchvision's TSN
    live_calls = []
    real_forward = afnet.engine.LiveTSN.forward

    def recording_forward(self, *args, **kwargs):
        live_calls.append(self.execution)
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(afnet.engine.LiveTSN, "forward", recording_forward)
    with torch.inference_mode():
        for e in entries:
            if e.is_baseline:
                continue
            live_calls.clear()
            out = calls[e.key]()
            assert live_calls == (["dense"] if e.execution == "dense" else []), e.key
            assert out.shape == (cfg.batch, cfg.num_classes)


@pytest.mark.parametrize("arch", ["tsn_resnet50", "af_resnet18"])
def test_a_wrong_compiled_call_is_refused(monkeypatch, arch):
    """Control for the test above: a compiled call 1% off the eager one it wraps is not timed."""
    monkeypatch.setattr(build, "_compile", lambda model, runner: lambda x: model(x) * 1.01)
    cfg = _tiny_cfg()
    fields = dict(rt=0.25, rule="budget", execution="sparse") if arch != "tsn_resnet50" else {}
    entry = Entry(arch, cfg.frames, runner="compiled", **fields)
    wrapped = "torchvision" if arch == "tsn_resnet50" else "eager sparse"
    with pytest.raises(build.BenchCheckError, match=f"compiled output differs from the {wrapped} output"):
        _build(cfg, [entry])


@pytest.mark.parametrize("arch", ["tsn_mobilenetv3", "tsm_mobilenetv3"])
@pytest.mark.parametrize("fault", ["fold", "shift"])
def test_a_wrong_mobilenet_baseline_is_refused(monkeypatch, arch, fault):
    """Each MobileNetV3 baseline has its own check: a BN-folded copy 5% off in one conv, or an
    engine plan that forgets TSM's shift, is caught before timing."""
    cfg = _tiny_cfg(size=64)
    if fault == "fold":
        fold = baselines.fold_batchnorm_

        def wrong_fold(model):
            fold(model)
            with torch.no_grad():
                model.base.features[0][0].weight.mul_(1.05)
            return model

        monkeypatch.setattr(baselines, "fold_batchnorm_", wrong_fold)
        entry, message = Entry(arch, cfg.frames, layout="channels_last"), "BN-folded output differs from the unfolded"
    else:
        adapter = baselines.BlockAdapter.__init__

        def no_shift(self, block, num_segments):
            adapter(self, block, num_segments)
            self.shift_div = 0

        monkeypatch.setattr(baselines.BlockAdapter, "__init__", no_shift)
        entry, message = Entry(arch, cfg.frames, execution="planned"), "planned \\(engine\\) output differs"
    if fault == "shift" and arch == "tsn_mobilenetv3":  # TSN has no shift to forget: the check passes
        _build(cfg, [entry])
        return
    with pytest.raises(build.BenchCheckError, match=message):
        _build(cfg, [entry])


def test_compiled_calls_are_built_in_the_runs_dtype_only(monkeypatch):
    """A bfloat16 run compiles once per compiled entry, in bfloat16 (a float32 compilation would
    cost as much and never be timed), and checks it against the float32 reference."""
    dtypes = []

    def compile_eager(model, runner):
        dtypes.append(model.dtype if hasattr(model, "dtype") else next(model.parameters()).dtype)
        return torch.compile(model, backend="eager", fullgraph=True)

    monkeypatch.setattr(build, "_compile", compile_eager)
    cfg = _tiny_cfg(dtype=torch.bfloat16)
    entry = Entry("af_resnet18", cfg.frames, 0.25, rule="budget", execution="sparse")
    torch._dynamo.reset()
    calls, facts, _ = _build(cfg, [entry, entry.twin(runner="compiled")])
    assert dtypes == [torch.bfloat16]
    compiled = facts[entry.twin(runner="compiled").key]
    assert compiled["check_rel_err"] is None and 0 < compiled["check_rel_err_lowp"] < 0.1
    assert facts[entry.key]["check_rel_err"] < build.REL_TOL[torch.float32]


def test_time_budget_leaves_out_compilations_that_do_not_fit(monkeypatch):
    """With a deadline, a compiled entry is built only while COMPILE_SECONDS fit in what is left
    (less the share kept for timing); once one does not fit, no later one does. Eager entries
    are always built."""
    monkeypatch.setattr(build, "COMPILE_SECONDS", {"cpu": 100.0, "cuda": 100.0})
    cfg = _tiny_cfg(time_budget=200.0)  # 20 s kept back for timing
    af = Entry("af_resnet50", 8, 0.25, rule="budget", execution="sparse")
    members = [af, af.twin(runner="compiled"), af.twin(runner="graphed"),
               af.twin(runner="compiled", execution="folded")]
    now = 1000.0
    monkeypatch.setattr(build.time, "monotonic", lambda: now)
    skipped = {}
    assert build._within_budget(members, cfg, now + 200.0, skipped) == members[:3]
    assert skipped == {members[3].key: "time budget: 80 s left of --time-budget 200, a compilation takes about 100 s"}
    assert build._within_budget(members, cfg, now + 100.0, {}) == [af, members[2]]
    assert build._within_budget(members, cfg, None, {}) == members


def test_onnxruntime_rows_run_the_export_and_are_checked():
    """TSN and a budgeted AF model exported to ONNX run in onnxruntime, checked against the eager
    outputs (torchvision; the frozen sparse model) before timing."""
    cfg = _tiny_cfg(batch=1)
    entries = [Entry("tsn_resnet50", cfg.frames, runner="onnxruntime"),
               Entry("af_resnet18", cfg.frames, 0.25, rule="budget", execution="sparse", runner="onnxruntime")]
    for e in entries:
        assert build.unavailable(e, cfg) is None
    calls, facts, _ = _build(cfg, entries)
    for e in entries:
        assert facts[e.key]["check_rel_err"] < build.REL_TOL[torch.float32]
        out = calls[e.key]()
        assert isinstance(out, torch.Tensor) and out.shape == (1, cfg.num_classes)


@pytest.mark.parametrize("arch", ["tsn_resnet50", "af_resnet18"])
def test_a_wrong_onnxruntime_call_is_refused(monkeypatch, arch):
    """Control for the test above (without exporting): an onnxruntime call 1% off is not timed."""
    def wrong_call(export, x, threads):
        return lambda: reference(x) * 1.01

    monkeypatch.setattr(build, "_exported_call", wrong_call)
    cfg = _tiny_cfg()
    fields = dict(rt=0.25, rule="budget", execution="sparse") if arch != "tsn_resnet50" else {}
    entry = Entry(arch, cfg.frames, runner="onnxruntime", **fields)
    real_group = build._baseline_group if entry.is_baseline else build._af_group
    reference = None

    def group(*args):
        nonlocal reference
        built = real_group(*args)
        reference = built.reference
        return built

    monkeypatch.setattr(build, "_baseline_group" if entry.is_baseline else "_af_group", group)
    wrapped = "torchvision" if entry.is_baseline else "eager sparse"
    with pytest.raises(build.BenchCheckError, match=f"onnxruntime output differs from the {wrapped} output"):
        _build(cfg, [entry])


def test_onnxruntime_rows_say_why_they_cannot_run(monkeypatch):
    import importlib.util

    cfg = _tiny_cfg()
    entry = Entry("af_resnet50", 8, 0.25, rule="budget", execution="sparse", runner="onnxruntime")
    assert build.unavailable(entry, dataclasses.replace(cfg, dtype=torch.bfloat16)) == (
        "onnxruntime rows run in float32 only, this run is bfloat16")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else find_spec(name))
    assert build.unavailable(entry, cfg) == (
        "onnxruntime rows: onnxruntime not installed (pip install onnxruntime onnxscript)")
    assert build.unavailable(entry.twin(runner="eager"), cfg) is None


@needs_cuda
def test_graphed_baselines_and_budget_on_cuda():
    """On a GPU: torchvision and planned TSN of both families replayed as one CUDA graph each, and
    the budgeted AF model graphed, each checked against its reference."""
    cfg = _tiny_cfg(device="cuda", size=64)
    entries = [Entry(arch, cfg.frames, execution=x, runner="graphed")
               for arch in ("tsn_resnet50", "tsn_mobilenetv3") for x in ("torchvision", "planned")]
    af = Entry("af_resnet18", cfg.frames, 0.25, rule="budget", execution="sparse")
    entries += [af, af.twin(runner="graphed")]
    calls, facts, _ = _build(cfg, entries)
    for e in entries:
        assert facts[e.key]["check_rel_err"] < build.REL_TOL[torch.float32]
    with torch.inference_mode():
        assert calls[entries[0].key]().shape == (cfg.batch, cfg.num_classes)


def test_spatial_entries_check_sparse_against_dense():
    cfg = _tiny_cfg(size=64)
    entries = [Entry("af_resnet18", cfg.frames, 0.5, execution=x, rs=0.25) for x in ("sparse", "dense")]
    if build.unavailable(entries[0], cfg) is not None:
        pytest.fail(build.unavailable(entries[0], cfg))
    calls, facts, _ = _build(cfg, entries)
    sparse = facts[entries[0].key]
    assert sparse["check_rel_err"] < build.REL_TOL[torch.float32]
    assert (sparse["rt_realized"], sparse["rs_realized"]) == (0.5, 0.25)


def test_missing_tile_ops_are_reported(monkeypatch):
    import afnet_kernels

    cfg = _tiny_cfg()
    spatial = Entry("af_resnet50", 8, 0.5, rs=0.5)
    assert build.unavailable(Entry("af_resnet50", 8, 0.5), cfg) is None
    monkeypatch.delattr(afnet_kernels, "gather_tiles")
    assert build.unavailable(spatial, cfg) == (
        "the spatial sparse path needs the tile ops, missing from this build: afnet_kernels.gather_tiles")
    assert build.unavailable(spatial, dataclasses.replace(cfg, backend="torch")) is None


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
        (["--batch-sweep", "1,0"], "argument --batch-sweep: must be >= 1, got 0"),
        (["--batch-sweep", "1,x"], "argument --batch-sweep: expected an integer, got 'x'"),
        (["--batch-sweep", "8,8"], "argument --batch-sweep: batch sizes must differ, got '8,8'"),
        (["--batch-sweep", ","], "argument --batch-sweep: expected comma-separated batch sizes"),
        (["--batch-sweep", "--batch", "2"], "argument --batch-sweep: not allowed with --batch"),
        (["--only", "rt0.3"], "argument --only: 'rt0.3' matches no entry"),
        (["--no-compile", "--profile", "compiled"], "argument --profile: 'compiled' matches no entry"),
        (["--time-budget", "0"], "argument --time-budget: must be in (0, inf], got 0"),
        (["--time-budget", "soon"], "argument --time-budget: expected a number, got 'soon'"),
        (["--no-onnxruntime", "--only", "onnxruntime"], "argument --only: 'onnxruntime' matches no entry"),
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
    from afnet.cli.bench import resolve_bench_config
    from afnet.cli import build_parser

    parser = build_parser()
    cpu = resolve_bench_config(parser.parse_args(["bench", "--device", "cpu"]), parser)
    assert (cpu.batch, cpu.dtype, cpu.channels_last, cpu.repeats) == (1, torch.float32, True, 7)
    assert (cpu.compile, cpu.batch_sweep) == (True, ())
    args = parser.parse_args(["bench", "--device", "cpu", "--batch-sweep", "--no-compile"])
    sweep = resolve_bench_config(args, parser)
    assert (sweep.batch_sweep, sweep.compile) == ((1, 8, 32), False)
    assert resolve_bench_config(parser.parse_args(["bench", "--batch-sweep", "2,4"]), parser).batch_sweep == (2, 4)
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
    assert "--channels-last" in out.stdout and "--quick" in out.stdout and "--batch-sweep" in out.stdout


# ---------------------------------------------------------------- end to end

TINY = ["bench", "--quick", "--device", "cpu", "--size", "64", "--frames", "2", "--threads", "1",
        "--repeats", "1", "--warmup", "0", "--no-compile", "-q"]


def test_quick_run_writes_outputs(tmp_path, capsys):
    """--quick holds both families, each ratio against its own family's fastest TSN; with a time
    budget too short to compile, the compiled TSN is left out with the reason recorded."""
    torch.set_num_threads(2)
    argv = [a for a in TINY if a != "--no-compile"] + ["--time-budget", "1"]
    try:
        assert main(argv + ["--out", str(tmp_path), "--profile", "rt0.25-sparse"]) == 0
        assert torch.get_num_threads() == 2  # the run's thread count (1) does not leak out
    finally:
        torch.set_num_threads(1)
    stdout = capsys.readouterr().out
    assert "afnet bench: device=cpu" in stdout and "torch=" in stdout and "threads=1" in stdout
    assert "batch=1" in stdout and "dtype=float32" in stdout and "time_budget=1s" in stdout
    assert "AF-ResNet50" in stdout and "TSN-ResNet50" in stdout
    assert "AF-MobileNetV3" in stdout and "TSN-MobileNetV3" in stdout and "TSM-MobileNetV3" in stdout
    assert "x TSN of the resnet50 rows is against the fastest TSN-ResNet50" in stdout
    assert "x TSN of the mobilenetv3 rows is against the fastest TSN-MobileNetV3" in stdout
    data = json.loads((tmp_path / "results.json").read_text())
    assert {"device", "cpu", "torch", "dtype", "threads"} <= set(data["env"])
    assert data["skipped"] == [{"key": "tsn_resnet50-t2-torchvision-compiled-channels_last",
                                "reason": "time budget: 0 s left of --time-budget 1, a compilation takes about 90 s"}]
    rows = data["results"]
    keys = [r["key"] for r in rows]
    assert keys == [e.key for e in bench_config.default_suite(BenchConfig(quick=True, frames=2, channels_last=True,
                                                                         compile=False))]
    by_key = {r["key"]: r for r in rows}
    for family, tsn_arch in (("resnet50", "tsn_resnet50"), ("mobilenetv3", "tsn_mobilenetv3")):
        tsn = min((r for r in rows if r["arch"] == tsn_arch), key=lambda r: r["latency_ms"])
        members = [r for r in rows if r["family"] == family]
        assert data["reference"]["1"][family]["tsn"] == tsn["key"]
        assert len(members) > 4 and all(r["tsn_reference"] == tsn["key"] for r in members)
        for r in members:
            assert set(report.CSV_FIELDS) <= set(r)
            assert r["latency_ms"] > 0 and r["gflops"] > 0
            assert r["speedup_vs_tsn"] == pytest.approx(tsn["latency_ms"] / r["latency_ms"])
            assert r["efficiency"] == pytest.approx(r["speedup_vs_tsn"] * r["gflops"] / tsn["gflops"])
    sparse = by_key["af_resnet50-t2-rt0.25-sparse"]
    assert sparse["rt_realized"] == pytest.approx(0.5)  # round(0.25 * 2) = 0 -> at least one frame of 2
    assert sparse["check_rel_err"] < build.REL_TOL[torch.float32] and sparse["gflops"] < by_key[
        "tsn_resnet50-t2-planned-channels_last"]["gflops"]
    assert by_key["af_resnet50-t2-rt0.25-folded"]["check_rel_err"] < build.REL_TOL[torch.float32]
    for key in ("tsn_resnet50-t2-planned-channels_last", "tsn_mobilenetv3-t3-torchvision-channels_last",
                "tsm_mobilenetv3-t3-planned-channels_last", "af_mobilenetv3-tsm-t3-rt0.4-sparse"):
        assert by_key[key]["check_rel_err"] < build.REL_TOL[torch.float32]
    with (tmp_path / "results.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == len(rows)
    _assert_png(tmp_path / "latency_vs_gflops.png")
    assert "Self CPU" in (tmp_path / "profile_af_resnet50-t2-rt0.25-sparse.txt").read_text()


def test_check_failure_is_loud(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(build, "rel_err", lambda a, b: float("nan"))
    assert main(TINY + ["--out", str(tmp_path), "--no-plot"]) == 1
    err = capsys.readouterr().err
    assert "correctness check failed" in err and "BN-folded output differs from the unfolded one" in err
    assert not (tmp_path / "results.json").exists()


def test_low_precision_run_checks_against_float32(tmp_path, capsys):
    """bfloat16 (the GPU default) is checked against float32 before timing, on the CPU too."""
    assert main(TINY + ["--dtype", "bf16", "--no-plot", "--out", str(tmp_path), "--only", "budget"]) == 0
    assert "dtype=bfloat16" in capsys.readouterr().out
    rows = json.loads((tmp_path / "results.json").read_text())["results"]
    assert all(r["latency_ms"] > 0 for r in rows) and rows[-1]["key"] == "af_resnet50-t2-budget0.25-sparse"
    assert rows[-1]["check_rel_err"] < build.REL_TOL[torch.float32]  # the float32 check
    # The bfloat16 check really ran in bfloat16: an error far above float32's, yet it passed.
    assert build.REL_TOL[torch.float32] / 100 < rows[-1]["check_rel_err_lowp"] < 0.1


def test_batch_sweep_run(tmp_path, capsys):
    argv = ["bench", "--device", "cpu", "--size", "64", "--frames", "2", "--threads", "1", "--repeats", "1",
            "--warmup", "0", "--no-compile", "-q", "--batch-sweep", "1,2", "--only", "af_resnet50",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "batch sweep 1,2" in stdout and "batch 1:" in stdout and "batch 2:" in stdout
    data = json.loads((tmp_path / "results.json").read_text())
    rows = data["results"]
    assert sorted({r["batch"] for r in rows}) == [1, 2] and set(data["reference"]) == {"1", "2"}
    assert {r["key"] for r in rows} == {
        "tsn_resnet50-t2-torchvision-channels_last", "tsn_resnet50-t2-planned-contiguous",
        "tsn_resnet50-t2-planned-channels_last", "af_resnet50-t2-rt0.25-sparse", "af_resnet50-t2-budget0.25-sparse"}
    for r in rows:
        assert r["ms_per_video"] == pytest.approx(r["latency_ms"] / r["batch"])
    _assert_png(tmp_path / "batch_sweep.png")
