"""``afnet export``: write a budgeted model as a ``torch.export`` program or an ONNX file.

Every argument is checked before any work starts; after writing, the file is run on a
random clip and compared with the eager model (``--no-check`` skips that). With ``--checkpoint``
of ours, the frames, classes and input size are the checkpoint's unless flags say otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import torch

from afnet.cli.args import DOWNSAMPLE, check_output, frame_size, int_at_least
from afnet.cli.checkpoint_args import checkpoint_message


def _budget(text: str) -> Union[float, List[float]]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a ratio or comma-separated ratios in (0, 1], got {text!r}") from None
    bad = [v for v in values if not 0 < v <= 1]
    if bad:
        raise argparse.ArgumentTypeError(f"every ratio must be in (0, 1], got {bad[0]}")
    return values[0] if len(values) == 1 else values


def add_parser(sub: "argparse._SubParsersAction") -> None:
    """Register ``afnet export`` on the ``afnet`` command line."""
    from afnet.tools.export import FORMATS
    from afnet.models import ARCHS

    p = sub.add_parser(
        "export",
        help="export a budgeted model to ONNX or a torch.export program (.pt2)",
        description="Export the sparse inference of an AF model with a frame budget (static frame counts) "
        "for one input shape [batch, frames, 3, size, size]. ONNX uses the pure-PyTorch ops and runs in "
        "onnxruntime; pt2 keeps the compiled afnet_kernels ops (import afnet_kernels before torch.export.load).",
    )
    p.add_argument("--arch", choices=ARCHS, default=None,
                   help="architecture (required without --checkpoint, or for released checkpoints)")
    p.add_argument("--frames", type=int_at_least(1), default=None, help="frames T per clip (default: the checkpoint's, or 8)")
    p.add_argument("--frame-budget", type=_budget, required=True,
                   help="ratio of frames each navigation module keeps, one value or one per module (comma-separated)")
    p.add_argument("--checkpoint", type=Path, default=None, help="weights: ours (config inside) or a released file")
    p.add_argument("--num-classes", type=int_at_least(1), default=None,
                   help="classes (default: the checkpoint's; 174 without a checkpoint)")
    p.add_argument("--shift", action="store_true", help="TSM (released AFNet-TSM checkpoints carry no config)")
    p.add_argument("--format", dest="fmt", choices=FORMATS, required=True)
    p.add_argument("--out", type=Path, required=True, help="output file")
    p.add_argument("--batch", type=int_at_least(1), default=1, help="videos per call in the exported graph (default 1)")
    p.add_argument("--size", type=frame_size, default=None,
                   help="frame height and width, a multiple of 32 (default: the checkpoint's, else 224)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="run the written file on a random clip and compare with the eager model (default on)")
    p.set_defaults(run=run)


def _validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.checkpoint is None and args.arch is None:
        parser.error("argument --arch: required without --checkpoint")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        parser.error(f"argument --checkpoint: no such file: {args.checkpoint}")
    if args.fmt == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as exc:
            parser.error(f"argument --format: onnx needs the onnx and onnxscript packages ({exc}); "
                         "pip install 'afnet[export]'")
    check_output(parser, "--out", args.out, is_file=True)


def _build(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """The model and its checkpoint's data settings ({} without a checkpoint)."""
    import afnet

    if args.checkpoint is None:
        torch.manual_seed(0)
        return afnet.create_model(args.arch, num_classes=args.num_classes or 174, num_segments=args.frames or 8,
                                  shift=args.shift).eval(), {}
    options = {"shift": True} if args.shift else {}
    try:
        model, report = afnet.build_from_checkpoint(args.checkpoint, arch=args.arch, num_segments=args.frames,
                                                    num_classes=args.num_classes, **options)
    except afnet.CheckpointError as exc:
        parser.error(checkpoint_message(exc, "--checkpoint"))
    data = report.extra.get("data")
    return model, data if isinstance(data, dict) else {}


def _size(args: argparse.Namespace, parser: argparse.ArgumentParser, data: Dict[str, Any]) -> int:
    """--size, else the size the checkpoint was trained at, else the paper's 224."""
    from afnet.tools.predict import input_settings

    if args.size is not None:
        return args.size
    size = input_settings(data)["size"]
    if size % DOWNSAMPLE:
        parser.error(f"argument --size: the checkpoint was trained at {size} px, which is not a multiple of "
                     f"{DOWNSAMPLE}; give --size")
    return size


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Export for parsed ``args``; returns the exit status."""
    from afnet.tools.export import export_model, run_exported

    _validate(args, parser)
    model, data = _build(args, parser)
    size = _size(args, parser, data)
    try:
        model.frame_budget = args.frame_budget
    except (TypeError, ValueError) as exc:
        parser.error(f"argument --frame-budget: {exc}")
    example = torch.randn(args.batch, model.num_segments, 3, size, size, generator=torch.Generator().manual_seed(0))
    path = export_model(model, example, args.out, args.fmt)
    print(f"afnet export: wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {args.fmt}, input "
          f"[{args.batch}, {model.num_segments}, 3, {size}, {size}])")
    if args.check:
        clip = torch.randn(example.shape, generator=torch.Generator().manual_seed(1))
        model.backend = "torch" if args.fmt == "onnx" else model.backend
        with torch.inference_mode():
            expected = model(clip)
        got = run_exported(path, clip, args.fmt)
        err = ((got.double() - expected.double()).norm() / expected.double().norm()).item()
        print(f"afnet export: exported output vs eager, relative error {err:.2e}")
        if not err <= 1e-4:
            print("afnet export: the exported file does not reproduce the eager model", file=sys.stderr)
            return 1
    return 0

