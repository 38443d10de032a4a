"""``afnet make-demo-data``: the built-in task as .mp4 files with train/val/class lists."""

from __future__ import annotations

import argparse
from pathlib import Path

from afnet.cli.args import check_output, int_at_least, require


def add_parser(sub: "argparse._SubParsersAction") -> None:
    """Register ``make-demo-data``."""
    d = sub.add_parser("make-demo-data", help="write the built-in task as .mp4 files with train/val/class lists",
                       description="Write the built-in task (a square crossing a noisy background left to right or "
                       "right to left, visible in a few frames) as H.264 .mp4 files, with train.txt, val.txt and "
                       "classes.txt, in OUT_DIR. The same clips afnet train generates in memory.")
    d.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    d.add_argument("--videos", type=int_at_least(2), default=200, help="clips in all (default 200; 20%% validate)")
    d.add_argument("--seed", type=int_at_least(0), default=0, help="task seed (default 0, as afnet train)")
    d.set_defaults(run=run_make_demo_data)


def run_make_demo_data(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    require(parser, "av")
    from afnet.data.demo_files import write_demo_data

    check_output(parser, "OUT_DIR", args.out_dir)
    files = write_demo_data(args.out_dir, videos=args.videos, seed=args.seed)
    print(f"wrote {args.videos} clips under {files.root}: {files.train_list.name}, {files.val_list.name}, "
          f"{files.classes.name}\ntrain with: afnet train --data-root {files.root} --train-list {files.train_list} "
          f"--val-list {files.val_list} --class-names {files.classes}")
    return 0
