"""Run the latency benchmark: build the models, check them, time them, report.

Steps, in order: fix threads and seeds; build every model with calibrated
random weights (BN statistics from one training-mode pass, so activations have
realistic scale and every branch contributes); check that sparse equals dense
on the same masks and that BN folding left the baselines unchanged (fail
loudly otherwise); count FLOPs; warm up; time round-robin; write outputs.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import torch
from torch import nn

from afnet import baselines
from afnet.bench import report
from afnet.bench.config import BenchConfig, Entry, default_suite
from afnet.bench.timing import device_sync, time_round_robin

# ‖a − b‖ / ‖b‖ allowed between two computations of the same function.
REL_TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}


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
    backends = afnet_kernels.backends() if hasattr(afnet_kernels, "backends") else "reference only"
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
        "afnet_kernels": backends,
        "load_avg_start": os.getloadavg(),
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
    return env


def _is_norm(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


@torch.no_grad()
def calibrate_(model: nn.Module, video: torch.Tensor, generator: torch.Generator) -> None:
    """Random BN affine parameters, then BN statistics of one training-mode pass on ``video``.

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


def _prepare(model: nn.Module, cfg: BenchConfig, video: torch.Tensor, generator: torch.Generator) -> nn.Module:
    model = model.to(cfg.device)
    calibrate_(model, video.float(), generator)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(dtype=cfg.dtype, memory_format=fmt)
    if hasattr(model, "memory_format"):  # the AF sparse path picks its own layout
        model.memory_format = fmt
    if hasattr(model, "backend"):
        model.backend = cfg.backend
    return model


def _check(name: str, err: float, tol: float, what: str) -> None:
    if not err <= tol:  # also catches NaN
        raise BenchCheckError(f"{name}: {what}: relative error {err:.3g} > {tol:g}; refusing to time it")


def _af_gflops(model: nn.Module, video: torch.Tensor) -> float:
    import afnet

    counted = afnet.count_flops(model, video[:1])
    if isinstance(counted, Mapping):
        counted = counted["paper"]
    return float(getattr(counted, "paper", counted))


def build_and_check(
    cfg: BenchConfig, entries: Sequence[Entry], videos: Mapping[int, torch.Tensor], log: Callable[[str], None]
) -> Tuple[Dict[str, nn.Module], Dict[str, Dict[str, Any]]]:
    """Models per ``model_key`` and per-entry facts (GFLOPs, RT realized, check error).

    Raises :class:`BenchCheckError` if sparse and dense disagree on the same
    masks, or a baseline changed when its BN was folded.
    """
    import afnet

    tol = REL_TOL[cfg.dtype]
    generator = torch.Generator().manual_seed(cfg.seed)
    models: Dict[str, nn.Module] = {}
    facts: Dict[str, Dict[str, Any]] = {}
    with_dense = {e.model_key for e in entries if e.execution == "dense"}
    for e in entries:
        if e.model_key in models:
            continue
        video = videos[e.frames]
        torch.manual_seed(cfg.seed)
        log(f"building {e.model_key}")
        if e.is_baseline:
            model = baselines.create_baseline(e.arch, num_classes=cfg.num_classes, num_segments=e.frames)
            model = _prepare(model, cfg, video, generator)
            err = None
            if cfg.fold_baselines:
                with torch.inference_mode():
                    before = model(video)
                    baselines.fold_batchnorm_(model)
                    err = rel_err(model(video), before)
                _check(e.key, err, tol, "BN-folded output differs from the unfolded one")
            facts[e.key] = {"gflops": baselines.count_gflops(model, video), "rt_realized": None,
                            "check_rel_err": err}
        else:
            model = afnet.create_model(e.arch, num_classes=cfg.num_classes, num_segments=e.frames,
                                       shift=e.shift, policy="uniform", rt=e.rt)
            model = _prepare(model, cfg, video, generator)
            with torch.inference_mode():
                model.execution = "dense"
                dense, dense_masks = model(video, return_masks=True)
                model.execution = "sparse"
                sparse, masks = model(video, return_masks=True)
            if len(masks) != len(dense_masks) or any(not torch.equal(a, b) for a, b in zip(masks, dense_masks)):
                raise BenchCheckError(f"{e.model_key}: sparse and dense executions chose different masks")
            err = rel_err(sparse, dense)
            _check(e.model_key, err, tol, "sparse output differs from dense on the same masks")
            realized = torch.stack([m.float().mean() for m in masks]).mean().item() if masks else 1.0
            common = {"gflops": _af_gflops(model, video), "rt_realized": realized}
            facts[e.twin("sparse").key] = dict(common, check_rel_err=err)
            if e.model_key in with_dense:
                facts[e.twin("dense").key] = dict(common, check_rel_err=err)
        models[e.model_key] = model
    return models, facts


def make_runner(model: nn.Module, video: torch.Tensor, execution: str | None) -> Callable[[], object]:
    """A call of ``model`` on ``video`` in the given execution (None: a baseline)."""
    if execution is None:
        return lambda: model(video)

    def run() -> object:
        model.execution = execution
        return model(video)

    return run


def make_videos(cfg: BenchConfig, frames: Sequence[int]) -> Dict[int, torch.Tensor]:
    """One seeded random clip batch ``[batch, T, 3, size, size]`` per frame count."""
    generator = torch.Generator().manual_seed(cfg.seed)
    return {
        t: torch.randn(cfg.batch, t, 3, cfg.size, cfg.size, generator=generator).to(cfg.device, cfg.dtype)
        for t in sorted(set(frames))
    }


def run_bench(cfg: BenchConfig) -> List[report.Row]:
    """Run the whole benchmark for ``cfg``; print the table, write the outputs, return the rows."""
    def log(msg: str) -> None:
        if cfg.verbose:
            print(f"[bench] {msg}", file=sys.stderr, flush=True)

    torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(True)  # random weights must not hit the slow denormal path
    device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    env = environment(cfg)
    print(f"afnet bench: device={env['device']} cpu={env['cpu']!r} torch={env['torch']} dtype={env['dtype']} "
          f"threads={env['threads']} batch={cfg.batch} channels_last={cfg.channels_last} size={cfg.size} "
          f"load={env['load_avg_start'][0]:.2f}", flush=True)

    entries = default_suite(cfg)
    videos = make_videos(cfg, [e.frames for e in entries])
    models, facts = build_and_check(cfg, entries, videos, log)
    runners = {e.key: make_runner(models[e.model_key], videos[e.frames], e.execution) for e in entries}
    names = {e.key: f"{e.label} {e.frames}f" + (f" RT{e.rt:g} {e.execution}" if e.execution else "") for e in entries}

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
    config = {k: (str(v) if isinstance(v, (Path, torch.dtype)) else v) for k, v in dataclasses.asdict(cfg).items()}
    report.write_json(cfg.out / "results.json", env, config, rows)
    report.write_csv(cfg.out / "results.csv", rows)
    if cfg.plot:
        title = f"{env['device']} ({env['cpu']}), {env['dtype']}, {env['threads']} threads, batch {cfg.batch}"
        report.write_plot(cfg.out / "latency_vs_gflops.png", rows, title)
    log(f"wrote {cfg.out}/results.json, results.csv" + (", latency_vs_gflops.png" if cfg.plot else ""))
    return rows
