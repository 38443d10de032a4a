"""Argument types shared by every ``afnet`` command (argparse puts the flag's name in each error)."""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path
from typing import Callable, List, Optional, Union

import torch

from afnet.tools.devices import is_device_name
from afnet.tools.outputs import output_problem

__all__ = ["DOWNSAMPLE", "add_device", "add_progress", "check_device", "check_output", "device_name", "float_in",
           "frame_size", "int_at_least", "require", "size_arg"]

# The AF networks downsample their input this many times: frame sizes are multiples of it.
DOWNSAMPLE = 32


def int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int>={low}"
    return parse


def float_in(low: float, high: float, *, low_open: bool = True) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not ((low < value if low_open else low <= value) and value <= high):
            raise argparse.ArgumentTypeError(f"must be in {'(' if low_open else '['}{low:g}, {high:g}], got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


def frame_size(text: str) -> int:
    """The frame height and width of a model input: a positive multiple of :data:`DOWNSAMPLE`."""
    value = int_at_least(DOWNSAMPLE)(text)
    if value % DOWNSAMPLE:
        raise argparse.ArgumentTypeError(
            f"must be a multiple of {DOWNSAMPLE} (the networks downsample {DOWNSAMPLE}x), got {value}")
    return value


def size_arg(text: str) -> Union[int, List[int]]:
    """``N`` (short side) or ``HxW``."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW (e.g. 256 or 240x320), got {text!r}") from None
    if len(values) > 2 or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected N or HxW with positive sizes, got {text!r}")
    return values[0] if len(values) == 1 else values


def device_name(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether that GPU is visible: :func:`check_device`)."""
    if not is_device_name(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def add_device(parser: argparse.ArgumentParser, default: Optional[str] = None,
               help: str = "auto (default: cuda:LOCAL_RANK when a GPU is visible), cpu, cuda or cuda:N") -> None:
    parser.add_argument("--device", type=device_name, default=default, help=help)


def check_device(parser: argparse.ArgumentParser, name: Optional[str]) -> str:
    """``name`` (None: auto) with auto resolved to ``cuda`` or ``cpu``; stops with an error naming
    ``--device`` when it asks for a GPU that is not visible."""
    device = name if name not in (None, "auto") else ("cuda" if torch.cuda.is_available() else "cpu")
    parsed = torch.device(device)
    if parsed.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"argument --device: {device!r} requested but no CUDA GPU is visible")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        parser.error(f"argument --device: {device!r} requested but only {torch.cuda.device_count()} GPU(s) visible")
    return device


# module -> the optional dependency group (pyproject) that installs it
_EXTRAS = {"av": "video", "matplotlib": "plot", "yaml": "train", "tqdm": "train"}


def require(parser: argparse.ArgumentParser, *modules: str) -> None:
    """Stop with a message naming the extras to install when an optional dependency is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        extras = ",".join(sorted({_EXTRAS[m] for m in missing}))
        parser.error(f"needs {', '.join(missing)}: pip install 'afnet[{extras}]'")


def check_output(parser: argparse.ArgumentParser, flag: str, path: Union[str, os.PathLike], *,
                 is_file: bool = False) -> Path:
    """``path`` (a folder, or with ``is_file`` a file) once it is known to be writable; otherwise
    stop with a usage error naming ``flag``, before any work starts (the folder is created)."""
    problem = output_problem(path, is_file=is_file)
    if problem is not None:
        parser.error(f"argument {flag}: {problem}")
    return Path(path)


def refuse_replacing(parser: argparse.ArgumentParser, out: Path, earlier: List[str], overwrite: bool) -> None:
    """Stop with a usage error naming ``--out`` when ``earlier`` (files in ``out`` that this run
    would replace) is not empty and ``--overwrite`` was not given: nothing is replaced silently."""
    if earlier and not overwrite:
        shown = ", ".join(earlier[:3]) + (f" and {len(earlier) - 3} more" if len(earlier) > 3 else "")
        parser.error(f"argument --out: {out} already holds files of an earlier run that this one would replace "
                     f"({shown}); choose another --out, or pass --overwrite to move them into {out / 'replaced-N'}/ first")


def add_progress(parser: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--quiet``: progress bars always or never; ``args.progress`` is True, False or
    None (the default: bars when stderr is a terminal), as :func:`afnet.tools.progress.progress_bar` takes it."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--progress", dest="progress", action="store_true", default=None,
                       help="draw progress bars (clips/s) even when stderr is not a terminal, e.g. into a log file")
    group.add_argument("-q", "--quiet", dest="progress", action="store_false", default=None, help="no progress bars")

