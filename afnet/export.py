"""Export a budgeted AF model: ``torch.export`` programs (``.pt2``) and ONNX.

Only a model whose frame counts are known from the shapes can be exported: a frame budget
(``model.frame_budget``, ``afnet.budget``) or a fixed policy. The released threshold rule
sizes the gathered batch from the data, which neither format can express with static shapes.

- ``pt2``: ``torch.export`` of the sparse engine with the compiled ``afnet_kernels`` ops in the
  graph (load it with ``torch.export.load`` after ``import afnet_kernels``), or with the
  reference ops (``backend="torch"``).
- ``onnx``: the reference ops (standard ATen ops only), through the dynamo-based exporter; the
  file runs in onnxruntime.

Both export the eval-mode sparse path for one input shape ``[N, T, 3, H, W]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

__all__ = ["FORMATS", "check_exportable", "export_model", "run_exported"]

FORMATS = ("onnx", "pt2")


def check_exportable(model: torch.nn.Module) -> None:
    """Raise ``ValueError`` unless ``model``'s frame counts are static (budget or fixed policy)."""
    from afnet.layers import FixedPolicy

    gates = model.navigation_modules
    if model.frame_budget is None and not all(isinstance(g, FixedPolicy) for g in gates):
        raise ValueError(
            "export needs static frame counts: set model.frame_budget (e.g. 0.5, or "
            "afnet.calibrate_frame_budget(model, videos)); the released threshold rule decides "
            "how many frames to compute from the data"
        )


def export_model(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: Union[str, Path],
    fmt: str = "pt2",
    backend: Optional[str] = None,
) -> Path:
    """Export ``model``'s sparse inference on inputs shaped like ``example`` ``[N, T, 3, H, W]``.

    Args:
        fmt: ``"pt2"`` or ``"onnx"``.
        backend: frame ops in the exported graph; ``"torch"`` is required for ONNX (its
            default), ``"kernels"`` is the pt2 default.
    Returns the written path. The model is left in eval mode with its backend restored.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    backend = backend or ("torch" if fmt == "onnx" else "kernels")
    if fmt == "onnx" and backend != "torch":
        raise ValueError("ONNX export needs backend='torch': the compiled afnet_kernels ops have no ONNX form")
    check_exportable(model)
    path = Path(path)
    saved = model.backend
    model.eval()
    model.backend = backend
    try:
        with torch.no_grad():
            model(example)  # builds the plan and the F(0) caches the graph will hold as constants
            if fmt == "pt2":
                torch.export.save(torch.export.export(model, (example,)), str(path))
            else:
                torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False,
                                  input_names=["video"], output_names=["logits"])
    finally:
        model.backend = saved
    return path


def run_exported(path: Union[str, Path], video: torch.Tensor) -> torch.Tensor:
    """Run an exported file on ``video``: the pt2 program, or the ONNX model in onnxruntime."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {session.get_inputs()[0].name: video.cpu().numpy()})
        return torch.from_numpy(logits)
    import afnet_kernels  # noqa: F401 - registers the custom ops the program may call

    with torch.no_grad():
        return torch.export.load(str(path)).module()(video)
