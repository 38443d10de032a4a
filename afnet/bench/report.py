"""Turn timings into result rows and write them: stdout table, JSON, CSV and the plot.

Units: GFLOPs are multiply-accumulates per video in the paper's convention
(``afnet.count_flops``); latencies are per call of one batch; videos/s and
achieved GFLOP/s are per second of wall clock.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from afnet.bench.config import TSM, TSN, Entry
from afnet.bench.timing import Stats

Row = Dict[str, Any]

CSV_FIELDS = (
    "key", "model", "arch", "execution", "frames", "shift", "rt_target", "rt_realized", "gflops",
    "gflops_executed",
    "latency_ms", "q1_ms", "q3_ms", "min_ms", "max_ms", "mean_ms", "samples", "ms_per_video",
    "videos_per_s", "speedup_vs_tsn", "speedup_vs_tsm", "speedup_vs_dense", "gflop_per_s",
    "efficiency", "check_rel_err",
)


def _ratio(num: Optional[float], den: Optional[float]) -> Optional[float]:
    return None if num is None or den is None or den == 0 else num / den


def build_rows(
    entries: Sequence[Entry],
    stats: Mapping[str, Stats],
    facts: Mapping[str, Mapping[str, Any]],
    batch: int,
) -> List[Row]:
    """One row per entry, with the derived columns.

    ``facts[entry.key]`` holds ``gflops`` and ``rt_realized`` (and optionally
    ``gflops_executed`` and ``check_rel_err``). Speedups are ratios of median latencies, against the
    TSN/TSM baselines and against the dense twin on the same masks;
    efficiency = speedup vs TSN ÷ (TSN GFLOPs / row GFLOPs), i.e. the achieved
    GFLOP/s relative to TSN's (1.0: every FLOP saved is time saved).
    """
    by_arch = {e.arch: e.key for e in entries if e.is_baseline}
    rows: List[Row] = []
    for e in entries:
        s, f = stats[e.key], facts[e.key]
        ms = s.as_ms()
        rows.append({
            "key": e.key, "model": e.label, "arch": e.arch, "execution": e.execution or "-",
            "frames": e.frames, "shift": e.shift, "rt_target": e.rt, "rt_realized": f.get("rt_realized"),
            "gflops": f["gflops"], "gflops_executed": f.get("gflops_executed"),
            "latency_ms": ms["median"], "q1_ms": ms["q1"], "q3_ms": ms["q3"],
            "min_ms": ms["min"], "max_ms": ms["max"], "mean_ms": ms["mean"], "samples": s.n,
            "ms_per_video": ms["median"] / batch, "videos_per_s": batch / s.median,
            "gflop_per_s": f["gflops"] * batch / s.median, "check_rel_err": f.get("check_rel_err"),
        })
    latency = {r["key"]: r["latency_ms"] for r in rows}
    gflops = {r["key"]: r["gflops"] for r in rows}
    tsn, tsm = by_arch.get(TSN), by_arch.get(TSM)
    for e, r in zip(entries, rows):
        r["speedup_vs_tsn"] = None if e.arch == TSN else _ratio(latency.get(tsn), r["latency_ms"])
        r["speedup_vs_tsm"] = None if e.arch in (TSN, TSM) else _ratio(latency.get(tsm), r["latency_ms"])
        dense = e.twin("dense").key if e.execution == "sparse" else None
        r["speedup_vs_dense"] = _ratio(latency.get(dense), r["latency_ms"])
        flop_ratio = _ratio(gflops.get(tsn), r["gflops"])
        r["efficiency"] = _ratio(_ratio(latency.get(tsn), r["latency_ms"]), flop_ratio)
    return rows


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


TABLE_COLUMNS = (
    ("model", lambda r: r["model"]),
    ("exec", lambda r: r["execution"]),
    ("T", lambda r: str(r["frames"])),
    ("RT", lambda r: _fmt(r["rt_realized"], ".3f")),
    ("GFLOPs", lambda r: _fmt(r["gflops"], ".2f")),
    ("ms (median)", lambda r: _fmt(r["latency_ms"], ".1f")),
    ("IQR ms", lambda r: f"{r['q1_ms']:.1f}-{r['q3_ms']:.1f}"),
    ("videos/s", lambda r: _fmt(r["videos_per_s"], ".2f")),
    ("x TSN", lambda r: _fmt(r["speedup_vs_tsn"], ".2f")),
    ("x TSM", lambda r: _fmt(r["speedup_vs_tsm"], ".2f")),
    ("x dense", lambda r: _fmt(r["speedup_vs_dense"], ".2f")),
    ("GFLOP/s", lambda r: _fmt(r["gflop_per_s"], ".1f")),
    ("eff", lambda r: _fmt(r["efficiency"], ".2f")),
)


def format_table(rows: Sequence[Row]) -> str:
    """A Markdown table of the rows (readable as plain text, pasteable into the README)."""
    head = [name for name, _ in TABLE_COLUMNS]
    body = [[get(r) for _, get in TABLE_COLUMNS] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]

    def line(cells: Sequence[str]) -> str:  # text columns left-aligned, numbers right-aligned
        padded = (c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "| " + " | ".join(padded) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep] + [line(b) for b in body])


def write_json(path: Path, env: Mapping[str, Any], config: Mapping[str, Any], rows: Sequence[Row]) -> None:
    path.write_text(json.dumps({"env": env, "config": config, "results": list(rows)}, indent=2) + "\n")


def write_csv(path: Path, rows: Sequence[Row]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if r.get(k) is None else r[k] for k in CSV_FIELDS})


_BASELINE_STYLE = {TSN: ("*", "black"), TSM: ("P", "dimgray")}


def write_plot(path: Path, rows: Sequence[Row], title: str) -> None:
    """Latency per video against GFLOPs per video: the measured counterpart of the paper's Figure 4.

    Each AF model/frames/execution is a line through its ratios, labelled by
    RT (filled markers sparse, hollow dense); baselines are large distinct markers.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, ax = plt.subplots(figsize=(8, 5.5))
    series: Dict[tuple, List[Row]] = {}
    for r in rows:
        if r["execution"] == "-":
            marker, color = _BASELINE_STYLE.get(r["arch"], ("s", "black"))
            ax.scatter(r["gflops"], r["ms_per_video"], marker=marker, s=180, color=color, zorder=3,
                       label=f"{r['model']} ({r['frames']}f)")
        else:
            series.setdefault((r["model"], r["frames"], r["execution"]), []).append(r)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    models = sorted({k[:2] for k in series})
    for (model, frames, execution), rs in sorted(series.items()):
        rs = sorted(rs, key=lambda r: r["gflops"])
        color = colors[models.index((model, frames)) % len(colors)]
        sparse = execution == "sparse"
        ax.plot([r["gflops"] for r in rs], [r["ms_per_video"] for r in rs], "-" if sparse else "--",
                marker="o", color=color, markerfacecolor=color if sparse else "white",
                label=f"{model} ({frames}f) {execution}")
        for r in rs:
            if sparse:
                ax.annotate(f"RT {r['rt_target']:g}", (r["gflops"], r["ms_per_video"]),
                            textcoords="offset points", xytext=(5, -12), fontsize=8, color=color)
    xs = [r["gflops"] for r in rows]
    ys = [r["ms_per_video"] for r in rows]
    for values, axis, set_scale in ((xs, ax.xaxis, ax.set_xscale), (ys, ax.yaxis, ax.set_yscale)):
        if max(values) / max(min(values), 1e-12) > 5:  # MobileNet and ResNet on one plot
            set_scale("log")
            axis.set_major_formatter(ScalarFormatter())
            axis.set_minor_formatter(ScalarFormatter())
    ax.set_xlabel("GFLOPs per video (paper convention)")
    ax.set_ylabel("latency per video (ms, median)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

