"""``afnet predict``: top-k classes of clips and the frames the navigation selected."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from afnet.cli.args import check_device, check_output, int_at_least, require
from afnet.cli.checkpoint_args import add_model_args, class_names, input_settings, load_model


def add_parser(sub: "argparse._SubParsersAction") -> None:
    """Register ``predict``."""
    p = sub.add_parser("predict", help="top-k classes of clips and the frames the navigation selected",
                       description="Predict video files or frame folders: print the top-k classes and write "
                       "<clip name>.json and <clip name>.png (the sampled frames, unselected ones marked) to --out.")
    p.add_argument("clips", nargs="+", metavar="CLIP", help="video files or frame folders")
    add_model_args(p)
    p.add_argument("--labels", default=None, help="class names file (default: the checkpoint's)")
    p.add_argument("--topk", type=int_at_least(1), default=5, help="classes to print (default 5)")
    p.add_argument("--out", type=Path, default=Path("predict_out"), help="output folder (default predict_out)")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="skip the PNGs")
    p.set_defaults(run=run_predict)




def run_predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    require(parser, "av", "tqdm", "matplotlib")
    from afnet.data.datasets import Failure
    from afnet.training.distributed import resolve_device
    from afnet.training.plots import plot_prediction
    from afnet.tools.predict import predict_many
    from afnet.training.runfiles import atomic_write_bytes, to_json

    device = resolve_device(check_device(parser, args.device))
    check_output(parser, "--out", args.out)
    model, data = load_model(args, parser, device)
    names = class_names(args.labels, data, "--labels", parser)
    size, resize, template = input_settings(args, data)
    failed = 0
    try:
        results = predict_many(model, args.clips, size=size, resize=resize, class_names=names, topk=args.topk,
                               batch_size=args.batch_size, workers=args.workers, template=template,
                               multi_label=bool(data.get("multi_label")))
        for result in results:
            if isinstance(result, Failure):
                failed += 1
                print(f"afnet predict: could not read {result.path} ({result.reason})", file=sys.stderr)
                continue
            path = Path(result.path.rstrip("/"))
            stem = path.name if path.is_dir() else path.stem
            atomic_write_bytes(args.out / f"{stem}.json", (to_json(result.as_dict(), indent=1) + "\n").encode())
            if args.plot:
                plot_prediction(result, args.out / f"{stem}.png")
            kept = ", ".join(f"{r:.2f}" for r in result.masks.float().mean(dim=1).tolist())
            print(f"{result.path}: " + ", ".join(f"{name} {p:.3f}" for _, name, p in result.topk)
                  + f"  (selected per module: {kept})")
    except FileNotFoundError as exc:
        parser.error(f"argument CLIP: {exc}")
    print(f"wrote {len(args.clips) - failed} prediction(s) to {args.out}")
    return 1 if failed else 0
