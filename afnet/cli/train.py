"""``afnet train``: train an AF model with the paper's recipe (the built-in task without data flags)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict

from afnet.cli.args import add_device, add_progress, check_device, float_in, int_at_least, require, size_arg
from afnet.cli.checkpoint_args import checkpoint_message

# Flags that set a config key of the same name (``--batch-size`` → ``batch_size``), with their type.
_TRAIN_FLAGS = (
    ("--data-root", str, "folder the list paths are relative to"),
    ("--train-list", str, "training list file (videos: 'path label'; frames: 'path num_frames label') "
                          "or a class_name/video.ext folder; none: the built-in task, generated in memory"),
    ("--val-list", str, "validation list file or folder"),
    ("--class-names", str, "file with one class name per line"),
    ("--num-classes", int_at_least(1), "classes (default: from --class-names or the largest label)"),
    ("--image-template", str, "image names in frame folders (default img_{:05d}.jpg)"),
    ("--arch", str, "af_resnet18/34/50/101 or af_mobilenetv3"),
    ("--frames", int_at_least(1), "T, frames per clip"),
    ("--rt", float_in(0, 1), "target ratio of selected frames (default: the model config's rt)"),
    ("--policy", str, "navigation (learned) or a fixed policy: random, uniform, normal"),
    ("--dropout", float_in(0, 1, low_open=False), "dropout before the classifier"),
    ("--pretrained", str, "initial weights: a released ImageNet backbone or video checkpoint, or ours "
                          "(the classifier is replaced when the class count differs)"),
    ("--epochs", int_at_least(1), "train until this epoch (with --resume: continue to it)"),
    ("--batch-size", int_at_least(1), "clips per step and process"),
    ("--size", int_at_least(32), "crop size (pixels)"),
    ("--resize", size_arg, "evaluation resize before the centre crop: N (short side) or HxW"),
    ("--train-resize", size_arg, "training resize before the multi-scale crop: N or HxW"),
    ("--lr", float_in(0, float("inf")), "base learning rate"),
    ("--lr-schedule", str, "step or cosine"),
    ("--warmup-epochs", int_at_least(0), "linear warm-up epochs"),
    ("--lam", float_in(0, float("inf"), low_open=False), "λ, weight of the ratio loss"),
    ("--workers", int_at_least(0), "DataLoader worker processes"),
    ("--amp", str, "auto (bf16 on GPUs), bf16 or off"),
    ("--seed", int_at_least(0), "seed of the weights, the data order and the augmentation"),
    ("--out", str, "run folder: config.yaml, log.jsonl, last.pth, best.pth, training_curves.png"),
)


_METAVARS = {
    "--data-root": "DIR", "--train-list": "FILE", "--val-list": "FILE", "--class-names": "FILE", "--arch": "A",
    "--frames": "T", "--rt": "R", "--epochs": "E", "--batch-size": "B", "--size": "S", "--lr": "LR", "--workers": "W",
    "--out": "RUN_DIR", "--pretrained": "CHECKPOINT", "--resize": "N|HxW", "--train-resize": "N|HxW",
}


def add_parser(sub: "argparse._SubParsersAction") -> None:
    """Register ``train``."""
    t = sub.add_parser("train", help="train an AF model (the paper's recipe; built-in task without data flags)",
                       description="Train an AF model with the paper's recipe. Without data flags it trains a small "
                       "AF-ResNet18-TSM on the built-in task in a few CPU minutes. Under torchrun it runs DDP. "
                       "Config values resolve as: defaults < --config FILE < flags < --set.")
    t.add_argument("--config", type=Path, metavar="FILE", help="YAML config (see configs/); flags override it")
    for name, kind, text in _TRAIN_FLAGS:
        t.add_argument(name, type=kind, default=None, help=text, metavar=_METAVARS.get(name))
    t.add_argument("--shift", action=argparse.BooleanOptionalAction, default=None, help="TSM (AFNet-TSM)")
    t.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flip (off for Something-Something)")
    t.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="batch statistics over all processes under torchrun")
    add_device(t)
    t.add_argument("--resume", type=str, default=None, metavar="CHECKPOINT",
                   help="continue a run from its last.pth (config from the checkpoint; flags override)")
    t.add_argument("--overwrite", action="store_true",
                   help="start in a run folder that holds another run: its files are moved into "
                   "RUN_DIR/replaced-N/ first (without this flag such a folder is refused)")
    add_progress(t)
    t.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="set any config key, e.g. --set lr_steps=[20,40] (repeatable)")
    t.set_defaults(run=run_train)


def _flag_values(args: argparse.Namespace) -> Dict[str, Any]:
    keys = [name[2:].replace("-", "_") for name, _, _ in _TRAIN_FLAGS] + ["shift", "flip", "sync_bn", "device"]
    return {k: getattr(args, k) for k in keys}


def run_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    require(parser, "yaml", "tqdm", "av", "matplotlib")
    from afnet.tools.checkpoint import CheckpointError, read_checkpoint
    from afnet.data.lists import DataError
    from afnet.training.config import ConfigError, parse_assignment, resolve_config
    from afnet.training.runfiles import RunFolderError
    from afnet.training.trainer import train

    try:
        sets: Dict[str, Any] = {}
        for text in args.sets:
            sets.update(parse_assignment(text))
        base = None
        if args.resume:
            try:
                stored = read_checkpoint(args.resume).get("train_config")
            except CheckpointError as exc:
                parser.error(checkpoint_message(exc, "--resume"))
            if not isinstance(stored, dict):
                parser.error(f"argument --resume: {args.resume} is not a training checkpoint of afnet train "
                             "(no train_config); use --pretrained to start from its weights")
            base = (stored, f"--resume {args.resume}")
        cfg = resolve_config(args.config, _flag_values(args), sets, base=base)
        check_device(parser, cfg.device)  # from a flag, the config file or the resumed run
        # train checks --out first (claim_run_dir)
        train(cfg, resume=args.resume, overwrite=args.overwrite, progress=args.progress)
    except (ConfigError, DataError, RunFolderError) as exc:
        parser.error(str(exc))
    except CheckpointError as exc:  # the weights of --resume or --pretrained do not fit the model
        parser.error(checkpoint_message(exc, "--resume" if args.resume else "--pretrained"))
    return 0
