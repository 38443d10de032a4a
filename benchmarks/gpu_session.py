"""A GPU session that fits: build, test and benchmark in at most 8 minutes, rehearsed on the CPU.

One command (``bash benchmarks/gpu_session.sh``, which runs this file) runs every step in order of
information per second, each under its own timeout, inside one overall budget:

  1. versions        nvidia-smi, torch, CUDA, Triton, afnet_kernels.backends()
  2. build           pip install -e . with the CUDA kernels (16 jobs), then the backends must be usable
  3. kernel-tests    CUDA_LAUNCH_BLOCKING=1 pytest -m cuda --maxfail on the tile, Triton and op tests
                     (one device-side assert poisons a process, so the first one must be exact)
  4. triton          benchmarks/triton_check.py (Triton blend, one inductor compile) and the ops'
                     torch.compile tests: can step 8 work, and what does a compilation cost?
  5. engine-tests    pytest -m cuda on the engine, graph, export and model tests (no compilation)
  6. bench-b8, -b1   afnet bench, key rows WITHOUT compilation at 8 and 1 videos: the strongest TSN
                     eager and graphed, AF-ResNet50 RT 0.25 sparse, the budget eager and graphed, the
                     threshold rule, AF-MobileNetV3 against its own TSN, spatial RS 0.25
  7. ops             benchmarks/ops.py in bfloat16, channels_last
  8. bench-compiled  the compiled rows (inductor, reduce-overhead) at 8 videos, with the seconds left
                     passed down as --time-budget (a compilation costs 30-90 s per model and dtype)

A step gets at most its own timeout, and never the time that the later steps need at least: a
slow build or test step cannot starve the key benchmark rows. A step that times out is
interrupted (SIGINT, so pytest still prints what failed), then killed. A failing step never stops
the next. Nothing is compiled before step 4.

Every step writes its results as it ends, under ``benchmarks/results/<card>-<dtype>-<date>/``
(date UTC): ``<step>.log`` and its outputs, and ``session.json`` (each step's command, status, rc,
seconds, log, files) and ``summary.md`` (the steps, and the figures against the targets) are
rewritten after every step, so a session killed half-way keeps everything before.

``--dry-run`` runs the same steps CPU-sized (tiny frames, sizes and repeats, ``-m "not cuda"`` test
selections, no nvidia-smi, nothing compiled) into a temporary folder, never into
benchmarks/results; ``tests/test_gpu_session.py`` runs it in CI.

Usage: python benchmarks/gpu_session.py [--dry-run] [--budget SECONDS] [--out DIR] [--fail-step NAME]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BUDGET_S = 480  # 8 minutes on the lent GPU, the build included
DRY_BUDGET_S = 420
# After a timeout's SIGINT, pytest prints its summary; then the step's process group is killed.
INTERRUPT_GRACE_S = 10
# Tile ops first: their CUDA kernels never ran on a GPU, the frame ops' passed on an H100 before.
KERNEL_TESTS = ("tests/test_tile_ops.py", "tests/test_triton_blend.py", "tests/test_ops.py")
COMPILE_TESTS = ("tests/test_tile_ops.py", "tests/test_ops.py")  # the ops under torch.compile
ENGINE_TESTS = ("tests/test_engine.py", "tests/test_export.py", "tests/test_inference_form.py", "tests/test_spatial.py",
                "tests/test_budget.py", "tests/test_mobilenetv3.py", "tests/test_bench.py")
# `afnet bench --only` substrings of the key rows (step 6): AF-ResNet50 RT 0.25 (sparse, its dense
# and folded twins), the budget (eager, graphed), the threshold rule (CUDA only), AF-MobileNetV3
# (its family's TSN and TSM come with it) and spatial RS 0.25 at RT 1. Each family's baselines are
# always kept, the graphed TSN among them.
KEY_ROWS = ("rt0.25-sparse", "budget0.25", "exact0.25", "af_mobilenetv3", "rt1-rs0.25")
COMPILED_ROWS = ("budget0.25", "exact0.25", "af_mobilenetv3")
CPU_ONLY_MISSING = ("exact0.25",)  # the CPU suite has no threshold-rule rows (a GPU-graph question)
# The dry run rehearses step 8's time budget, and compiles nothing: a CPU compilation takes minutes.
DRY_COMPILE_BUDGET_S = 30

# The targets (on an H100/H200, bf16, 8 videos x 8 frames, against the strongest TSN of the same run).
TARGETS = (
    ("budget graphed, RT 0.25, x TSN", "speedup_vs_tsn", 1.5,
     dict(arch="af_resnet50", rule="budget", rt_target=0.25, runner="graphed", rs_target=None)),
    ("threshold rule, RT 0.25, x TSN", "speedup_vs_tsn", 1.2,
     dict(arch="af_resnet50", rule="exact", rt_target=0.25, rs_target=None)),
    ("AF-MobileNetV3 efficiency vs TSN-MobileNetV3", "efficiency", 0.6,
     dict(arch="af_mobilenetv3", execution="sparse")),
)
TARGET_CARDS = ("H100", "H200")


@dataclass
class Step:
    """One step: its commands run in order (the first failure ends the step).

    ``timeout_s``: the most it may take; ``keep_s``: the least it needs to be worth starting, which
    every earlier step leaves to it (unless ``optional``, as the compiled rows are).
    ``outputs``: files or folders (relative to the session folder) it writes besides its log.
    """

    name: str
    title: str
    timeout_s: float
    keep_s: float
    commands: List[List[str]]
    outputs: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    optional: bool = False


@dataclass
class Record:
    """What ``session.json`` says about one step."""

    name: str
    title: str
    commands: List[str]
    timeout_s: float
    status: str = "pending"  # pending, running, ok, failed, timeout, skipped
    rc: Optional[int] = None
    seconds: Optional[float] = None
    log: Optional[str] = None
    outputs: List[str] = field(default_factory=list)
    note: Optional[str] = None


def slug(text: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown"


def gpu_name() -> str:
    """The first GPU's name from nvidia-smi, or ``cuda-unknown`` when it cannot say."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "cuda-unknown"
    return out.strip().splitlines()[0] if out.strip() else "cuda-unknown"


def session_folder(parent: Path, card: str, dtype: str, date: str) -> Path:
    """``parent/<card>-<dtype>-<date>``, with ``-2``, ``-3``... when a session of the day exists."""
    base = parent / f"{slug(card)}-{dtype}-{date}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


# Prints versions and backends, and writes them to argv[1] as JSON (step 1).
VERSIONS_CODE = """
import json, platform, sys, torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    info["device"] = torch.cuda.get_device_name(0)
    info["capability"] = list(torch.cuda.get_device_capability(0))
try:
    import triton
    info["triton"] = triton.__version__
except ImportError as exc:
    info["triton"] = f"not importable: {exc}"
import afnet_kernels
info["afnet_kernels"] = afnet_kernels.backends()
print(json.dumps(info, indent=1))
open(sys.argv[1], "w").write(json.dumps(info, indent=1) + "\\n")
"""
# Fails unless the kernels of the device were built and load (step 2).
BACKENDS_CODE = """
import json, sys, afnet_kernels
backends = afnet_kernels.backends()
print(json.dumps(backends, indent=1))
sys.exit(0 if backends[sys.argv[1]]["usable"] else 1)
"""


def plan(dry_run: bool, out: Path, python: str, compile_budget_s: float) -> List[Step]:
    """The session's steps, GPU-sized or (``dry_run``) CPU-sized; ``compile_budget_s`` is step 8's
    ``--time-budget`` (the driver recomputes it when step 8 starts)."""
    py = [python]
    pytest = py + ["-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider"]
    if dry_run:
        device, dtype_args = "cpu", ["--size", "64", "--frames", "2", "--threads", "1", "--repeats", "2",
                                     "--warmup", "0"]
        batches = (2, 1)
        key_rows = [r for r in KEY_ROWS if r not in CPU_ONLY_MISSING]
        compiled_rows = [r for r in COMPILED_ROWS if r not in CPU_ONLY_MISSING]
    else:
        device, dtype_args = "cuda", ["--dtype", "bfloat16", "--frames", "8"]
        batches = (8, 1)
        key_rows, compiled_rows = list(KEY_ROWS), list(COMPILED_ROWS)
    # Progress goes to the log: a step cut by its timeout still shows how far it got.
    bench = py + ["-m", "afnet", "bench", "--device", device, "--channels-last", "--no-onnxruntime", *dtype_args]
    steps = [Step("versions", "versions: nvidia-smi, torch, CUDA, Triton, afnet_kernels.backends()", 30, 10,
                  ([] if dry_run else [["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                        "--format=csv"]])
                  + [py + ["-c", VERSIONS_CODE, str(out / "versions.json")]], ["versions.json"])]
    if dry_run:  # the kernels were built before: the build guard checks they are here and current
        build = [py + ["-c", BACKENDS_CODE, "cpu"], pytest + ["tests/test_build.py"]]
        env: Dict[str, str] = {}
    else:
        build = [py + ["-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", "."],
                 py + ["-c", BACKENDS_CODE, "cuda"]]
        env = {"MAX_JOBS": "16", "FORCE_CUDA": "1",
               "TORCH_CUDA_ARCH_LIST": os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0")}
        # The lent machine's default /opt/gcc g++ builds an extension in which a thrown
        # TORCH_CHECK segfaults; the system compiler does not.
        if Path("/usr/bin/g++").exists():
            env.update(CC="/usr/bin/gcc", CXX="/usr/bin/g++")
    steps.append(Step("build", "build: pip install -e . (CUDA kernels, 16 jobs), backends usable", 180, 60, build,
                      env=env))
    marker = ["-m", "not cuda and not slow"] if dry_run else ["-m", "cuda"]
    # The dry run picks a few quick cases of each file; on the GPU every CUDA case runs (until the timeout).
    kernel_pick = ["-k", "test_select_frames or test_bad_input or test_rejects_mismatched_theta"] if dry_run \
        else ["-k", "not torch_compile"]
    steps.append(Step("kernel-tests", "kernel tests: CUDA_LAUNCH_BLOCKING=1 pytest -m cuda --maxfail=5", 60, 30,
                      [pytest + marker + ["--maxfail=5", *kernel_pick, *KERNEL_TESTS,
                                          "--junitxml", str(out / "kernel-tests.xml")]],
                      ["kernel-tests.xml"], env={"CUDA_LAUNCH_BLOCKING": "1"}))
    triton = [py + ["benchmarks/triton_check.py", "--device", device, "--out", str(out / "triton.json")]
              + (["--no-inductor"] if dry_run else [])]
    if not dry_run:  # the ops under torch.compile (inductor writes Triton): what the compiled rows run
        triton.append(pytest + ["-m", "cuda", "--maxfail=3", "-k", "torch_compile", *COMPILE_TESTS])
    steps.append(Step("triton", "Triton on the device: the Triton blend, inductor's first compile", 45, 20, triton,
                      ["triton.json"]))
    engine_pick = ["-k", "cuda_graph_needs_cuda or freeze_takes or exactly_k_frames or entry_names"] if dry_run \
        else ["-k", "not reduce_overhead"]  # compiling waits for step 8
    steps.append(Step("engine-tests", "engine, graph and export tests: pytest -m cuda", 45, 30,
                      [pytest + marker + ["--maxfail=5", *engine_pick, *ENGINE_TESTS,
                                          "--junitxml", str(out / "engine-tests.xml")]],
                      ["engine-tests.xml"]))
    for batch, timeout, keep in zip(batches, (120, 75), (75, 45)):  # the targets' batch first
        name = f"bench-b{batch}"
        steps.append(Step(name, f"afnet bench, key rows without compilation, {batch} videos", timeout, keep,
                          [bench + ["--no-compile", "--batch", str(batch), f"--only={','.join(key_rows)}",
                                    "--out", str(out / name)]], [name]))
    ops = py + ["benchmarks/ops.py", "--channels-last", "--out", str(out / "ops")]
    # On the GPU two selection ratios of three: ops.py writes its files at the end, so it must finish.
    ops += ["--device", "cpu", "--quick", "--sizes", "16x14", "--min-run-time", "0.01"] if dry_run \
        else ["--device", "cuda", "--dtype", "bfloat16", "--ratios", "0.25", "1.0"]
    steps.append(Step("ops", "op benchmark, channels_last", 40, 20, [ops], ["ops"]))
    steps.append(Step("bench-compiled", "afnet bench, compiled rows while time is left, "
                      f"{batches[0]} videos", 600, 60,
                      [bench + ["--batch", str(batches[0]), f"--only={','.join(compiled_rows)}",
                                "--time-budget", f"{compile_budget_s:.0f}", "--out", str(out / "bench-compiled")]],
                      ["bench-compiled"], optional=True))
    return steps


def _kill(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def timeout_for(steps: Sequence[Step], i: int, left: float) -> Optional[float]:
    """The timeout of ``steps[i]`` with ``left`` seconds of the budget: its own, less what the
    later non-optional steps need at least (their ``keep_s``); None (skip it) if that is below
    its own ``keep_s``."""
    later = sum(s.keep_s for s in steps[i + 1:] if not s.optional)
    timeout = min(steps[i].timeout_s, left - later)
    return timeout if timeout >= steps[i].keep_s else None


def run_step(step: Step, out: Path, timeout_s: float, record: Record) -> None:
    """Run ``step``'s commands with their output in ``out/<name>.log``, within ``timeout_s`` in
    all; fill ``record``. On timeout the process group gets SIGINT (pytest then reports the
    failures so far), and SIGKILL ``INTERRUPT_GRACE_S`` later."""
    log_path = out / f"{step.name}.log"
    record.log = log_path.name
    env = dict(os.environ, PYTHONUNBUFFERED="1", **step.env)
    start = time.monotonic()
    deadline = start + timeout_s
    record.status, record.rc = "ok", 0
    with log_path.open("w") as log:
        for command in step.commands:
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            try:
                proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            except OSError as exc:  # e.g. no nvidia-smi
                log.write(f"could not start: {exc}\n")
                record.status, record.rc = "failed", 127
                break
            try:
                rc = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _kill(proc, signal.SIGINT)
                try:
                    proc.wait(timeout=INTERRUPT_GRACE_S)
                except subprocess.TimeoutExpired:
                    _kill(proc, signal.SIGKILL)
                    proc.wait()
                log.write(f"\n*** timeout after {timeout_s:.0f} s: interrupted\n")
                record.status, record.rc = "timeout", None
                break
            if rc != 0:
                record.status, record.rc = "failed", rc
                break
    record.seconds = round(time.monotonic() - start, 1)
    record.outputs = [name for name in step.outputs if (out / name).exists()]


def _write_json(path: Path, data: Any) -> None:
    """Write, then rename: a session killed mid-write leaves the previous file whole."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _load_rows(folder: Path) -> List[Dict[str, Any]]:
    try:
        data = json.loads((folder / "results.json").read_text())
    except (OSError, ValueError):
        return []
    env, config = data.get("env", {}), data.get("config", {})
    # The run's main frame count (--frames): AF-MobileNetV3 and its TSN run on 1.5x as many.
    return [dict(r, device=env.get("device"), dtype=env.get("dtype"), run_frames=config.get("frames"))
            for r in data.get("results", [])]


def _matches(row: Dict[str, Any], fields: Dict[str, Any]) -> bool:
    return all(row.get(k) == v for k, v in fields.items())


def target_lines(out: Path) -> List[str]:
    """The summary's tables: each target's rows at 8 videos (bench-b8, bench-compiled) with the
    verdict on the best, and the same rows at 1 video (bench-b1), reported without a target."""
    lines = ["| target | run | row | value | against | verdict |", "|---|---|---|---|---|---|"]
    batch1 = ["| figure | row | value | against |", "|---|---|---|---|"]
    runs = {name: _load_rows(out / name) for name in ("bench-b8", "bench-compiled", "bench-b1")}
    for title, column, goal, fields in TARGETS:
        found = [(run, r) for run in ("bench-b8", "bench-compiled") for r in runs[run]
                 if _matches(r, fields) and r.get(column) is not None]
        for run, r in found:
            lines.append(f"| {title} ≥ {goal:g} | {run} | {r['model']} {r['variant']} (batch {r['batch']}, "
                         f"T {r['frames']}) | {r[column]:.2f} | {r['tsn_reference']} | |")
        if not found:
            lines.append(f"| {title} ≥ {goal:g} | – | – | – | – | not measured |")
            continue
        run, best = max(found, key=lambda item: item[1][column])
        official = (any(card in (best.get("device") or "") for card in TARGET_CARDS) and best.get("dtype") == "bfloat16"
                    and best.get("batch") == 8 and best.get("run_frames") == 8)
        verdict = ("met" if best[column] >= goal else "NOT met") if official else \
            "no verdict: not H100/H200, bf16, 8 videos x 8 frames"
        lines.append(f"| **{title} ≥ {goal:g}** | {run} | best: {best['model']} {best['variant']} | "
                     f"**{best[column]:.2f}** | {best['tsn_reference']} | **{verdict}** |")
        for r in runs["bench-b1"]:
            if _matches(r, fields) and r.get(column) is not None:
                batch1.append(f"| {title} | {r['model']} {r['variant']} | {r[column]:.2f} | {r['tsn_reference']} |")
    return lines + ["", "Batch 1 (no target):", ""] + batch1


def write_summary(out: Path, meta: Dict[str, Any], records: Sequence[Record]) -> None:
    """``summary.md``: the steps so far, and the figures against the targets."""
    dry = "DRY RUN (CPU-sized; figures not comparable with the targets) " if meta["dry_run"] else ""
    lines = [f"# GPU session {dry}{meta['card']}, {meta['dtype']}, {meta['date']}", "",
             f"Budget {meta['budget_s']:.0f} s; {meta['elapsed_s']:.0f} s used. Results: `{out}`.", "",
             "| # | step | status | rc | seconds | timeout | log |", "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(records, 1):
        rc = "" if r.rc is None else str(r.rc)
        seconds = "" if r.seconds is None else f"{r.seconds:.0f}"
        status = r.status + (f" ({r.note})" if r.note else "")
        lines.append(f"| {i} | {r.name} | {status} | {rc} | {seconds} | {r.timeout_s:.0f} | {r.log or ''} |")
    lines += ["", "## Targets", "",
              "On an H100/H200, bf16, 8 videos x 8 frames, against the strongest TSN of the same run "
              "(its key in *against*): budget graphed ≥ 1.5x at RT 0.25; threshold rule ≥ 1.2x; AF-MobileNetV3 "
              "efficiency (speedup ÷ FLOP ratio) against TSN-MobileNetV3 ≥ 0.6. The verdict is on the best row.", ""]
    lines += target_lines(out)
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="the same steps CPU-sized, into a temporary folder (CI runs this)")
    parser.add_argument("--budget", type=float, default=None,
                        help=f"seconds for the whole session (default {BUDGET_S}; dry run {DRY_BUDGET_S})")
    parser.add_argument("--out", type=Path, default=None,
                        help="parent folder of the session folder (default benchmarks/results; dry run: a new "
                        "temporary folder)")
    parser.add_argument("--fail-step", default=None, metavar="NAME",
                        help="replace this step's commands by one that fails (tests that later steps still run)")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs the steps")
    args = parser.parse_args(argv)
    budget = args.budget if args.budget is not None else (DRY_BUDGET_S if args.dry_run else BUDGET_S)
    if budget <= 0:
        parser.error(f"argument --budget: must be > 0, got {budget:g}")
    names = [s.name for s in plan(args.dry_run, Path(), args.python, 0)]
    if args.fail_step is not None and args.fail_step not in names:
        parser.error(f"argument --fail-step: must be one of {', '.join(names)}, got {args.fail_step!r}")
    if args.dry_run:
        parent = args.out or Path(tempfile.mkdtemp(prefix="afnet-gpu-session-dry-"))
        if parent.resolve().is_relative_to(RESULTS.resolve()):
            parser.error(f"argument --out: a dry run never writes into {RESULTS}, got {parent}")
        card, dtype = f"cpu-{cpu_model()}", "fp32"
    else:
        parent = args.out or RESULTS
        card, dtype = gpu_name(), "bf16"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    out = session_folder(parent, card, dtype, date)
    out.mkdir(parents=True)
    start = time.monotonic()
    steps = plan(args.dry_run, out, args.python, 0)
    records = [Record(s.name, s.title, [" ".join(c) for c in s.commands], s.timeout_s) for s in steps]
    meta = {"card": card, "dtype": dtype, "date": date, "dry_run": args.dry_run, "budget_s": budget,
            "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "out": str(out), "elapsed_s": 0.0}

    def save() -> None:
        meta["elapsed_s"] = round(time.monotonic() - start, 1)
        meta["updated_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        _write_json(out / "session.json", dict(meta, steps=[asdict(r) for r in records]))
        write_summary(out, meta, records)

    print(f"GPU session{' (dry run)' if args.dry_run else ''}: {card}, budget {budget:.0f} s -> {out}", flush=True)
    save()
    for i, (step, record) in enumerate(zip(steps, records)):
        left = budget - (time.monotonic() - start)
        timeout = timeout_for(steps, i, left)
        if timeout is None:
            later = sum(s.keep_s for s in steps[i + 1:] if not s.optional)
            record.status, record.note = "skipped", f"{max(left, 0):.0f} s left, {later:.0f} s kept for later steps"
            print(f"=== {step.name}: skipped ({record.note})", flush=True)
            save()
            continue
        if step.name == "bench-compiled":  # planned again with its --time-budget: what is left, less a margin
            budget_s = min(timeout - INTERRUPT_GRACE_S - 5, DRY_COMPILE_BUDGET_S if args.dry_run else timeout)
            step = plan(args.dry_run, out, args.python, max(budget_s, 1))[i]
            record.commands = [" ".join(c) for c in step.commands]
        if step.name == args.fail_step:
            step.commands = [[args.python, "-c", "import sys; print('failure injected by --fail-step'); sys.exit(3)"]]
            record.commands, record.note = [" ".join(c) for c in step.commands], "failure injected by --fail-step"
        record.status, record.timeout_s = "running", round(timeout, 1)
        save()
        print(f"=== {step.name} ({time.strftime('%H:%M:%S', time.gmtime())} UTC, timeout {timeout:.0f} s)", flush=True)
        run_step(step, out, timeout, record)
        print(f"=== {step.name}: {record.status} rc={record.rc} in {record.seconds:.0f} s", flush=True)
        save()
    failed = [r.name for r in records if r.status in ("failed", "timeout")]
    skipped = [r.name for r in records if r.status == "skipped"]
    print(f"session done in {time.monotonic() - start:.0f} s; failed or timed out: {', '.join(failed) or 'none'}; "
          f"skipped for time: {', '.join(skipped) or 'none'}\nsummary: {out / 'summary.md'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
