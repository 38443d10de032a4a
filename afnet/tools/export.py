"""Export a model with static counts: ``torch.export`` programs (``.pt2``) and ONNX.

Only a model whose counts are known from the shapes can be exported: a frame budget (and a cell
budget for learned spatial gates, ``afnet.engine.budget``) or fixed policies. The released
threshold rule sizes the gathered batch from the data, which neither format can express with
static shapes.

Export builds on the explicit inference form: a live model is frozen first (``afnet.freeze``,
which leaves it as it is), a frozen one is exported as it is.

- ``pt2``: ``torch.export`` of the sparse engine with the compiled ``afnet_kernels`` ops in the
  graph (load it with ``torch.export.load`` after ``import afnet_kernels``), or with the
  reference ops (``backend="torch"``).
- ``onnx``: the reference ops (standard ATen ops only), through the dynamo-based exporter; the
  file runs in onnxruntime.

Both export the eval-mode sparse path for one input shape ``[N, T, 3, H, W]``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Iterator, Optional, Union

import torch

from afnet.engine import FrozenTSN, freeze

__all__ = ["FORMATS", "check_static", "export_model", "export_onnx", "run_exported"]

FORMATS = ("onnx", "pt2")


def check_static(frozen: FrozenTSN) -> None:
    """Raise ``ValueError`` unless ``frozen``'s counts are static (budget or fixed policies)."""
    if not frozen.static_counts:
        raise ValueError(
            "this needs static frame and cell counts: set a frame budget (afnet.freeze(model, frame_budget=0.5), "
            "or model.frame_budget = 0.5; afnet.calibrate_frame_budget(model, videos) measures one), with a "
            "cell_budget for learned spatial gates; the released threshold rule decides how many frames "
            "and cells to compute from the data"
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress lines and warnings about their own internals, which tell a
    user nothing they can act on (the round trip is checked by the caller)."""
    # onnx_ir: "Attribute type is ambiguous" once per empty attribute of the graph; torch.export:
    # loading a program from a file not named *.pt2 warns before it falls back to the legacy format.
    loggers = [logging.getLogger(name)
               for name in ("torch.onnx", "onnxscript", "onnx_ir", "torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: Union[str, Path], quiet: bool = True) -> Path:
    """Export ``module`` called on ``example`` to one ONNX file (weights inside) with the
    dynamo-based exporter: input ``video``, output ``logits``. What :func:`export_model` does
    for an afnet model; the benchmark exports its torchvision baselines the same way."""
    path = Path(path)
    with torch.no_grad(), (_quiet() if quiet else contextlib.nullcontext()):
        torch.onnx.export(module, (example,), str(path), dynamo=True, external_data=False,
                          input_names=["video"], output_names=["logits"])
    return path


def export_model(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: Union[str, Path],
    fmt: str = "pt2",
    backend: Optional[str] = None,
    quiet: bool = True,
) -> Path:
    """Export the sparse inference of ``model`` (live or frozen) on inputs shaped like ``example``
    ``[N, T, 3, H, W]``.

    Args:
        fmt: ``"pt2"`` or ``"onnx"``.
        backend: frame ops in the exported graph; ``"torch"`` is required for ONNX (its
            default), ``"kernels"`` is the pt2 default. A frozen model keeps its own.
        quiet: silence the exporters' own progress output and warnings.
    Returns the written path. ``model`` is not changed.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if isinstance(model, FrozenTSN):
        if backend is not None and backend != model.settings.backend:
            raise ValueError(f"backend={backend!r}, but the frozen model runs {model.settings.backend!r}: freeze it again")
        frozen = model
    else:
        frozen = freeze(model, backend=backend or ("torch" if fmt == "onnx" else "kernels"))
    if fmt == "onnx" and frozen.settings.backend != "torch":
        raise ValueError("ONNX export needs backend='torch': the compiled afnet_kernels ops have no ONNX form")
    check_static(frozen)
    path = Path(path)
    with torch.no_grad(), (_quiet() if quiet else contextlib.nullcontext()):
        frozen(example)  # builds the F(0) and mask caches the graph will hold as constants
        if fmt == "onnx":
            return export_onnx(frozen, example, path, quiet)
        torch.export.save(torch.export.export(frozen, (example,)), str(path))
    return path


def run_exported(path: Union[str, Path], video: torch.Tensor, fmt: Optional[str] = None,
                 quiet: bool = True) -> torch.Tensor:
    """Run an exported file on ``video``: the pt2 program, or the ONNX model in onnxruntime.

    Args:
        fmt: ``"pt2"`` or ``"onnx"`` (default: ONNX for a ``.onnx`` file, else pt2).
        quiet: without the loaders' warnings, as in :func:`export_model`.
    """
    path = Path(path)
    fmt = fmt or ("onnx" if path.suffix == ".onnx" else "pt2")
    with _quiet() if quiet else contextlib.nullcontext():
        return _run_exported(path, video, fmt)


def _run_exported(path: Path, video: torch.Tensor, fmt: str) -> torch.Tensor:
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {session.get_inputs()[0].name: video.cpu().numpy()})
        return torch.from_numpy(logits)
    import afnet_kernels  # noqa: F401 - registers the custom ops the program may call

    with torch.no_grad():
        return torch.export.load(str(path)).module()(video)
