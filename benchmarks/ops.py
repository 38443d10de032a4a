"""Op benchmark: afnet_kernels vs plain PyTorch on AFNet-sized tensors.

Times, for each activation size ``[N*T, C, H, W]`` and selection ratio:
  gather        gather_frames(x, index)              vs x.index_select(0, index)
  gather+shift  gather_frames(x, index, T, 8)        vs temporal_shift(x)[index]
  scatter       scatter_frames(base, src, index)     vs base.clone().index_add_(0, index, src)
  scatter+fill  scatter_frames(..., fill[C], relu)   vs reference (base + fill, index_copy_, relu)
  scatter_ / scatter_+fill+relu
                scatter_frames_(base, ...) in place  vs the same index_add_ / index_copy_ steps in place
                                                     (the out-of-place rows above are the third column)
  blend         blend_branches(ample, focal, θ)      vs F.interpolate + elementwise blend + relu
  pool          pool_branches(ample, focal)          vs (F.interpolate + add).mean
  gather_tiles  gather_tiles(x, cells, G, ..., shift) vs tsm + pad + unfold + index
  scatter_tiles scatter_tiles(x, src, cells, G, fill, relu)
                                                     vs add + index_put_ on the tile view + relu
and ``x.clone()`` as the memory-bandwidth yardstick. Every op is checked
against its baseline (and every baseline against the reference) before timing.
Our ops run with ``validate=False``, as the model calls them (the indices come from
``select_frames`` or the spatial masks); the baselines check nothing either.

The tile ops cut each frame into G x G cells of ``--cell-px`` pixels (G = H // cell) and
select the given ratio of all cells; tiles carry a 1-pixel halo (a 3x3 conv, stride 1).

The in-place rows write into a scratch copy of x that every call overwrites again (base is dead
after the scatter in the model): the values drift from call to call, the work does not. They are
checked on a fresh copy before timing, and must land in that copy's own storage.

GB/s counts each input read once and each output written once. Results go to a
table (stdout and ops.txt), ops.json and ops.csv under --out (default
benchmarks/results/<device>-<date>/).

Usage: python benchmarks/ops.py [--device cpu|cuda|all] [--quick] [--sizes 256x56,512x28] [--cell-px 7]
       [--dtype bfloat16] [--channels-last]
``--channels-last`` times every op, the tile ops included, on channels_last tensors, the layout
the models run in (the GPU session, benchmarks/gpu_session.py, passes it, with bfloat16).
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

import afnet_kernels as ak
from afnet_kernels import reference as ref

ROOT = Path(__file__).resolve().parent
DEFAULT_SIZES = "256x56,512x28,1024x14"
RATIOS = (0.25, 0.5, 1.0)
SHIFT_DIV = 8


@dataclass
class Row:
    size: str
    ratio: float
    op: str
    impl: str
    ms: float
    gbps: float
    speedup: Optional[float]  # baseline time / this time (ours only)
    pct_clone: float  # GB/s as a share of clone's GB/s


@dataclass
class Case:
    """One timed comparison: ours vs baseline, both moving `nbytes`."""

    op: str
    ours: Callable[[], torch.Tensor]
    baseline: Callable[[], torch.Tensor]
    baseline_name: str
    nbytes: int
    check: Callable[[], None]


def device_label(device: str) -> str:
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        name = cpu_model()
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{device}-{slug}"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown-cpu"


def keep_freed_memory() -> bool:
    """Makes glibc reuse freed heap memory instead of mmap-ing fresh pages.

    PyTorch's CPU allocator has no cache: every output over 32 MB is a fresh
    mmap whose page faults (zeroing) cost more than the op itself on a VM, and
    would hide the kernels' differences. Returns whether it took effect.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def time_ms(fn: Callable[[], object], device: str, min_run_time: float, rounds: int = 5) -> float:
    """Milliseconds per call: the median after warm-up on GPU; on CPU the lowest
    of `rounds` medians, so that a burst of load from other processes on a
    shared machine does not decide the figure."""
    if device == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    import torch.utils.benchmark as tb

    fn()  # warm-up (allocator, thread pool)
    timer = tb.Timer(stmt="fn()", globals={"fn": fn})
    medians = [timer.blocked_autorange(min_run_time=min_run_time / rounds).median for _ in range(rounds)]
    return min(medians) * 1e3


def parse_sizes(text: str) -> List[tuple]:
    sizes = []
    for item in text.split(","):
        c, hw = item.lower().split("x")
        sizes.append((int(c), int(hw)))
    return sizes


def assert_close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    tol = 1e-5 if a.dtype in (torch.float32, torch.float64) else 2e-2
    try:
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    except AssertionError as err:
        raise SystemExit(f"correctness check failed for {what}: {err}") from None


def check(ours: Callable, base: Callable, reference: Callable, name: str) -> Callable[[], None]:
    """Checks both ours and the baseline against the reference (a baseline that
    skipped work would otherwise look fast)."""

    def run() -> None:
        expected = reference()
        assert_close(base(), expected, f"{name} baseline vs reference")
        assert_close(ours(), expected, f"{name} vs reference")

    return run


def check_in_place(ours: Callable, base: Callable, scratches, x: torch.Tensor, reference: Callable,
                   name: str) -> Callable[[], None]:
    """``check`` for in-place cases: each side runs once on its scratch reset to ``x`` and must
    return that scratch, written in its own storage, equal to the reference."""

    def run() -> None:
        expected = reference()
        for fn, scratch, what in ((base, scratches[1], f"{name} baseline"), (ours, scratches[0], name)):
            scratch.copy_(x)
            pointer = scratch.data_ptr()
            out = fn()
            if out is not scratch or scratch.data_ptr() != pointer:
                raise SystemExit(f"correctness check failed for {what}: the result is not in base's storage")
            assert_close(scratch, expected, f"{what} vs reference")

    return run


def build_cases(x, index, t: int, dtype, device) -> List[Case]:
    """Cases that depend on the selection (gather, scatter)."""
    rows, c, h, w = x.shape
    k = index.numel()
    es = x.element_size()
    row_bytes = c * h * w * es
    # src comes from a conv in the model, so it shares x's layout; a mismatch
    # would time a transposing copy instead of the scatter.
    src = torch.randn(k, c, h, w, dtype=dtype, device=device).contiguous(memory_format=ref.memory_format(x))
    fill = torch.randn(c, dtype=dtype, device=device)
    fill_view = fill.view(-1, 1, 1)

    def gather_plain():
        return ak.gather_frames(x, index, validate=False)

    def gather_plain_base():
        return x.index_select(0, index)

    def gather_shift():
        return ak.gather_frames(x, index, num_segments=t, shift_div=SHIFT_DIV, validate=False)

    def gather_shift_base():
        return ref.temporal_shift(x, t, SHIFT_DIV).index_select(0, index)

    def scatter_plain():
        return ak.scatter_frames(x, src, index, validate=False)

    def scatter_plain_base():
        return x.clone().index_add_(0, index, src)

    def scatter_fill():
        return ak.scatter_frames(x, src, index, fill, relu=True, validate=False)

    def scatter_fill_base():
        out = x + fill_view
        out.index_copy_(0, index, x.index_select(0, index) + src)
        return out.relu_()

    # In place: both sides overwrite a scratch copy of x on every call (see the module docstring).
    scratch = x.clone()
    ours_scratch, base_scratch = scratch.clone(), scratch.clone()

    def scatter_plain_inplace():
        return ak.scatter_frames_(ours_scratch, src, index, validate=False)

    def scatter_plain_inplace_base():
        return base_scratch.index_add_(0, index, src)

    def scatter_fill_inplace():
        return ak.scatter_frames_(ours_scratch, src, index, fill, relu=True, validate=False)

    def scatter_fill_inplace_base():
        picked = base_scratch.index_select(0, index) + src
        return base_scratch.add_(fill_view).index_copy_(0, index, picked).relu_()

    return [
        Case("gather", gather_plain, gather_plain_base, "index_select", 2 * k * row_bytes,
             check(gather_plain, gather_plain_base, lambda: ref.gather_frames(x, index), "gather")),
        Case("gather+shift", gather_shift, gather_shift_base, "tsm(x)[index]", 2 * k * row_bytes,
             check(gather_shift, gather_shift_base,
                    lambda: ref.gather_frames(x, index, t, SHIFT_DIV), "gather+shift")),
        Case("scatter", scatter_plain, scatter_plain_base, "clone+index_add_",
             (2 * rows + k) * row_bytes,
             check(scatter_plain, scatter_plain_base,
                    lambda: ref.scatter_frames(x, src, index), "scatter")),
        Case("scatter+fill+relu", scatter_fill, scatter_fill_base, "add+index_copy_+relu",
             (2 * rows + k) * row_bytes + c * es,
             check(scatter_fill, scatter_fill_base,
                    lambda: ref.scatter_frames(x, src, index, fill, True), "scatter+fill")),
        # Without fill and ReLU only the K named rows are read and written.
        Case("scatter_", scatter_plain_inplace, scatter_plain_inplace_base, "index_add_ (in place)",
             3 * k * row_bytes,
             check_in_place(scatter_plain_inplace, scatter_plain_inplace_base,
                            (ours_scratch, base_scratch), x,
                            lambda: ref.scatter_frames(x, src, index), "scatter_")),
        Case("scatter_+fill+relu", scatter_fill_inplace, scatter_fill_inplace_base,
             "add_+index_copy_+relu_", (2 * rows + k) * row_bytes + c * es,
             check_in_place(scatter_fill_inplace, scatter_fill_inplace_base,
                            (ours_scratch, base_scratch), x,
                            lambda: ref.scatter_frames(x, src, index, fill, True), "scatter_+fill")),
    ]


def tile_cases(x, cells, grid: int, t: int, dtype, device) -> List[Case]:
    """Cases of the tile ops: ``cells`` [K] cell ids of a ``grid x grid`` cut of every frame."""
    rows, c, h, w = x.shape
    size = h // grid  # the benchmark sizes are multiples of the cell size
    halo, es = 1, x.element_size()
    count = cells.numel()
    row, cy, cx = cells // (grid * grid), cells % (grid * grid) // grid, cells % grid
    src = torch.randn(count, c, size, size, dtype=dtype, device=device)
    src = src.contiguous(memory_format=ref.memory_format(x))
    fill = torch.randn(c, dtype=dtype, device=device)
    fill_view = fill.view(-1, 1, 1)

    def gather():
        return ak.gather_tiles(x, cells, grid, h, 1, halo, t, SHIFT_DIV, validate=False)

    def gather_base():
        padded = F.pad(ref.temporal_shift(x, t, SHIFT_DIV), (halo,) * 4)
        windows = padded.unfold(2, size + 2 * halo, size).unfold(3, size + 2 * halo, size)
        return windows[row, :, cy, cx]  # [K, C, S+2, S+2], one gather from the view

    def scatter():
        return ak.scatter_tiles(x, src, cells, grid, fill, relu=True, validate=False)

    def scatter_base():
        out = x + fill_view
        tiles = out.view(rows, c, grid, size, grid, size)
        tiles[row, :, cy, :, cx, :] = x.view(rows, c, grid, size, grid, size)[row, :, cy, :, cx, :] + src
        return out.relu_()

    tile = (size + 2 * halo) ** 2
    return [
        Case("gather_tiles", gather, gather_base, "tsm+pad+unfold+index", 2 * count * c * tile * es,
             check(gather, gather_base,
                   lambda: ref.gather_tiles(x, cells, grid, h, 1, halo, t, SHIFT_DIV), "gather_tiles")),
        Case("scatter_tiles", scatter, scatter_base, "add+index_put_+relu",
             (2 * x.numel() + src.numel()) * es + c * es,
             check(scatter, scatter_base,
                   lambda: ref.scatter_tiles(x, src, cells, grid, fill, True), "scatter_tiles")),
    ]


def fusion_cases(focal, dtype, device) -> List[Case]:
    """Cases over all frames (blend, pool): the ample branch is at half resolution."""
    rows, c, h, w = focal.shape
    es = focal.element_size()
    ample = torch.randn(rows, c, (h + 1) // 2, (w + 1) // 2, dtype=dtype, device=device)
    ample = ample.contiguous(memory_format=ref.memory_format(focal))
    theta = torch.rand(rows, c, dtype=dtype, device=device)
    th = theta.view(rows, c, 1, 1)
    size = (h, w)

    def blend():
        return ak.blend_branches(ample, focal, theta, relu=True)

    def blend_base():
        return torch.relu(th * F.interpolate(ample, size=size) + (1 - th) * focal)

    def pool():
        return ak.pool_branches(ample, focal)

    def pool_base():
        return (F.interpolate(ample, size=size) + focal).mean(dim=(2, 3))

    ample_bytes, focal_bytes = ample.numel() * es, focal.numel() * es
    return [
        Case("blend", blend, blend_base, "interpolate+blend+relu",
             ample_bytes + 2 * focal_bytes + theta.numel() * es,
             check(blend, blend_base, lambda: ref.blend_branches(ample, focal, theta, True), "blend")),
        Case("pool", pool, pool_base, "interpolate+add+mean",
             ample_bytes + focal_bytes + rows * c * es,
             check(pool, pool_base, lambda: ref.pool_branches(ample, focal), "pool")),
    ]


def run_device(args, device: str) -> Dict:
    dtype = getattr(torch, args.dtype)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    t, n = args.T, args.N
    rows_out: List[Row] = []
    gen = torch.Generator().manual_seed(0)
    for c, hw in parse_sizes(args.sizes):
        size = f"[{n * t},{c},{hw},{hw}]"
        x = torch.randn(n * t, c, hw, hw, dtype=dtype, device=device).contiguous(memory_format=layout)
        clone_ms = time_ms(x.clone, device, args.min_run_time)
        clone_gbps = 2 * x.numel() * x.element_size() / clone_ms / 1e6
        rows_out.append(Row(size, 1.0, "clone", "torch", clone_ms, clone_gbps, None, 100.0))

        def record(case: Case, ratio: float) -> None:
            case.check()
            ours_ms = time_ms(case.ours, device, args.min_run_time)
            base_ms = time_ms(case.baseline, device, args.min_run_time)
            for impl, ms, speedup in (("afnet_kernels", ours_ms, base_ms / ours_ms),
                                      (case.baseline_name, base_ms, None)):
                gbps = case.nbytes / ms / 1e6
                rows_out.append(Row(size, ratio, case.op, impl, ms, gbps, speedup,
                                    100.0 * gbps / clone_gbps))
            print(format_row(rows_out[-2]), flush=True)
            print(format_row(rows_out[-1]), flush=True)

        for ratio in args.ratios:
            k = max(1, round(ratio * n * t))
            mask = torch.zeros(n * t, dtype=torch.bool)
            mask[torch.randperm(n * t, generator=gen)[:k]] = True
            index, _ = ak.select_frames(mask.view(n, t).to(device))
            for case in build_cases(x, index, t, dtype, device):
                record(case, ratio)
            grid = max(1, hw // args.cell_px)
            if hw % grid == 0:
                cell_count = n * t * grid * grid
                picked = torch.randperm(cell_count, generator=gen)[: max(1, round(ratio * cell_count))]
                for case in tile_cases(x, picked.sort().values.to(device), grid, t, dtype, device):
                    record(case, ratio)
        for case in fusion_cases(x, dtype, device):
            record(case, 1.0)
        del x
    return {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else cpu_model(),
        "threads": torch.get_num_threads(),
        # Other processes compete on a shared machine; the load says how much.
        "loadavg_1min": os.getloadavg()[0] if device == "cpu" else None,
        "torch": torch.__version__,
        "dtype": args.dtype,
        "layout": "channels_last" if args.channels_last else "contiguous",
        "N": n,
        "T": t,
        "shift_div": SHIFT_DIV,
        "date": datetime.date.today().isoformat(),
        "backends": ak.backends(),
        "rows": [asdict(r) for r in rows_out],
    }


HEADER = f"{'size':<18} {'sel':>5} {'op':<18} {'impl':<24} {'ms':>9} {'GB/s':>7} {'speedup':>8} {'%clone':>7}"


def format_row(r: Row) -> str:
    speedup = f"{r.speedup:.2f}x" if r.speedup is not None else ""
    return (f"{r.size:<18} {r.ratio:>5.0%} {r.op:<18} {r.impl:<24} {r.ms:>9.3f} {r.gbps:>7.1f} "
            f"{speedup:>8} {r.pct_clone:>6.0f}%")


def write(result: Dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [Row(**r) for r in result["rows"]]
    title = (f"afnet_kernels op benchmark on {result['device_name']} ({result['device']}, "
             f"{result['threads']} threads), torch {result['torch']}, {result['dtype']}, "
             f"{result['layout']}, N={result['N']} T={result['T']}, {result['date']}")
    if result.get("cpu_allocator"):
        title += f"\nCPU allocator: {result['cpu_allocator']}; load average {result['loadavg_1min']:.1f}"
    table = "\n".join([title, HEADER] + [format_row(r) for r in rows])
    (out_dir / "ops.txt").write_text(table + "\n")
    (out_dir / "ops.json").write_text(json.dumps(result, indent=1) + "\n")
    with open(out_dir / "ops.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    print("\n" + table)
    print(f"\nwrote {out_dir}/ops.{{txt,json,csv}}")


def summary(result: Dict) -> None:
    """Prints the two goals (shift-gather speedup on CPU, >= 70% of clone's GB/s) and the in-place
    scatter against the out-of-place one."""
    ours = [r for r in result["rows"] if r["impl"] == "afnet_kernels"]
    shift = [r["speedup"] for r in ours if r["op"] == "gather+shift"]
    print(f"gather+shift speedup vs tsm(x)[index]: min {min(shift):.2f}x, "
          f"median {statistics.median(shift):.2f}x (goal >= 1.5x on CPU)")
    by_case = {(r["size"], r["ratio"], r["op"]): r["ms"] for r in ours}
    for inplace, outplace in (("scatter_", "scatter"), ("scatter_+fill+relu", "scatter+fill+relu")):
        ratios = [f"{size} {ratio:.0%}: {by_case[(size, ratio, outplace)] / ms:.2f}x"
                  for (size, ratio, op), ms in by_case.items()
                  if op == inplace and (size, ratio, outplace) in by_case]
        if ratios:
            print(f"{inplace} (in place) vs {outplace} (out of place), time ratio: " + ", ".join(ratios))
    low = [f"{r['op']} {r['size']} {r['ratio']:.0%}: {r['pct_clone']:.0f}%" for r in ours
           if r["pct_clone"] < 70]
    print("ops below 70% of clone's GB/s: " + (", ".join(low) if low else "none"))


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                        help="'all' = cpu, plus cuda when a GPU is visible")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    parser.add_argument("--channels-last", action="store_true", help="time channels_last tensors")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="CxHW list, e.g. 256x56,512x28")
    parser.add_argument("--N", type=int, default=8, help="videos per batch")
    parser.add_argument("--T", type=int, default=8, help="frames per video")
    parser.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS))
    parser.add_argument("--cell-px", type=int, default=7,
                        help="tile ops: cell size in pixels (sizes it does not divide are skipped)")
    parser.add_argument("--quick", action="store_true", help="N=2, 50%% selection, short timing")
    parser.add_argument("--min-run-time", type=float, default=0.5, help="CPU seconds per timing")
    parser.add_argument("--fresh-pages", action="store_true",
                        help="CPU: let every large output fault in fresh pages (default: reuse the heap)")
    parser.add_argument("--out", type=Path, default=None, help="output dir (default results/<device>-<date>)")
    args = parser.parse_args(argv)
    if args.quick:
        args.N, args.ratios, args.min_run_time = 2, [0.5], 0.1
    allocator = "fresh pages (default malloc)"
    if not args.fresh_pages and keep_freed_memory():
        allocator = "glibc heap reuse (mallopt M_MMAP_MAX=0)"
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if args.device == "all" and not torch.cuda.is_available():
        devices = ["cpu"]
    if "cuda" in devices and not ak.backends()["cuda"]["usable"]:
        raise SystemExit(f"CUDA kernels are not usable here: {ak.backends()['cuda']['reason']}")
    for device in devices:
        print(f"== {device} ==\n{HEADER}", flush=True)
        result = run_device(args, device)
        if device == "cpu":
            result["cpu_allocator"] = allocator
        date = result["date"]
        out_dir = args.out if args.out is not None else ROOT / "results" / f"{device_label(device)}-{date}"
        if args.out is not None and len(devices) > 1:
            out_dir = args.out / device
        write(result, out_dir)
        summary(result)


if __name__ == "__main__":
    main()
