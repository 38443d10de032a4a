"""Run the latency benchmark: build the models, check them, time them, report.

Steps, in order: fix threads, seeds and compiler settings; build every model with calibrated
random weights and check every call of it against its reference (``afnet.bench.build``; fail
loudly otherwise; under ``--time-budget`` leave out the compiled entries that no longer fit,
saying why); count FLOPs; warm up; time round-robin; write outputs. With a batch sweep,
the sweep subset goes through the same steps once per batch size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from afnet.bench import report
from afnet.bench.build import BenchCheckError, Call, build_and_check, unavailable
from afnet.bench.config import BenchConfig, Entry, default_suite
from afnet.bench.timing import device_sync, time_round_robin
from afnet.tools.allocator import malloc_tuned

__all__ = ["BenchCheckError", "environment", "make_videos", "profile_runner", "run_bench"]
# Compiled models in one run: each model, dtype and batch size is a specialisation of the same
# forward code, more than dynamo's default limit of 8; hitting the limit must fail, never fall
# back to eager silently (the "compiled" rows would then time eager code).
RECOMPILE_LIMIT = 64


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
        # Pinned glibc thresholds (the afnet command's default) keep freed activations for reuse;
        # without them each CPU forward faults in fresh pages (afnet.tools.allocator).
        "malloc_pinned": malloc_tuned(),
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
    return env


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
    """Run the whole benchmark for ``cfg``; print the table(s), write the outputs, return the rows."""
    def log(msg: str) -> None:
        if cfg.verbose:
            print(f"[bench] {msg}", file=sys.stderr, flush=True)

    deadline = None if cfg.time_budget is None else time.monotonic() + cfg.time_budget
    with _process_settings(cfg):
        return _run(cfg, log, deadline)


@contextlib.contextmanager
def _process_settings(cfg: BenchConfig) -> Iterator[None]:
    """For the run: the thread count; flushed denormals (random weights must not hit the slow
    path); cuDNN autotuning; on the CPU inductor's freezing (folds BN, prepacks the weights of
    compiled models); a raised recompile limit that fails when hit. The previous settings come
    back afterwards."""
    import torch._dynamo.config
    import torch._inductor.config

    threads, cudnn_benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(True)
    torch.backends.cudnn.benchmark = cfg.on_cuda
    try:
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT, fail_on_recompile_limit_hit=True), \
                torch._inductor.config.patch(freezing=not cfg.on_cuda):
            yield
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)  # PyTorch's default; it has no getter
        torch.backends.cudnn.benchmark = cudnn_benchmark


def _runnable(
    cfg: BenchConfig, entries: Sequence[Entry], log: Callable[[str], None]
) -> Tuple[List[Entry], Dict[str, str]]:
    """The entries this run can run, and the reason for each one it cannot (each reason logged once)."""
    kept, skipped = [], {}
    for e in entries:
        reason = unavailable(e, cfg)
        if reason is None:
            kept.append(e)
            continue
        if reason not in skipped.values():
            log(f"SKIPPED {e.key}: {reason}")
        skipped[e.key] = reason
    return kept, skipped


@dataclasses.dataclass
class Measured:
    """One timed suite at one batch size."""

    entries: List[Entry]
    calls: Dict[str, Call]
    rows: List[report.Row]
    skipped: Dict[str, str]


def _measure(cfg: BenchConfig, log: Callable[[str], None], deadline: Optional[float]) -> Measured:
    """Build, check and time ``cfg``'s entries at ``cfg.batch`` (compiled ones while ``deadline`` allows)."""
    torch._dynamo.reset()  # a fresh compile cache per measurement: the recompile limit counts this run only
    entries, skipped = _runnable(cfg, default_suite(cfg), log)
    videos = make_videos(cfg, [e.frames for e in entries])
    calls, facts, late = build_and_check(cfg, entries, videos, log, deadline)
    for key, reason in late.items():
        log(f"SKIPPED {key}: {reason}")
    skipped.update(late)
    entries = [e for e in entries if e.key in calls]
    names = {e.key: f"{e.label} {e.frames}f {e.variant}" + (f" RT{e.rt:g}" if e.rt is not None else "")
             + (f" RS{e.rs:g}" if e.rs is not None else "") for e in entries}

    def progress(r: int, n: int, key: str, seconds: float) -> None:
        log(f"{r}/{n} {names[key]}: {seconds * 1e3:.1f} ms")

    log(f"timing {len(entries)} entries at batch {cfg.batch}: warmup {cfg.warmup}, {cfg.repeats} interleaved "
        f"repeats x {cfg.number}")
    with torch.inference_mode():
        stats = time_round_robin(calls, repeats=cfg.repeats, warmup=cfg.warmup, number=cfg.number,
                                 sync=device_sync(torch.device(cfg.device)), progress=progress)
    return Measured(entries, calls, report.build_rows(entries, stats, facts, cfg.batch), skipped)


def _header(cfg: BenchConfig, env: Dict[str, Any]) -> str:
    batch = f"batch sweep {','.join(map(str, cfg.batch_sweep))}" if cfg.batch_sweep else f"batch={cfg.batch}"
    return (f"afnet bench: device={env['device']} cpu={env['cpu']!r} torch={env['torch']} dtype={env['dtype']} "
            f"threads={env['threads']} {batch} channels_last={cfg.channels_last} size={cfg.size} "
            f"compile={cfg.compile} malloc_pinned={env['malloc_pinned']} load={env['load_avg_start'][0]:.2f}"
            + (f" time_budget={cfg.time_budget:g}s" if cfg.time_budget is not None else ""))


def _run(cfg: BenchConfig, log: Callable[[str], None], deadline: Optional[float]) -> List[report.Row]:
    env = environment(cfg)
    print(_header(cfg, env), flush=True)
    cfg.out.mkdir(parents=True, exist_ok=True)
    config = dataclasses.asdict(cfg)
    config.update(dtype=env["dtype"], out=str(cfg.out))
    title = f"{env['device']} ({env['cpu']}), {env['dtype']}, {env['threads']} threads"
    if cfg.batch_sweep:
        return _run_sweep(cfg, env, config, title, log, deadline)

    measured = _measure(cfg, log, deadline)
    rows = measured.rows
    env["load_avg_end"] = os.getloadavg()
    print(report.format_table(rows))
    print(_legend(cfg, env, measured.skipped, rows))
    report.write_json(cfg.out / "results.json", env, config, rows, measured.skipped)
    report.write_csv(cfg.out / "results.csv", rows)
    if cfg.plot:
        report.write_plot(cfg.out / "latency_vs_gflops.png", rows, f"{title}, batch {cfg.batch}")
    log(f"wrote {cfg.out}/results.json, results.csv" + (", latency_vs_gflops.png" if cfg.plot else ""))
    for e in measured.entries:
        if any(s in e.key for s in cfg.profile):
            log(f"profiling {e.key}")
            table = profile_runner(measured.calls[e.key], torch.device(cfg.device))
            (cfg.out / f"profile_{e.key}.txt").write_text(table + "\n")
            print(f"\nprofile of {e.key} (3 calls):\n{table}")
    return rows


def _legend(cfg: BenchConfig, env: Dict[str, Any], skipped: Dict[str, str], rows: Sequence[report.Row]) -> str:
    lines = [
        f"GFLOPs: multiply-accumulates per video (paper convention); latency per call of {cfg.batch} video(s); "
        f"eff = speedup vs TSN / FLOP ratio vs TSN. load avg {env['load_avg_start'][0]:.2f} -> "
        f"{env['load_avg_end'][0]:.2f}",
        report.references_line(rows),
    ]
    if skipped:
        reasons = sorted(set(skipped.values()))
        lines.append(f"not run ({len(skipped)} entries): " + "; ".join(reasons))
    return "\n".join(lines)


def _run_sweep(cfg: BenchConfig, env: Dict[str, Any], config: Dict[str, Any], title: str,
               log: Callable[[str], None], deadline: Optional[float]) -> List[report.Row]:
    """The sweep subset at every batch size of ``cfg.batch_sweep``, each built, checked and timed
    on its own (compiled and graphed calls are specialised to their shapes)."""
    rows: List[report.Row] = []
    skipped: Dict[str, str] = {}
    for batch in cfg.batch_sweep:
        measured = _measure(dataclasses.replace(cfg, batch=batch), log, deadline)
        env["load_avg_end"] = os.getloadavg()
        print(f"\nbatch {batch}:\n{report.format_table(measured.rows)}")
        print(_legend(dataclasses.replace(cfg, batch=batch), env, measured.skipped, measured.rows))
        rows += measured.rows
        skipped.update(measured.skipped)
        del measured  # frees this batch's models, graphs and compiled code before the next one
        gc.collect()
        if cfg.on_cuda:
            torch.cuda.empty_cache()
    report.write_json(cfg.out / "results.json", env, config, rows, skipped)
    report.write_csv(cfg.out / "results.csv", rows)
    if cfg.plot:
        report.write_sweep_plot(cfg.out / "batch_sweep.png", rows, title)
    log(f"wrote {cfg.out}/results.json, results.csv" + (", batch_sweep.png" if cfg.plot else ""))
    return rows
