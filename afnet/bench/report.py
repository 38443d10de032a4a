"""Turn timings into result rows and write them: stdout table, JSON, CSV and the plots.

Units: GFLOPs are multiply-accumulates per video in the paper's convention
(``afnet.count_flops``); latencies are per call of one batch; videos/s and
achieved GFLOP/s are per second of wall clock.

Every ratio "against TSN" is against the **fastest** TSN row of the same run, batch and
backbone family (torchvision, planned in either layout, compiled, graphed; ResNet-50 for the
AF-ResNets, MobileNetV3 for AF-MobileNetV3), and "against TSM" against the fastest TSM row of
the family: a baseline is compared at its best, never at a weak variant.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from afnet.bench.config import FAMILIES, Entry, family
from afnet.bench.timing import Stats

Row = Dict[str, Any]

CSV_FIELDS = (
    "key", "model", "arch", "family", "variant", "execution", "rule", "runner", "layout", "batch", "frames", "shift",
    "rt_target", "rt_realized", "rs_target", "rs_realized", "gflops", "gflops_executed",
    "latency_ms", "q1_ms", "q3_ms", "min_ms", "max_ms", "mean_ms", "samples", "ms_per_video",
    "videos_per_s", "speedup_vs_tsn", "speedup_vs_tsm", "speedup_vs_dense", "speedup_vs_eager",
    "gflop_per_s", "efficiency", "check_rel_err", "check_rel_err_lowp", "tsn_reference", "tsm_reference",
)


def _ratio(num: Optional[float], den: Optional[float]) -> Optional[float]:
    return None if num is None or den is None or den == 0 else num / den


def fastest(rows: Sequence[Row], arch: str) -> Optional[Row]:
    """The row of ``arch`` with the lowest median latency (None if there is none)."""
    candidates = [r for r in rows if r["arch"] == arch]
    return min(candidates, key=lambda r: r["latency_ms"]) if candidates else None


def references(rows: Sequence[Row]) -> Dict[str, Tuple[Optional[Row], Optional[Row]]]:
    """Per backbone family present in ``rows``: its fastest TSN and TSM rows (or None)."""
    present = {family(r["arch"]) for r in rows}
    return {fam: (fastest(rows, tsn), fastest(rows, tsm)) for fam, (tsn, tsm) in FAMILIES.items() if fam in present}


def build_rows(
    entries: Sequence[Entry],
    stats: Mapping[str, Stats],
    facts: Mapping[str, Mapping[str, Any]],
    batch: int,
) -> List[Row]:
    """One row per entry, with the derived columns.

    ``facts[entry.key]`` holds ``gflops`` and ``rt_realized`` (optionally ``rs_realized``,
    ``gflops_executed``, ``check_rel_err`` and, for a low-precision run, ``check_rel_err_lowp``).
    Speedups are ratios of median latencies: against the fastest TSN and TSM rows of the entry's
    family (``tsn_reference``/``tsm_reference`` name them), against the dense twin on the same
    masks, and against the eager call a compiled, graphed or onnxruntime one wraps.
    Efficiency = speedup vs TSN ÷ (TSN GFLOPs / row GFLOPs), i.e. the achieved GFLOP/s relative
    to the fastest TSN's (1.0: every FLOP saved is time saved).
    """
    rows: List[Row] = []
    for e in entries:
        s, f = stats[e.key], facts[e.key]
        ms = s.as_ms()
        rows.append({
            "key": e.key, "model": e.label, "arch": e.arch, "variant": e.variant, "execution": e.execution,
            "rule": None if e.is_baseline else e.rule, "runner": e.runner, "layout": e.layout, "batch": batch,
            "frames": e.frames, "shift": e.shift, "rt_target": e.rt, "rt_realized": f.get("rt_realized"),
            "rs_target": e.rs, "rs_realized": f.get("rs_realized"),
            "gflops": f["gflops"], "gflops_executed": f.get("gflops_executed"),
            "latency_ms": ms["median"], "q1_ms": ms["q1"], "q3_ms": ms["q3"],
            "min_ms": ms["min"], "max_ms": ms["max"], "mean_ms": ms["mean"], "samples": s.n,
            "ms_per_video": ms["median"] / batch, "videos_per_s": batch / s.median,
            "gflop_per_s": f["gflops"] * batch / s.median, "check_rel_err": f.get("check_rel_err"),
            "check_rel_err_lowp": f.get("check_rel_err_lowp"),
        })
    latency = {r["key"]: r["latency_ms"] for r in rows}
    refs = references(rows)
    for e, r in zip(entries, rows):
        tsn, tsm = refs[e.family]
        r["family"] = e.family
        r["tsn_reference"] = tsn["key"] if tsn else None
        r["tsm_reference"] = tsm["key"] if tsm else None
        r["speedup_vs_tsn"] = _ratio(tsn["latency_ms"], r["latency_ms"]) if tsn else None
        is_tsn = e.arch == FAMILIES[e.family][0]
        r["speedup_vs_tsm"] = None if is_tsn or not tsm else _ratio(tsm["latency_ms"], r["latency_ms"])
        dense = e.twin(execution="dense", runner="eager").key if e.execution in ("sparse", "folded") else None
        r["speedup_vs_dense"] = _ratio(latency.get(dense), r["latency_ms"])
        eager = e.twin(runner="eager").key if e.runner != "eager" else None
        r["speedup_vs_eager"] = _ratio(latency.get(eager), r["latency_ms"])
        flop_ratio = _ratio(tsn["gflops"], r["gflops"]) if tsn else None
        r["efficiency"] = _ratio(r["speedup_vs_tsn"], flop_ratio)
    return rows


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


TABLE_COLUMNS = (
    ("model", lambda r: r["model"]),
    ("variant", lambda r: r["variant"]),
    ("T", lambda r: str(r["frames"])),
    ("RT", lambda r: _fmt(r["rt_realized"], ".3f")),
    ("RS", lambda r: _fmt(r["rs_realized"], ".3f")),
    ("GFLOPs", lambda r: _fmt(r["gflops"], ".2f")),
    ("ms (median)", lambda r: _fmt(r["latency_ms"], ".1f")),
    ("IQR ms", lambda r: f"{r['q1_ms']:.1f}-{r['q3_ms']:.1f}"),
    ("videos/s", lambda r: _fmt(r["videos_per_s"], ".2f")),
    ("x TSN", lambda r: _fmt(r["speedup_vs_tsn"], ".2f")),
    ("x TSM", lambda r: _fmt(r["speedup_vs_tsm"], ".2f")),
    ("x dense", lambda r: _fmt(r["speedup_vs_dense"], ".2f")),
    ("x eager", lambda r: _fmt(r["speedup_vs_eager"], ".2f")),
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


def references_line(rows: Sequence[Row]) -> str:
    """Which rows the ×TSN and ×TSM columns divide by, per family."""
    parts = []
    for fam, pair in references(rows).items():
        for ref, name in zip(pair, ("x TSN", "x TSM")):
            if ref is not None:
                parts.append(f"{name} of the {fam} rows is against the fastest {ref['model']}: {ref['variant']} "
                             f"({ref['latency_ms']:.1f} ms)")
    return "; ".join(parts)


def write_json(
    path: Path, env: Mapping[str, Any], config: Mapping[str, Any], rows: Sequence[Row],
    skipped: Optional[Mapping[str, str]] = None,
) -> None:
    """``{"env", "config", "reference", "skipped", "results"}``; ``reference`` names the fastest
    TSN and TSM rows per batch and family (``{"8": {"resnet50": {"tsn": key, "tsm": key}}}``),
    ``skipped`` the entries not run and why."""
    batches = sorted({r["batch"] for r in rows})
    reference = {
        str(b): {fam: {"tsn": (tsn or {}).get("key"), "tsm": (tsm or {}).get("key")}
                 for fam, (tsn, tsm) in references([r for r in rows if r["batch"] == b]).items()}
        for b in batches
    }
    data = {"env": env, "config": config, "reference": reference,
            "skipped": [{"key": k, "reason": v} for k, v in (skipped or {}).items()], "results": list(rows)}
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_csv(path: Path, rows: Sequence[Row]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if r.get(k) is None else r[k] for k in CSV_FIELDS})


def ideal_lines(rows: Sequence[Row]) -> List[Tuple[Row, float]]:
    """The FLOP limit per family: ``(fastest TSN row, ms per video per GFLOP)``. A model running at
    its family's fastest TSN's GFLOP/s would lie on ``latency = slope · GFLOPs``; families
    without a TSN row have none."""
    return [(tsn, tsn["ms_per_video"] / tsn["gflops"]) for tsn, _ in references(rows).values() if tsn is not None]


_BASELINE_COLORS = {"tsn_resnet50": "black", "tsm_resnet50": "dimgray",
                    "tsn_mobilenetv3": "saddlebrown", "tsm_mobilenetv3": "peru"}
# How a baseline runs -> marker; the layouts of the planned network told apart.
_BASELINE_MARKERS = {"torchvision": "*", "planned-contiguous": "p", "planned-channels_last": "P", "compiled": "X",
                     "graphed-torchvision": "D", "graphed-planned": "d", "onnxruntime": "h"}
_RUNNER_MARKERS = {"eager": "o", "compiled": "s", "graphed": "D", "reduce-overhead": "^", "onnxruntime": "h"}
_IDEAL_LINES = {"resnet50": (0, (1, 3)), "mobilenetv3": (0, (4, 3))}


def _baseline_style(r: Row) -> str:
    """The :data:`_BASELINE_MARKERS` key of a baseline row."""
    if r["runner"] == "graphed":
        return f"graphed-{r['execution']}"
    if r["runner"] != "eager":
        return r["runner"]
    return f"planned-{r['layout']}" if r["execution"] == "planned" else r["execution"]
_EXECUTION_LINES = {"sparse": "-", "dense": "--", "folded": ":"}


def _log_axes(ax, xs: Sequence[float], ys: Sequence[float]) -> None:
    """Logarithmic axes (the ideal line, latency ∝ GFLOPs, is then straight at 45°; MobileNet and
    ResNet fit one plot), labelled in plain numbers: 1-2-5 per decade, more over a narrow span."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    for values, axis, set_scale in ((xs, ax.xaxis, ax.set_xscale), (ys, ax.yaxis, ax.set_yscale)):
        set_scale("log")
        narrow = max(values) / max(min(values), 1e-12) < 10
        axis.set_major_locator(LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if narrow else (1.0, 2.0, 5.0)))
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())


def _series_key(r: Row) -> tuple:
    """AF rows on one line: a model/rule/execution/runner through its RTs, or (spatial) one RT
    through its RS values."""
    spatial = f"RT {r['rt_target']:g}, RS" if r["rs_target"] is not None else None
    return (r["model"], r["frames"], r["rule"], spatial, r["execution"], r["runner"])


def _draw_panel(ax, rows: Sequence[Row], ideals: Sequence[Tuple[Row, float]], families: List[tuple]) -> None:
    """Baselines as large markers, AF series as lines (solid sparse, dashed dense, dotted folded;
    marker by runner; color by model family, the same in every panel), the ideal line."""
    import matplotlib.pyplot as plt

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    series: Dict[tuple, List[Row]] = {}
    for r in rows:
        if r["rule"] is None:
            ax.scatter(r["gflops"], r["ms_per_video"], marker=_BASELINE_MARKERS[_baseline_style(r)], s=140, zorder=3,
                       color=_BASELINE_COLORS.get(r["arch"], "black"), label=f"{r['model']} {r['variant']}")
        else:
            series.setdefault(_series_key(r), []).append(r)
    for key, rs in sorted(series.items(), key=lambda item: str(item[0])):
        model, frames, rule, spatial, execution, runner = key
        rs = sorted(rs, key=lambda r: r["gflops"])
        color = colors[families.index(key[:4]) % len(colors)]
        name = " ".join(w for w in (model, f"{frames}f", "" if rule == "fixed" else rule, spatial or "",
                                    execution, "" if runner == "eager" else runner) if w)
        ax.plot([r["gflops"] for r in rs], [r["ms_per_video"] for r in rs], _EXECUTION_LINES.get(execution, "-"),
                marker=_RUNNER_MARKERS.get(runner, "o"), color=color,
                markerfacecolor="white" if execution == "dense" else color, label=name)
        if execution == "sparse" and runner == "eager" and rule == "fixed":  # the ratios, once per family
            for r in rs:
                text = f"RS {r['rs_target']:g}" if spatial else f"RT {r['rt_target']:g}"
                ax.annotate(text, (r["gflops"], r["ms_per_video"]), textcoords="offset points", xytext=(5, -12),
                            fontsize=7, color=color)
    xs = [r["gflops"] for r in rows]
    ys = [r["ms_per_video"] for r in rows]
    line_x = [min(xs) / 1.2, max(xs) * 1.2]
    for ref, slope in ideals:
        ax.plot(line_x, [slope * x for x in line_x], color="gray", linestyle=_IDEAL_LINES[ref["family"]],
                linewidth=1.5, zorder=1,
                label=f"ideal: latency ∝ GFLOPs at the fastest {ref['model']}'s rate ({ref['variant']})")
        ys = ys + [slope * line_x[0], slope * line_x[-1]]
    _log_axes(ax, xs, ys)
    ax.set_xlabel("GFLOPs per video (paper convention)")
    ax.grid(True, which="both", alpha=0.3)


def write_plot(path: Path, rows: Sequence[Row], title: str) -> None:
    """Latency per video against GFLOPs per video: the measured counterpart of the paper's Figure 4,
    with an ideal line per family (latency ∝ GFLOPs through its fastest TSN) that shows each
    point's gap to the FLOP limit.

    One panel for the frame ratios (each AF model/rule/execution/runner a line through its RTs)
    and, when there are spatial rows, one for the cell ratios (one line per RT through its RS
    values); the baselines in both. One legend for both, right of the plots.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    baselines = [r for r in rows if r["rule"] is None]
    spatial = [r for r in rows if r["rs_target"] is not None]
    panels = [("frames kept (RT)", [r for r in rows if r["rs_target"] is None])]
    if spatial:
        panels.append(("cells kept (RS) of the kept frames, fixed center policy", baselines + spatial))
    families = sorted({_series_key(r)[:4] for r in rows if r["rule"] is not None}, key=str)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 6.5), squeeze=False)
    ideals = ideal_lines(rows)
    labels: Dict[str, Any] = {}
    for ax, (name, panel_rows) in zip(axes[0], panels):
        _draw_panel(ax, panel_rows, ideals, families)
        ax.set_title(name, fontsize=9)
        for handle, label in zip(*ax.get_legend_handles_labels()):
            labels.setdefault(label, handle)
    axes[0][0].set_ylabel("latency per video (ms, median)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    # Right of the panels; bbox_inches="tight" grows the image to hold it.
    fig.legend(list(labels.values()), list(labels), fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_sweep_plot(path: Path, rows: Sequence[Row], title: str) -> None:
    """Latency per video against videos per call, one line per entry (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, ax = plt.subplots(figsize=(10, 6))
    lines: Dict[str, List[Row]] = {}
    for r in rows:
        lines.setdefault(r["key"], []).append(r)
    for key, rs in lines.items():
        rs = sorted(rs, key=lambda r: r["batch"])
        baseline = rs[0]["rule"] is None
        ax.plot([r["batch"] for r in rs], [r["ms_per_video"] for r in rs], "--" if baseline else "-",
                marker=_RUNNER_MARKERS.get(rs[0]["runner"], "o"), color="black" if baseline else None,
                alpha=0.6 if baseline else 1.0, label=f"{rs[0]['model']} {rs[0]['frames']}f {rs[0]['variant']}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
    ax.set_xticks(sorted({r["batch"] for r in rows}))
    ax.set_xlabel("videos per call (batch)")
    ax.set_ylabel("latency per video (ms, median)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
