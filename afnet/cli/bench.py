"""``afnet bench``: its command line, defaults and validation.

Defaults depend on the device: on the CPU 1 video, float32; on CUDA 8 videos,
bfloat16. channels_last is on by default everywhere (fastest for every model
here, baselines included); ``--no-channels-last`` turns it off.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
from pathlib import Path
from typing import Sequence, Tuple

import torch

from afnet.cli.args import DOWNSAMPLE, add_device, check_device, check_output, float_in, frame_size, int_at_least
from afnet.tools.devices import available_cpus

from afnet.bench.config import DEFAULT_BATCH_SWEEP

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
    "float64": torch.float64, "fp64": torch.float64,
}
QUICK_REPEATS, QUICK_WARMUP = 3, 1
CPU_REPEATS, CPU_WARMUP = 7, 1
CUDA_REPEATS, CUDA_WARMUP = 30, 5
MAX_SIZE = 1024


def _size(text: str) -> int:
    value = frame_size(text)
    if value > MAX_SIZE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SIZE}, got {value}")
    return value


def add_parser(sub: "argparse._SubParsersAction") -> None:
    """Register ``afnet bench`` on the ``afnet`` command line."""
    b = sub.add_parser(
        "bench",
        help="latency of AF-ResNet50 / AF-MobileNetV3 (sparse, dense, folded, budgeted, compiled, graphed, "
        "onnxruntime) against TSN and TSM of the same backbone at their best",
        description="Measure real latency: AF models at fixed ratios (uniform policy) in sparse, dense and folded "
        "execution, with a frame budget (eager, compiled, CUDA-graphed; onnxruntime on the CPU), the threshold "
        "rule on CUDA, and spatial cells, against TSN and TSM of the same backbone (ResNet-50 for AF-ResNet50, "
        "MobileNetV3-Large for AF-MobileNetV3) at their best (torchvision, afnet's engine plan in both layouts, "
        "torch.compile, CUDA graphs), on the same input; every ratio is against the fastest TSN of the family. "
        "Writes a table to stdout and results.json, results.csv and latency_vs_gflops.png under --out.",
    )
    add_device(b, default="auto", help="auto (CUDA if visible), cpu, cuda or cuda:N")
    b.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="default float32 on the CPU, bfloat16 on CUDA")
    b.add_argument("--batch", type=int_at_least(1), default=None,
                   help="videos per call (default 1 on the CPU, 8 on CUDA)")
    b.add_argument("--frames", type=int_at_least(1), default=8,
                   help="frames of the main comparison (default 8); the 'more is less' entries use 1.5x")
    b.add_argument("--threads", type=int_at_least(1), default=None,
                   help=f"torch intra-op threads, at most the CPUs this process may use (default: all "
                   f"{available_cpus()})")
    b.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="run every model in channels_last (default on)")
    b.add_argument("--quick", action="store_true",
                   help="a small subset with few repeats: TSN- and TSM-ResNet50 (every variant), AF-ResNet50 RT 0.25 "
                   "sparse/dense/folded and budget sparse; TSN- and TSM-MobileNetV3 (eager and planned), "
                   "AF-MobileNetV3 RT 0.4 sparse/dense")
    b.add_argument("--out", type=Path, default=Path("bench_out"), help="output folder (default bench_out)")
    b.add_argument("--repeats", type=int_at_least(1), default=None,
                   help=f"timed rounds (default {CPU_REPEATS} on the CPU, {CUDA_REPEATS} on CUDA, "
                   f"{QUICK_REPEATS} with --quick)")
    b.add_argument("--warmup", type=int_at_least(0), default=None,
                   help=f"untimed calls per model first (default {CPU_WARMUP} CPU, {CUDA_WARMUP} CUDA)")
    b.add_argument("--number", type=int_at_least(1), default=1, help="calls averaged into one sample")
    b.add_argument("--size", type=_size, default=224,
                   help=f"frame height and width, a multiple of {DOWNSAMPLE} up to {MAX_SIZE} "
                   "(default 224; small for tests)")
    b.add_argument("--only", default="",
                   help="comma-separated substrings of entry keys to keep (baselines are always kept); each "
                   "must match an entry, e.g. 'rt0.25,mobilenet'")
    b.add_argument("--profile", default="",
                   help="comma-separated substrings of entry keys to profile after timing (torch.profiler "
                   "top ops, printed and written to profile_<key>.txt); each must match a timed entry, "
                   "e.g. 'rt0.25-sparse'")
    b.add_argument("--backend", choices=("kernels", "torch"), default="kernels",
                   help="frame ops of the AF models: compiled afnet_kernels or the pure-PyTorch reference")
    b.add_argument("--fold-baselines", action=argparse.BooleanOptionalAction, default=True,
                   help="fold BN into the baselines' convs, as the AF models do (default on)")
    b.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="include the torch.compile rows (TSN, budgeted AF models); --no-compile skips them, "
                   "which saves minutes of compilation on a small CPU (default on)")
    b.add_argument("--onnxruntime", action=argparse.BooleanOptionalAction, default=True,
                   help="include the onnxruntime rows on the CPU (TSN-ResNet50 and AF-ResNet50 budget RT 0.25 "
                   "exported to ONNX, float32; skipped with the reason when onnxruntime is missing; default on)")
    b.add_argument("--time-budget", type=float_in(0, float("inf")), default=None, metavar="SECONDS",
                   help="seconds the run may take: a compiled entry whose compilation (counted as "
                   "about a minute) no longer fits is not built, and the reason is recorded (default: no limit)")
    b.add_argument("--batch-sweep", type=_batch_sizes, nargs="?", const=DEFAULT_BATCH_SWEEP, default=(),
                   metavar="SIZES",
                   help="instead of the suite, time TSN (every variant), AF-ResNet50 RT 0.25 and AF-MobileNetV3 "
                   "(uniform sparse, budget sparse and, on CUDA, graphed) at each of these batch sizes "
                   f"(comma-separated; default {','.join(map(str, DEFAULT_BATCH_SWEEP))}); writes batch_sweep.png")
    b.add_argument("--num-classes", type=int_at_least(1), default=174, help="classes (default 174, SSv1)")
    b.add_argument("--seed", type=int, default=0, help="seed of weights and input")
    b.add_argument("--no-plot", dest="plot", action="store_false", help="skip the PNG")
    b.add_argument("-q", "--quiet", dest="verbose", action="store_false", help="no progress on stderr")
    b.set_defaults(run=run)


def _batch_sizes(text: str) -> Tuple[int, ...]:
    sizes = tuple(int_at_least(1)(s) for s in text.split(",") if s)
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected comma-separated batch sizes, e.g. 1,8,32, got {text!r}")
    if len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(f"batch sizes must differ, got {text!r}")
    return sizes


def _substrings(text: str) -> Tuple[str, ...]:
    return tuple(s for s in text.split(",") if s)


def resolve_bench_config(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """Fill the device-dependent defaults and validate every argument before any work starts
    (``parser.error`` naming the flag on a bad one)."""
    from afnet.bench.config import BenchConfig, default_suite

    device = check_device(parser, args.device)
    on_cuda = torch.device(device).type == "cuda"
    dtype = DTYPES[args.dtype] if args.dtype else (torch.bfloat16 if on_cuda else torch.float32)
    if dtype == torch.float16 and not on_cuda:
        parser.error("argument --dtype: float16 is only supported on CUDA; use float32 or bfloat16 on the CPU")
    cpus = available_cpus()
    if args.threads is not None and args.threads > cpus:
        parser.error(f"argument --threads: must be at most {cpus} (the CPUs this process may use), got {args.threads}")
    if args.batch_sweep and args.batch is not None:
        parser.error("argument --batch-sweep: not allowed with --batch (the sweep sets the batch sizes)")
    batch = args.batch or (8 if on_cuda else 1)
    _check_bn_batch(parser, min(args.batch_sweep or (batch,)), args.frames, args.size)
    quick = args.quick
    repeats = args.repeats or (QUICK_REPEATS if quick else CUDA_REPEATS if on_cuda else CPU_REPEATS)
    warmup = args.warmup if args.warmup is not None else (
        QUICK_WARMUP if quick else CUDA_WARMUP if on_cuda else CPU_WARMUP)
    cfg = BenchConfig(
        device=device, dtype=dtype, batch=batch, frames=args.frames,
        threads=args.threads or cpus, channels_last=args.channels_last, size=args.size,
        repeats=repeats, warmup=warmup, number=args.number, quick=quick, num_classes=args.num_classes,
        seed=args.seed, backend=args.backend, fold_baselines=args.fold_baselines, compile=args.compile,
        onnxruntime=args.onnxruntime, batch_sweep=args.batch_sweep, time_budget=args.time_budget,
        only=_substrings(args.only), profile=_substrings(args.profile), out=args.out, plot=args.plot,
        verbose=args.verbose,
    )
    _check_substrings(parser, "--only", cfg.only, [e.key for e in default_suite(dataclasses.replace(cfg, only=()))])
    _check_substrings(parser, "--profile", cfg.profile, [e.key for e in default_suite(cfg)])
    if cfg.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("argument --no-plot: matplotlib is not installed, so the PNG cannot be drawn; "
                     "pip install 'afnet[plot]', or pass --no-plot")
    check_output(parser, "--out", cfg.out)
    return cfg


def _check_bn_batch(parser: argparse.ArgumentParser, batch: int, frames: int, size: int) -> None:
    """The calibration pass sets BN statistics from one training-mode forward, and BN needs more
    than one value per channel: ``batch * frames`` frames of ``(size / 32)²`` pixels at the end."""
    values = batch * frames * (size // DOWNSAMPLE) ** 2
    if values < 2:
        parser.error(
            f"argument --frames: must be >= 2 with --batch {batch} and --size {size}: the models are calibrated "
            f"with one training-mode pass, whose BatchNorm needs more than one value per channel, and at size "
            f"{size} the last stage sees {size // DOWNSAMPLE}x{size // DOWNSAMPLE} maps of {batch * frames} frame(s) "
            f"(or raise --size or --batch)"
        )


def _check_substrings(parser: argparse.ArgumentParser, flag: str, wanted: Sequence[str], keys: Sequence[str]) -> None:
    unmatched = [s for s in wanted if not any(s in k for k in keys)]
    if unmatched:
        parser.error(f"argument {flag}: {', '.join(map(repr, unmatched))} matches no entry; the entries are: "
                     + ", ".join(keys))


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the benchmark for parsed ``args``; returns the exit status."""
    from afnet.bench.runner import BenchCheckError, run_bench

    cfg = resolve_bench_config(args, parser)
    try:
        run_bench(cfg)
    except BenchCheckError as exc:
        print(f"afnet bench: correctness check failed: {exc}", file=sys.stderr)
        return 1
    return 0
