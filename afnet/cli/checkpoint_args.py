"""What ``afnet eval`` and ``afnet predict`` share: the checkpoint flags and the model they rebuild.

Our checkpoints carry the model config and the data settings (crop, resize, class names), so
``--checkpoint`` alone rebuilds everything; the released checkpoints need ``--arch``,
``--frames`` and ``--num-classes`` (and ``--shift`` for TSM models).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from afnet.cli.args import add_device, int_at_least, size_arg

if TYPE_CHECKING:  # the checkpoint module loads torch models: imported when a command runs
    from afnet.tools.checkpoint import CheckpointError

__all__ = ["add_model_args", "checkpoint_message", "class_names", "input_settings", "load_model"]

# build_from_checkpoint's arguments -> the flags that set them (eval, predict, export; train names
# the first three the same way).
_FLAGS = {"arch": "--arch", "num_segments": "--frames", "num_classes": "--num-classes", "shift": "--shift"}


def add_model_args(p: argparse.ArgumentParser) -> None:
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


def load_model(args: argparse.Namespace, parser: argparse.ArgumentParser, device) -> Tuple[Any, Dict[str, Any]]:
    """(model in eval mode on ``device``, the checkpoint's data settings) for ``--checkpoint``."""
    from afnet.tools.checkpoint import CheckpointError, build_from_checkpoint

    given = dict(arch=args.arch, num_segments=args.frames, num_classes=args.num_classes)
    given = {k: v for k, v in given.items() if v is not None}
    if args.shift:
        given["shift"] = True
    try:
        model, report = build_from_checkpoint(args.checkpoint, **given)
    except CheckpointError as exc:
        parser.error(checkpoint_message(exc, "--checkpoint"))
    data = report.extra.get("data") if isinstance(report.extra.get("data"), dict) else {}
    return model.to(device).eval(), data


def checkpoint_message(exc: CheckpointError, flag: str) -> str:
    """The usage error for a checkpoint given by ``flag`` that cannot be used: the cause, with advice
    in command-line terms where the library's message gives Python arguments (``strict=False``,
    ``check_config=False``) that no flag sets."""
    if "check_config" in exc.needs:
        settings = ", ".join(_FLAGS.get(k, k) for k in exc.differing)
        advice = f"leave out {settings}: the checkpoint's own config sets {'it' if len(exc.differing) == 1 else 'them'}"
        if flag == "--resume":
            advice += " (to train its weights as another model, start a new run with --pretrained)"
    elif "strict" in exc.needs:
        advice = ("its tensors do not fit the model that --arch, --frames, --num-classes and --shift describe: "
                  "give the ones it was trained with")
    elif exc.needs:
        advice = f"give {', '.join(_FLAGS.get(k, k) for k in exc.needs)}"
    else:
        return f"argument {flag}: {exc.cause}"
    return f"argument {flag}: {exc.cause}; {advice}"


def class_names(path: Optional[str], data: Dict[str, Any], flag: str, parser: argparse.ArgumentParser) -> Optional[List[str]]:
    from afnet.data.lists import DataError, read_class_names

    if path is None:
        return data.get("class_names")
    try:
        return read_class_names(path)
    except DataError as exc:
        parser.error(f"argument {flag}: {exc}")


def input_settings(args: argparse.Namespace, data: Dict[str, Any]) -> Tuple[int, Any, str]:
    """(crop size, resize, frame-image template): the flags, else the checkpoint's, else the defaults."""
    from afnet.tools.predict import input_settings as resolve

    settings = resolve(data, size=args.size, resize=args.resize, template=args.image_template)
    return settings["size"], settings["resize"], settings["template"]
