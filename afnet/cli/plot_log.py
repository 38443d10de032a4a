"""``afnet plot-log``: PNG curves of a run's log.jsonl."""

from __future__ import annotations

import argparse
from pathlib import Path

from afnet.cli.args import check_output, require


def add_parser(sub: "argparse._SubParsersAction") -> None:
    """Register ``plot-log``."""
    p = sub.add_parser("plot-log", help="PNG curves of a run's log.jsonl",
                       description="Draw the curves of RUN_DIR/log.jsonl (losses, accuracy, selected ratios, lr, τ, "
                       "GFLOPs) into RUN_DIR/training_curves.png (or --out).")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, default=None, help="PNG path (default RUN_DIR/training_curves.png)")
    p.set_defaults(run=run_plot_log)



def run_plot_log(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    require(parser, "matplotlib")
    from afnet.training.plots import plot_log

    log = args.run_dir / "log.jsonl"
    if not log.is_file():
        parser.error(f"argument RUN_DIR: {log} does not exist")
    out = check_output(parser, "--out", args.out or args.run_dir / "training_curves.png", is_file=True)
    try:
        plot_log(log, out)
    except ValueError as exc:  # an empty log, a damaged line, a line without its epoch
        parser.error(f"argument RUN_DIR: {exc}")
    print(f"wrote {out}")
    return 0
