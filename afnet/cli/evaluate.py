"""``afnet eval``: accuracy, selected ratios, GFLOPs and clips/s of a checkpoint on a list."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from afnet.cli.args import add_progress, check_device, check_output, refuse_replacing, require
from afnet.cli.checkpoint_args import add_model_args, class_names, input_settings, load_model


OUTPUTS = ("eval.json", "selection.png")


def add_parser(sub: "argparse._SubParsersAction") -> None:
    """Register ``eval``."""
    e = sub.add_parser("eval", help="accuracy, selected ratios, GFLOPs and clips/s of a checkpoint on a list",
                       description="Evaluate a checkpoint: top-1/top-5 (mAP for multi-label lists), the mean selected "
                       "ratio of each navigation module, GFLOPs/video (paper convention and executed), clips/s. "
                       "Writes eval.json and selection.png to --out (an earlier run's are not replaced without --overwrite). "
                       "Shards over ranks under torchrun.")
    add_model_args(e)
    e.add_argument("--data-root", default=None, help="folder the list paths are relative to")
    e.add_argument("--list", dest="list_file", default=None,
                   help="list file or class_name/video.ext folder (default: the built-in task's validation clips, "
                   "for checkpoints trained on it)")
    e.add_argument("--class-names", default=None, help="class names file (default: the checkpoint's)")
    e.add_argument("--execution", choices=("sparse", "dense"), default="sparse",
                   help="sparse (default, skips unselected frames) or dense (released masked form); same numbers")
    e.add_argument("--out", type=Path, default=Path("eval_out"), help="output folder (default eval_out)")
    e.add_argument("--overwrite", action="store_true",
                   help="when --out holds an earlier eval.json or selection.png, move them into OUT/replaced-N/ "
                   "first; without it such a run is refused")
    add_progress(e)
    e.set_defaults(run=run_eval)



def run_eval(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    require(parser, "av", "tqdm", "matplotlib")
    import torch

    from afnet.data.datasets import ClipDataset, MotionSource, RecordSource
    from afnet.data.lists import DataError, check_exist, is_multi_label, load_entries
    from afnet.data.loader import ShardSampler, make_loader
    from afnet.data.synthetic import MotionTask, demo_split
    from afnet.data.transforms import EvalTransform
    from afnet.training.distributed import setup, teardown
    from afnet.training.evaluate import NothingEvaluated, evaluate
    from afnet.training.plots import plot_selection
    from afnet.training.runfiles import atomic_write_bytes, move_aside, to_json

    info = setup(check_device(parser, args.device))
    check_output(parser, "--out", args.out)  # on every rank, so that all stop alike
    earlier = [name for name in OUTPUTS if (args.out / name).exists()]
    refuse_replacing(parser, args.out, earlier, args.overwrite)
    model, data = load_model(args, parser, info.device)
    model.execution = args.execution
    names = class_names(args.class_names, data, "--class-names", parser)
    size, resize, template = input_settings(args, data)
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
        result, _ = evaluate(model, loader, info, amp_dtype=amp, progress=args.progress)
    except NothingEvaluated as exc:
        print(f"afnet eval: error: {exc}", file=sys.stderr)
        return 1
    finally:
        teardown(info)
    if result is None:
        return 0
    if earlier:  # rank 0 only, once the new results exist
        moved = move_aside(args.out, earlier)
        print(f"afnet eval: --overwrite: moved the earlier {', '.join(earlier)} into {moved}/", file=sys.stderr)
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
          + _navigation_line(result)
          + f"\nGFLOPs/video {result.gflops:.4f} (paper), {result.gflops_executed:.4f} (executed); "
          f"{result.clips_per_s:.1f} clips/s\nwrote {args.out / 'eval.json'} and {args.out / 'selection.png'}")
    return 0


def _navigation_line(result) -> str:
    """The navigation scores against the task's truth, when the clips carry it (the built-in task)."""
    if result.nav_precision is None:
        return ""
    def join(values):
        return ", ".join("-" if v is None else f"{v:.3f}" for v in values)  # None: kept no frame
    return (f"\nframes that show the square (base rate {result.nav_base_rate:.3f}): precision "
            f"{join(result.nav_precision)}, recall {join(result.nav_recall)}; content-blind precision "
            f"{join(result.nav_blind_precision)}")
