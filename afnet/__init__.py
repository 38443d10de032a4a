"""AFNet ("Look More but Care Less in Video Recognition") with sparse execution that really skips
frames and regions.

Public API: :func:`create_model` (the live model), :func:`freeze` (its explicit inference form);
checkpoints (:func:`build_from_checkpoint`, :func:`load_checkpoint`, :func:`save_checkpoint`,
:func:`read_checkpoint`); :func:`count_flops`; budgets (``model.frame_budget``,
:func:`calibrate_frame_budget`, :func:`calibrate_budget`); :func:`cuda_graph`; :func:`predict`.
Packages: ``afnet.models`` (descriptions, registry), ``afnet.engine``, ``afnet.tools``,
``afnet.training`` (with ``losses`` and ``schedules``), ``afnet.bench``, ``afnet.cli``.
"""

import importlib

from afnet._version import __version__
from afnet.engine import FrozenTSN, LiveTSN, create_model, freeze
from afnet.models import ARCHS
from afnet.tools.calibrate import BudgetCalibration, calibrate_budget, calibrate_frame_budget
from afnet.tools.checkpoint import (
    CheckpointError,
    LoadReport,
    build_from_checkpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from afnet.tools.cuda_graph import cuda_graph
from afnet.tools.flops import FlopCount, count_flops

__all__ = [
    "ARCHS",
    "BudgetCalibration",
    "CheckpointError",
    "FlopCount",
    "FrozenTSN",
    "LiveTSN",
    "LoadReport",
    "__version__",
    "build_from_checkpoint",
    "calibrate_budget",
    "calibrate_frame_budget",
    "count_flops",
    "create_model",
    "cuda_graph",
    "freeze",
    "load_checkpoint",
    "losses",
    "predict",
    "read_checkpoint",
    "save_checkpoint",
    "schedules",
]

# Loaded on first use: prediction needs the data stack (PyAV, torchvision transforms), and the
# training pieces keep their short public names (afnet.losses, afnet.schedules).
_LAZY = {"predict": ("afnet.tools.predict", "predict"), "losses": ("afnet.training.losses", None),
         "schedules": ("afnet.training.schedules", None)}


def __getattr__(name: str):
    if name in _LAZY:
        module_name, attribute = _LAZY[name]
        module = importlib.import_module(module_name)
        return getattr(module, attribute) if attribute else module
    raise AttributeError(f"module 'afnet' has no attribute {name!r}")
