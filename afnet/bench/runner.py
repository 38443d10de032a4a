"""Run the latency benchmark: build the models, check them, time them, report.

Steps, in order: fix threads and seeds; build every model with calibrated
random weights (BN statistics from one training-mode pass, so activations have
realistic scale and every branch contributes); check that sparse equals dense
on the same masks and that BN folding left the baselines unchanged (fail
loudly otherwise); count FLOPs; warm up; time round-robin; write outputs.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import os
import platform
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from afnet import baselines
from afnet.bench import report
from afnet.bench.config import BenchConfig, Entry, default_suite
from afnet.bench.timing import device_sync, time_round_robin

# ‖a − b‖ / ‖b‖ allowed between two full-precision computations of the same function (BN
# folding and summation order differ; a wrong frame or fill is off by far more). Lower
# precisions are held to twice the error of the reference computation in that precision.
REL_TOL = {torch.float64: 1e-10, torch.float32: 5e-4}


class BenchCheckError(RuntimeError):
    """A correctness check before timing failed: the timings would be meaningless."""


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖a − b‖ / ‖b‖`` in float64 (inf if ``b`` is zero but ``a`` is not; NaN stays NaN)."""
    a, b = a.double(), b.double()
    den = b.norm().item()
    num = (a - b).norm().item()
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(cfg: BenchConfig) -> Dict[str, Any]:
    """Where and how the run was measured."""
    import afnet_kernels

    device = torch.device(cfg.device)
    env = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "dtype": str(cfg.dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "channels_last": cfg.channels_last,
        "batch": cfg.batch,
        "size": cfg.size,
        "afnet_kernels": afnet_kernels.backends(),
        "load_avg_start": os.getloadavg(),
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
    return env


def _is_norm(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


@torch.no_grad()
def calibrate_(model: nn.Module, video: torch.Tensor, generator: torch.Generator) -> None:
    """Random BN affine parameters, then BN statistics of one training-mode pass on ``video``; leaves eval.

    The released initialisation zeroes ``bn3`` in many blocks, which would make
    those branches vanish and the sparse/dense check blind to them.
    """
    norms = [m for m in model.modules() if _is_norm(m)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
        m.momentum = 1.0
    model.train()
    model(video)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def _place(model: nn.Module, cfg: BenchConfig) -> nn.Module:
    """Device, layout and frame-op backend of ``cfg``; dtype stays float until the checks ran."""
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device=cfg.device, memory_format=fmt)
    if hasattr(model, "memory_format"):  # the AF sparse path picks its own layout
        model.memory_format = fmt
    if hasattr(model, "backend"):
        model.backend = cfg.backend
    return model


def _check(name: str, err: float, tol: float, what: str) -> None:
    if not err <= tol:  # also catches NaN
        raise BenchCheckError(f"{name}: {what}: relative error {err:.3g} > {tol:.3g}; refusing to time it")


def _af_gflops(model: nn.Module, video: torch.Tensor) -> Dict[str, float]:
    """GFLOPs per video: paper convention, and the MACs the sparse path executes."""
    import afnet

    counted = afnet.count_flops(model, video)
    return {"gflops": counted.paper, "gflops_executed": counted.executed}


def _both_executions(name: str, model: nn.Module, video: torch.Tensor):
    """``(dense logits, sparse logits, masks)``; raises if the two executions chose different masks."""
    with torch.inference_mode():
        model.execution = "dense"
        dense, dense_masks = model(video, return_masks=True)
        model.execution = "sparse"
        sparse, masks = model(video, return_masks=True)
    if len(masks) != len(dense_masks) or any(not torch.equal(a, b) for a, b in zip(masks, dense_masks)):
        raise BenchCheckError(f"{name}: sparse and dense executions chose different masks")
    return dense, sparse, masks


def _check_low_precision(name: str, low: torch.Tensor, ref_low: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """``low`` may be off ``ref`` (full precision) by at most twice what ``ref_low`` is, plus fp32 noise."""
    tol = 2 * rel_err(ref_low, ref) + REL_TOL[torch.float32]
    _check(name, rel_err(low, ref), tol, f"{what} (in {low.dtype}, against float32)")


def _build_baseline(e: Entry, cfg: BenchConfig, video: torch.Tensor, generator: torch.Generator):
    """A calibrated (and BN-folded) baseline; checks folding in full precision, then in ``cfg.dtype``."""
    model = baselines.create_baseline(e.arch, num_classes=cfg.num_classes, num_segments=e.frames)
    model = _place(model, cfg).to(video.dtype)
    calibrate_(model, video, generator)
    err = None
    if cfg.fold_baselines:
        unfolded = copy.deepcopy(model) if cfg.dtype != video.dtype else None
        with torch.inference_mode():
            before = model(video)
            baselines.fold_batchnorm_(model)
            err = rel_err(model(video), before)
            _check(e.key, err, REL_TOL[video.dtype], "BN-folded output differs from the unfolded one")
            if unfolded is not None:
                low = video.to(cfg.dtype)
                folded_low, unfolded_low = model.to(cfg.dtype)(low), unfolded.to(cfg.dtype)(low)
                _check_low_precision(e.key, folded_low, unfolded_low, before, "BN-folded output")
    gflops = baselines.count_gflops(model, video.to(cfg.dtype))
    facts = {"gflops": gflops, "gflops_executed": gflops, "rt_realized": None, "check_rel_err": err}
    return model.to(cfg.dtype), facts


def _build_af(e: Entry, cfg: BenchConfig, video: torch.Tensor, generator: torch.Generator):
    """A calibrated AF model; checks sparse == dense on the same masks in full precision, then in ``cfg.dtype``."""
    import afnet

    model = afnet.create_model(e.arch, num_classes=cfg.num_classes, num_segments=e.frames,
                               shift=e.shift, policy="uniform", rt=e.rt)
    model = _place(model, cfg).to(video.dtype)
    calibrate_(model, video, generator)
    dense, sparse, masks = _both_executions(e.model_key, model, video)
    err = rel_err(sparse, dense)
    _check(e.model_key, err, REL_TOL[video.dtype], "sparse output differs from dense on the same masks")
    if cfg.dtype != video.dtype:
        model = model.to(cfg.dtype)
        dense_low, sparse_low, _ = _both_executions(e.model_key, model, video.to(cfg.dtype))
        _check_low_precision(e.model_key, sparse_low, dense_low, dense, "sparse output differs from dense")
    realized = torch.stack([m.float().mean() for m in masks]).mean().item() if masks else 1.0
    facts = dict(_af_gflops(model, video.to(cfg.dtype)), rt_realized=realized, check_rel_err=err)
    return model, facts


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    """cuDNN runs float32 convolutions in TF32 by default (~1e-3 error): not a float32 reference."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def build_and_check(
    cfg: BenchConfig, entries: Sequence[Entry], videos: Mapping[int, torch.Tensor], log: Callable[[str], None]
) -> Tuple[Dict[str, nn.Module], Dict[str, Dict[str, Any]]]:
    """Models per ``model_key`` (in ``cfg.dtype``) and per-entry facts (GFLOPs, RT realized, check error).

    ``videos`` are in full precision (float64 when ``cfg.dtype`` is, else
    float32): every check runs there first, and again in ``cfg.dtype`` when
    that is lower, against the full-precision result. Raises
    :class:`BenchCheckError` if sparse and dense disagree on the same masks,
    or a baseline changed when its BN was folded.
    """
    generator = torch.Generator().manual_seed(cfg.seed)
    models: Dict[str, nn.Module] = {}
    facts: Dict[str, Dict[str, Any]] = {}
    for e in entries:
        if e.model_key in models:
            continue
        torch.manual_seed(cfg.seed)
        log(f"building and checking {e.model_key}")
        build = _build_baseline if e.is_baseline else _build_af
        with _no_tf32():
            models[e.model_key], fact = build(e, cfg, videos[e.frames], generator)
        if e.is_baseline:
            facts[e.key] = fact
        else:
            facts[e.twin("sparse").key] = fact
            facts[e.twin("dense").key] = dict(fact, gflops_executed=None)
    return models, facts


def make_runner(model: nn.Module, video: torch.Tensor, execution: Optional[str]) -> Callable[[], object]:
    """A call of ``model`` on ``video`` in the given execution (None: a baseline)."""
    if execution is None:
        return lambda: model(video)

    def run() -> object:
        model.execution = execution
        return model(video)

    return run


def make_videos(cfg: BenchConfig, frames: Sequence[int]) -> Dict[int, torch.Tensor]:
    """One seeded random clip batch ``[batch, T, 3, size, size]`` per frame count, in full precision."""
    generator = torch.Generator().manual_seed(cfg.seed)
    full = torch.float64 if cfg.dtype == torch.float64 else torch.float32
    return {
        t: torch.randn(cfg.batch, t, 3, cfg.size, cfg.size, generator=generator, dtype=full).to(cfg.device)
        for t in sorted(set(frames))
    }


def profile_runner(run: Callable[[], object], device: torch.device, calls: int = 3, rows: int = 25) -> str:
    """``torch.profiler`` table of the top ops (by self time) over ``calls`` calls of ``run``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync = device_sync(device)
    with torch.inference_mode():
        run()
        sync()
        with profile(activities=activities) as prof:
            for _ in range(calls):
                run()
            sync()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=rows)


def run_bench(cfg: BenchConfig) -> List[report.Row]:
    """Run the whole benchmark for ``cfg``; print the table, write the outputs, return the rows."""
    def log(msg: str) -> None:
        if cfg.verbose:
            print(f"[bench] {msg}", file=sys.stderr, flush=True)

    with _process_settings(cfg):
        return _run(cfg, log)


@contextlib.contextmanager
def _process_settings(cfg: BenchConfig) -> Iterator[None]:
    """Fixed thread count, flushed denormals (random weights must not hit the slow path) and
    cuDNN autotuning for the run; the previous settings come back afterwards."""
    threads, cudnn_benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(True)
    torch.backends.cudnn.benchmark = torch.device(cfg.device).type == "cuda"
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)  # PyTorch's default; it has no getter
        torch.backends.cudnn.benchmark = cudnn_benchmark


def _run(cfg: BenchConfig, log: Callable[[str], None]) -> List[report.Row]:
    device = torch.device(cfg.device)
    env = environment(cfg)
    print(f"afnet bench: device={env['device']} cpu={env['cpu']!r} torch={env['torch']} dtype={env['dtype']} "
          f"threads={env['threads']} batch={cfg.batch} channels_last={cfg.channels_last} size={cfg.size} "
          f"load={env['load_avg_start'][0]:.2f}", flush=True)

    entries = default_suite(cfg)
    videos = make_videos(cfg, [e.frames for e in entries])
    models, facts = build_and_check(cfg, entries, videos, log)
    inputs = {t: v.to(cfg.dtype) for t, v in videos.items()}
    runners = {e.key: make_runner(models[e.model_key], inputs[e.frames], e.execution) for e in entries}
    names = {e.key: f"{e.label} {e.frames}f" + (f" RT{e.rt:g} {e.execution}" if e.execution else "")
             for e in entries}

    def progress(r: int, n: int, key: str, seconds: float) -> None:
        log(f"{r}/{n} {names[key]}: {seconds * 1e3:.1f} ms")

    log(f"timing {len(entries)} entries: warmup {cfg.warmup}, {cfg.repeats} interleaved repeats x {cfg.number}")
    with torch.inference_mode():
        stats = time_round_robin(runners, repeats=cfg.repeats, warmup=cfg.warmup, number=cfg.number,
                                 sync=device_sync(device), progress=progress)
    env["load_avg_end"] = os.getloadavg()
    rows = report.build_rows(entries, stats, facts, cfg.batch)

    print(report.format_table(rows))
    print(f"GFLOPs: multiply-accumulates per video (paper convention); latency per call of {cfg.batch} video(s); "
          f"eff = speedup vs TSN / FLOP ratio vs TSN. load avg {env['load_avg_start'][0]:.2f} -> "
          f"{env['load_avg_end'][0]:.2f}")
    cfg.out.mkdir(parents=True, exist_ok=True)
    config = dataclasses.asdict(cfg)
    config.update(dtype=env["dtype"], out=str(cfg.out))
    report.write_json(cfg.out / "results.json", env, config, rows)
    report.write_csv(cfg.out / "results.csv", rows)
    if cfg.plot:
        title = f"{env['device']} ({env['cpu']}), {env['dtype']}, {env['threads']} threads, batch {cfg.batch}"
        report.write_plot(cfg.out / "latency_vs_gflops.png", rows, title)
    log(f"wrote {cfg.out}/results.json, results.csv" + (", latency_vs_gflops.png" if cfg.plot else ""))
    for e in entries:
        if any(s in e.key for s in cfg.profile):
            log(f"profiling {names[e.key]}")
            table = profile_runner(runners[e.key], device)
            (cfg.out / f"profile_{e.key}.txt").write_text(table + "\n")
            print(f"\nprofile of {names[e.key]} (3 calls):\n{table}")
    return rows
