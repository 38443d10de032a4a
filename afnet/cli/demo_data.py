"""``afnet make-demo-data``: the built-in task as .mp4 files with train/val/class lists.

Next to the files it writes ``train.yaml``, the built-in task's recipe with these files as the
data, so that the command it prints, ``afnet train --config OUT_DIR/train.yaml``, runs as printed.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from afnet.cli.args import check_output, int_at_least, require

CONFIG_NAME = "train.yaml"


def add_parser(sub: "argparse._SubParsersAction") -> None:
    """Register ``make-demo-data``."""
    d = sub.add_parser("make-demo-data", help="write the built-in task as .mp4 files with train/val/class lists",
                       description="Write the built-in task (a square crossing a noisy background left to right or "
                       "right to left, visible in a few frames) as H.264 .mp4 files, with train.txt, val.txt, "
                       "classes.txt and train.yaml (the built-in recipe on these files: afnet train --config "
                       "OUT_DIR/train.yaml), in OUT_DIR. The same clips afnet train generates in memory.")
    d.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    d.add_argument("--videos", type=int_at_least(2), default=200, help="clips in all (default 200; 20%% validate)")
    d.add_argument("--seed", type=int_at_least(0), default=0, help="task seed (default 0, as afnet train)")
    d.set_defaults(run=run_make_demo_data)


def run_make_demo_data(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    require(parser, "av", "yaml")
    import yaml

    from afnet.data.demo_files import write_demo_data
    from afnet.training.config import BUILTIN_TASK

    check_output(parser, "OUT_DIR", args.out_dir)
    files = write_demo_data(args.out_dir, videos=args.videos, seed=args.seed)
    # The built-in recipe without what only the in-memory task needs (its clip count, and no
    # workers: decoding files wants the default ones); absolute paths run from any folder.
    recipe = {k: v for k, v in BUILTIN_TASK.items() if k not in ("demo_videos", "workers")}
    data = {"data_root": files.root, "train_list": files.train_list, "val_list": files.val_list,
            "class_names": files.classes}
    config = {**{k: str(Path(v).resolve()) for k, v in data.items()}, **recipe, "out": "runs/demo"}
    config_path = files.root / CONFIG_NAME
    config_path.write_text(f"# afnet train --config {CONFIG_NAME}: the built-in task's recipe on the files "
                           "of this folder\n" + yaml.safe_dump(config, sort_keys=False))
    print(f"wrote {args.videos} clips under {files.root}: {files.train_list.name}, {files.val_list.name}, "
          f"{files.classes.name}, {CONFIG_NAME}\ntrain with: afnet train --config {shlex.quote(str(config_path))}")
    return 0
