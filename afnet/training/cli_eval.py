"""``afnet eval`` and ``afnet predict``: their command lines and the model they rebuild.

Our checkpoints carry the model config and the data settings (crop, resize, class names), so
``--checkpoint`` alone rebuilds everything; the released checkpoints need ``--arch``,
``--frames`` and ``--num-classes`` (and ``--shift`` for TSM models).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from afnet.cli_args import add_device, check_device, int_at_least, require, size_arg


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="our checkpoint (last.pth, best.pth) or a released one")
    p.add_argument("--arch", default=None, help="released checkpoints: af_resnet50, af_mobilenetv3, ...")
    p.add_argument("--frames", type=int_at_least(1), default=None, help="released checkpoints: frames per clip")
    p.add_argument("--num-classes", type=int_at_least(1), default=None, help="released checkpoints: classes")
    p.add_argument("--shift", action="store_true", default=None, help="released AFNet-TSM checkpoints")
    p.add_argument("--size", type=int_at_least(32), default=None, help="crop (default: the checkpoint's, else 224)")
    p.add_argument("--resize", type=size_arg, default=None,
                   help="resize before the centre crop: N (short side) or HxW (default: the checkpoint's)")
    p.add_argument("--image-template", default=None, help="frame folders' image names (default img_{:05d}.jpg)")
    p.add_argument("--batch-size", type=int_at_least(1), default=8, help="clips per forward pass (default 8)")
    p.add_argument("--workers", type=int_at_least(0), default=2, help="DataLoader worker processes (default 2)")
    add_device(p)


def add_parser(sub: "argparse._SubParsersAction") -> None:
    """Register ``eval`` and ``predict``."""
    e = sub.add_parser("eval", help="accuracy, selected ratios, GFLOPs and clips/s of a checkpoint on a list",
                       description="Evaluate a checkpoint: top-1/top-5 (mAP for multi-label lists), the mean selected "
                       "ratio of each navigation module, GFLOPs/video (paper convention and executed), clips/s. "
                       "Writes eval.json and selection.png to --out. Shards over ranks under torchrun.")
    _add_model_args(e)
    e.add_argument("--data-root", default=None, help="folder the list paths are relative to")
    e.add_argument("--list", dest="list_file", default=None,
                   help="list file or class_name/video.ext folder (default: the built-in task's validation clips, "
                   "for checkpoints trained on it)")
    e.add_argument("--class-names", default=None, help="class names file (default: the checkpoint's)")
    e.add_argument("--execution", choices=("sparse", "dense"), default="sparse",
                   help="sparse (default, skips unselected frames) or dense (released masked form); same numbers")
    e.add_argument("--out", type=Path, default=Path("eval_out"), help="output folder (default eval_out)")
    e.set_defaults(run=run_eval)

    p = sub.add_parser("predict", help="top-k classes of clips and the frames the navigation selected",
                       description="Predict video files or frame folders: print the top-k classes and write "
                       "<clip name>.json and <clip name>.png (the sampled frames, unselected ones marked) to --out.")
    p.add_argument("clips", nargs="+", metavar="CLIP", help="video files or frame folders")
    _add_model_args(p)
    p.add_argument("--labels", default=None, help="class names file (default: the checkpoint's)")
    p.add_argument("--topk", type=int_at_least(1), default=5, help="classes to print (default 5)")
    p.add_argument("--out", type=Path, default=Path("predict_out"), help="output folder (default predict_out)")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="skip the PNGs")
    p.set_defaults(run=run_predict)


def load_model(args: argparse.Namespace, parser: argparse.ArgumentParser, device) -> Tuple[Any, Dict[str, Any]]:
    """(model in eval mode on ``device``, the checkpoint's data settings) for ``--checkpoint``."""
    from afnet.checkpoint import CheckpointError, build_from_checkpoint

    given = dict(arch=args.arch, num_segments=args.frames, num_classes=args.num_classes)
    given = {k: v for k, v in given.items() if v is not None}
    if args.shift:
        given["shift"] = True
    try:
        model, report = build_from_checkpoint(args.checkpoint, **given)
    except (CheckpointError, FileNotFoundError) as exc:
        parser.error(f"argument --checkpoint: {exc}")
    data = report.extra.get("data") if isinstance(report.extra.get("data"), dict) else {}
    return model.to(device).eval(), data


def _class_names(path: Optional[str], data: Dict[str, Any], flag: str, parser: argparse.ArgumentParser) -> Optional[List[str]]:
    from afnet.data.lists import DataError, read_class_names

    if path is None:
        return data.get("class_names")
    try:
        return read_class_names(path)
    except DataError as exc:
        parser.error(f"argument {flag}: {exc}")


def _input_settings(args: argparse.Namespace, data: Dict[str, Any]) -> Tuple[int, Any, str]:
    from afnet.data.decode import DEFAULT_TEMPLATE

    size = args.size or data.get("size") or 224
    resize = args.resize if args.resize is not None else data.get("resize")
    resize = tuple(resize) if isinstance(resize, list) else resize
    return size, resize, args.image_template or data.get("image_template") or DEFAULT_TEMPLATE


def run_eval(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    require(parser, "av", "tqdm", "matplotlib")
    import torch

    from afnet.data.datasets import ClipDataset, MotionSource, RecordSource
    from afnet.data.lists import DataError, check_exist, is_multi_label, load_entries
    from afnet.data.loader import ShardSampler, make_loader
    from afnet.data.synthetic import MotionTask, demo_split
    from afnet.data.transforms import EvalTransform
    from afnet.training.distributed import setup, teardown
    from afnet.training.evaluate import evaluate
    from afnet.training.plots import plot_selection
    from afnet.training.runfiles import atomic_write_bytes, to_json

    info = setup(check_device(parser, args.device))
    model, data = load_model(args, parser, info.device)
    model.execution = args.execution
    names = _class_names(args.class_names, data, "--class-names", parser)
    size, resize, template = _input_settings(args, data)
    num_classes = model.config["num_classes"]  # also for af_mobilenetv3, whose classifier is in the backbone
    if args.list_file is None:
        stored = data.get("builtin_task")
        if stored is None:
            parser.error("argument --list is required (the checkpoint was not trained on the built-in task)")
        n_train, n_val = demo_split(stored["videos"])
        source = MotionSource(MotionTask(seed=stored["seed"]), n_train, n_val)
        listed = "built-in task (validation clips)"
    else:
        try:
            records, _ = load_entries(args.list_file, args.data_root, names)
            check_exist(records, args.list_file)
            source = RecordSource(records, num_classes, multi_label=is_multi_label(records), template=template)
        except (DataError, ValueError) as exc:
            parser.error(f"argument --list: {exc}")
        listed = args.list_file
    dataset = ClipDataset(source, num_segments=model.num_segments, transform=EvalTransform(size, resize), train=False)
    loader = make_loader(dataset, ShardSampler(len(dataset), info.rank, info.world_size), batch_size=args.batch_size,
                         workers=args.workers, pin_memory=info.device.type == "cuda")
    amp = torch.bfloat16 if info.device.type == "cuda" else None
    try:
        result, _ = evaluate(model, loader, info, amp_dtype=amp, progress=True)
    except RuntimeError as exc:  # nothing could be read
        print(f"afnet eval: error: {exc}", file=sys.stderr)
        return 1
    finally:
        teardown(info)
    if result is None:
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        **result.as_dict(), "checkpoint": str(args.checkpoint), "list": str(listed), "execution": args.execution,
        "arch": model.config.get("arch"), "frames": model.num_segments, "size": size, "device": str(info.device),
        "world_size": info.world_size, "dtype": "bfloat16" if amp else "float32",
    }
    atomic_write_bytes(args.out / "eval.json", (to_json(report, indent=1) + "\n").encode())
    target = model.config.get("rt")
    plot_selection(result.selected_ratio, result.gate_names, args.out / "selection.png", target=target,
                   title=f"{Path(args.checkpoint).name}: selected ratio per navigation module ({result.num_clips} clips)")
    for failure in result.failed:
        print(f"afnet eval: could not read {failure['path']} ({failure['reason']})", file=sys.stderr)
    print(f"top-1 {result.top1:.4f}  top-5 {result.top5:.4f}  mAP {result.map:.4f}  on {result.num_clips} clips "
          f"({len(result.failed)} unreadable)\nselected ratio per module: "
          + ", ".join(f"{r:.3f}" for r in result.selected_ratio)
          + f"\nGFLOPs/video {result.gflops:.4f} (paper), {result.gflops_executed:.4f} (executed); "
          f"{result.clips_per_s:.1f} clips/s\nwrote {args.out / 'eval.json'} and {args.out / 'selection.png'}")
    return 0


def run_predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    require(parser, "av", "tqdm", "matplotlib")
    from afnet.data.datasets import Failure
    from afnet.training.distributed import resolve_device
    from afnet.training.plots import plot_prediction
    from afnet.training.predict import predict_many
    from afnet.training.runfiles import atomic_write_bytes, to_json

    model, data = load_model(args, parser, resolve_device(check_device(parser, args.device)))
    names = _class_names(args.labels, data, "--labels", parser)
    size, resize, template = _input_settings(args, data)
    args.out.mkdir(parents=True, exist_ok=True)
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
