"""``afnet bench``: its command line, defaults and validation.

Defaults depend on the device: on the CPU 1 video, float32; on CUDA 8 videos,
bfloat16. channels_last is on by default everywhere (fastest for every model
here, baselines included); ``--no-channels-last`` turns it off.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Tuple

import torch

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
    "float64": torch.float64, "fp64": torch.float64,
}
QUICK_REPEATS, QUICK_WARMUP = 3, 1
CPU_REPEATS, CPU_WARMUP = 11, 1
CUDA_REPEATS, CUDA_WARMUP = 30, 5


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int>={low}"
    return parse


def _size(text: str) -> int:
    value = _int_at_least(32)(text)
    if value % 32:
        raise argparse.ArgumentTypeError(f"must be a multiple of 32 (the networks downsample 32x), got {value}")
    return value


def _device(text: str) -> str:
    if text == "auto":
        return text
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def add_parser(sub: "argparse._SubParsersAction") -> None:
    """Register ``afnet bench`` on the ``afnet`` command line."""
    b = sub.add_parser(
        "bench",
        help="latency of AF-ResNet50 / AF-MobileNetV3 (sparse and dense) against ResNet-50 TSN and TSM",
        description="Measure real latency: AF models at fixed ratios (uniform policy) in sparse and dense "
        "execution against torchvision ResNet-50 TSN and TSM, on the same input. Writes a table to stdout "
        "and results.json, results.csv and latency_vs_gflops.png under --out.",
    )
    b.add_argument("--device", type=_device, default="auto", help="auto (CUDA if visible), cpu, cuda or cuda:N")
    b.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="default float32 on the CPU, bfloat16 on CUDA")
    b.add_argument("--batch", type=_int_at_least(1), default=None,
                   help="videos per call (default 1 on the CPU, 8 on CUDA)")
    b.add_argument("--frames", type=_int_at_least(1), default=8,
                   help="frames of the main comparison (default 8); the 'more is less' entries use 1.5x")
    b.add_argument("--threads", type=_int_at_least(1), default=None,
                   help="torch intra-op threads (default: the CPUs this process may use)")
    b.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="run every model in channels_last (default on)")
    b.add_argument("--quick", action="store_true",
                   help="a small subset (TSN, TSM, AF-ResNet50 RT 0.25 sparse/dense) with few repeats")
    b.add_argument("--out", type=Path, default=Path("bench_out"), help="output folder (default bench_out)")
    b.add_argument("--repeats", type=_int_at_least(1), default=None,
                   help=f"timed rounds (default {CPU_REPEATS} on the CPU, {CUDA_REPEATS} on CUDA, "
                   f"{QUICK_REPEATS} with --quick)")
    b.add_argument("--warmup", type=_int_at_least(0), default=None,
                   help=f"untimed calls per model first (default {CPU_WARMUP} CPU, {CUDA_WARMUP} CUDA)")
    b.add_argument("--number", type=_int_at_least(1), default=1, help="calls averaged into one sample")
    b.add_argument("--size", type=_size, default=224, help="frame height and width (default 224; small for tests)")
    b.add_argument("--only", default="",
                   help="comma-separated substrings of entry keys to keep (baselines are always kept), "
                   "e.g. 'rt0.25,mobilenet'")
    b.add_argument("--profile", default="",
                   help="comma-separated substrings of entry keys to profile after timing (torch.profiler "
                   "top ops, printed and written to profile_<key>.txt), e.g. 'rt0.25-sparse'")
    b.add_argument("--backend", choices=("kernels", "torch"), default="kernels",
                   help="frame ops of the AF models: compiled afnet_kernels or the pure-PyTorch reference")
    b.add_argument("--fold-baselines", action=argparse.BooleanOptionalAction, default=True,
                   help="fold BN into the baselines' convs, as the AF models do (default on)")
    b.add_argument("--num-classes", type=_int_at_least(1), default=174, help="classes (default 174, SSv1)")
    b.add_argument("--seed", type=int, default=0, help="seed of weights and input")
    b.add_argument("--no-plot", dest="plot", action="store_false", help="skip the PNG")
    b.add_argument("-q", "--quiet", dest="verbose", action="store_false", help="no progress on stderr")
    b.set_defaults(run=run)


def _substrings(text: str) -> Tuple[str, ...]:
    return tuple(s for s in text.split(",") if s)


def resolve_bench_config(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """Fill the device-dependent defaults and validate combinations (``parser.error`` on bad ones)."""
    from afnet.bench.config import BenchConfig

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda and not torch.cuda.is_available():
        parser.error(f"argument --device: {device!r} requested but no CUDA GPU is visible")
    if on_cuda and torch.device(device).index is not None and torch.device(device).index >= torch.cuda.device_count():
        parser.error(f"argument --device: {device!r} requested but only {torch.cuda.device_count()} GPU(s) visible")
    dtype = DTYPES[args.dtype] if args.dtype else (torch.bfloat16 if on_cuda else torch.float32)
    if dtype == torch.float16 and not on_cuda:
        parser.error("argument --dtype: float16 is only supported on CUDA; use float32 or bfloat16 on the CPU")
    quick = args.quick
    repeats = args.repeats or (QUICK_REPEATS if quick else CUDA_REPEATS if on_cuda else CPU_REPEATS)
    warmup = args.warmup if args.warmup is not None else (
        QUICK_WARMUP if quick else CUDA_WARMUP if on_cuda else CPU_WARMUP)
    return BenchConfig(
        device=device, dtype=dtype, batch=args.batch or (8 if on_cuda else 1), frames=args.frames,
        threads=args.threads or _default_threads(), channels_last=args.channels_last, size=args.size,
        repeats=repeats, warmup=warmup, number=args.number, quick=quick, num_classes=args.num_classes,
        seed=args.seed, backend=args.backend, fold_baselines=args.fold_baselines,
        only=_substrings(args.only), profile=_substrings(args.profile), out=args.out, plot=args.plot,
        verbose=args.verbose,
    )


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
