"""Triton on this machine: can the compiled rows of a GPU session work, and what will they cost?

Three answers, each written to the JSON file as soon as it is known:
  versions   triton and torch, the device;
  blend      the Triton ``blend_branches`` (afnet_kernels/triton_blend.py) on an AF-ResNet50 layer-1
             fusion shape, checked against the reference, then timed against the compiled kernel
             (CUDA) or the reference (CPU), median of interleaved repeats;
  inductor   seconds to compile, and then to run, a small conv + h-swish + add under
             ``torch.compile`` (inductor: Triton code on CUDA, C++ on the CPU), checked against eager.
A model compiles in 30-90 s per model and dtype; a first compile far slower than a few seconds here
says the compiled rows will not fit.

On the CPU (``--device cpu``, the GPU session's dry run) the Triton kernel runs in Triton's
interpreter, so a tiny shape is used and ``TRITON_INTERPRET=1`` is set before triton is imported.

Usage: python benchmarks/triton_check.py --device cuda|cpu --out triton.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

# (rows = N*T, C, H, W) of the blend: layer 1 of AF-ResNet50 at 8 videos x 8 frames on a GPU; tiny
# in the interpreter.
SHAPES = {"cuda": (64, 256, 56, 56), "cpu": (2, 8, 8, 8)}
REPEATS = {"cuda": 50, "cpu": 3}


def _write(out: Path, result: Dict[str, Any]) -> None:
    out.write_text(json.dumps(result, indent=2) + "\n")


def _median_ms(fns: Dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None]) -> Dict[str, float]:
    """Median wall-clock ms per call of each function, one call of each per round (interleaved)."""
    samples: Dict[str, List[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up: Triton JIT, cuDNN choices
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), required=True)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--inductor", action=argparse.BooleanOptionalAction, default=True,
                        help="time inductor's first compile (default on; the CPU dry run turns it off: a C++ "
                        "compilation takes most of a minute on 2 busy cores)")
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # read when the kernel is defined, at import
    import torch
    import torch.nn.functional as F

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("argument --device: cuda requested but no CUDA GPU is visible")
    import triton

    import afnet_kernels
    from afnet_kernels import reference
    from afnet_kernels.triton_blend import blend_branches_triton

    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    result: Dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (Triton interpreter)",
        "triton": triton.__version__, "torch": torch.__version__, "dtype": str(dtype).replace("torch.", ""),
    }
    _write(args.out, result)

    rows, c, h, w = SHAPES[device.type]
    generator = torch.Generator(device=device).manual_seed(0)
    focal = torch.randn(rows, c, h, w, device=device, dtype=dtype, generator=generator)
    focal = focal.contiguous(memory_format=torch.channels_last)
    ample = torch.randn(rows, c, h // 2, w // 2, device=device, dtype=dtype, generator=generator)
    ample = ample.contiguous(memory_format=torch.channels_last)
    theta = torch.rand(rows, c, device=device, dtype=dtype, generator=generator)
    expected = reference.blend_branches(ample.float(), focal.float(), theta.float(), True)
    got = blend_branches_triton(ample, focal, theta, True)
    error = ((got.float() - expected).norm() / expected.norm()).item()
    # One rounding to the output dtype: bfloat16 keeps 8 bits.
    tolerance = 1e-2 if dtype == torch.bfloat16 else 1e-6
    baseline = "afnet_kernels.blend_branches" if device.type == "cuda" else "reference.blend_branches"
    other = afnet_kernels.blend_branches if device.type == "cuda" else reference.blend_branches
    ms = _median_ms({"triton": lambda: blend_branches_triton(ample, focal, theta, True),
                     "baseline": lambda: other(ample, focal, theta, True)}, REPEATS[device.type], sync)
    result["blend"] = {"shape": [rows, c, h, w], "layout": "channels_last", "rel_err": error,
                       "tolerance": tolerance, "ok": error <= tolerance, "triton_ms": ms["triton"],
                       "baseline": baseline, "baseline_ms": ms["baseline"]}
    _write(args.out, result)

    if not args.inductor:
        print(json.dumps(result, indent=2))
        return 0 if result["blend"]["ok"] else 1
    conv = torch.nn.Conv2d(c, c, 3, padding=1).to(device=device, dtype=dtype)

    def block(x: torch.Tensor) -> torch.Tensor:
        return F.hardswish(conv(x)) + x

    with torch.inference_mode():
        start = time.perf_counter()
        compiled = torch.compile(block, fullgraph=True, dynamic=False)
        out = compiled(focal)
        sync()
        compile_s = time.perf_counter() - start
        error = ((out.float() - block(focal).float()).norm() / block(focal).float().norm()).item()
        ms = _median_ms({"compiled": lambda: compiled(focal), "eager": lambda: block(focal)},
                        REPEATS[device.type], sync)
    result["inductor"] = {"first_call_s": compile_s, "rel_err": error, "ok": error <= 2 * tolerance + 1e-4,
                          "compiled_ms": ms["compiled"], "eager_ms": ms["eager"]}
    _write(args.out, result)
    print(json.dumps(result, indent=2))
    return 0 if result["blend"]["ok"] and result["inductor"]["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
